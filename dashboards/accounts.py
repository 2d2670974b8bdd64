"""Dashboard accounts: users, password hashes, sessions, consent grants, audit log, API tokens.

The tables live in the hub's SQLite file (prefixed `dash_`; their schema is part of
`gateway/storage/sqlite_migrations.py`) behind this module's own connection. A consent
change writes its ledger event on that connection, in the same transaction. `Accounts`
runs every query on one thread it owns, so the event loop never blocks; the module-level
functions (`users_add`, `grant`, ...) are the synchronous entry points the CLI calls while
the hub may be running (WAL lets both write).

Secrets at rest are never stored in a usable form: passwords as salted scrypt hashes with
their cost parameters, session ids and API tokens as SHA-256 digests (a copied database
file does not let anyone log in).

Failed logins are counted in the same file (`dash_login_failures`), per account and per
source address, so the backoff of `ratelimit.py` survives a restart of the hub.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import re
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import NamedTuple, TypeVar

from dashboards.ratelimit import PER_ACCOUNT, PER_SOURCE, Backoff, source_key
from gateway.clock import Clock, SystemClock, parse_rfc3339, to_rfc3339
from gateway.errors import InputError
from gateway.storage.sqlite_events import insert_ledger_event, last_consent_event
from gateway.storage.sqlite_migrations import migrate
from gateway.units import Unit

_T = TypeVar("_T")

log = logging.getLogger(__name__)

SESSION_LIFETIME = timedelta(hours=12)
SERVICE_NAME = "glucohub"
# NCSC password guidance: a minimum length, a deny list of common and context-specific
# passwords, no composition rules, and long passphrases welcome (the maximum only bounds
# the work one request can cause).
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
# zxcvbn scores 0-4; below 2 means fewer than 10^6 guesses: its 30,000 most common
# passwords, their l33t and appended-digit variants, and anything built from the user
# name, the service or the patient's name and id.
MIN_PASSWORD_SCORE = 2
_ZXCVBN_MAX_LENGTH = 72  # zxcvbn's own limit (its matching is quadratic in the length)
_ZXCVBN_LOCK = threading.Lock()  # zxcvbn keeps the user inputs in a module-level dict
DEFAULT_TOKEN_DAYS = 90
MAX_TOKEN_DAYS = 3650
_TOKEN_USE_RESOLUTION = timedelta(minutes=1)  # "last used" is written at most this often
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")

# scrypt cost: N=2^15, r=8, p=1 uses 32 MiB and ~0.1 s per guess (RFC 7914 §2 parameters;
# OWASP's password storage cheat sheet recommends at least N=2^17 for new systems on
# servers; a home hub on a small board uses 2^15 and stores N so it can be raised later).
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
_SCRYPT_DKLEN = 32

# Told after a consent change and its ledger event have committed (the body written).
ConsentCallback = Callable[[dict[str, str]], None]


class Role(StrEnum):
    ADMIN = "admin"  # manages the hub; sees no health data (none was consented to)
    CLINICIAN = "clinician"  # sees the patients who granted consent
    PATIENT = "patient"  # sees their own record only


class AccountError(InputError):
    """A user or the CLI asked for something the account rules refuse."""

    def __init__(self, message: str, *, username: str | None = None) -> None:
        super().__init__(message)
        self.username = username


class TooManyAttempts(AccountError):
    """Login refused before the password is checked: too many recent failures."""

    def __init__(self, retry_after_s: float, *, username: str | None = None) -> None:
        super().__init__("too many failed login attempts", username=username)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True, kw_only=True)
class User:
    username: str
    role: Role
    patient_id: str | None = None  # set exactly when role is PATIENT
    unit: Unit = Unit.MMOL_L  # glucose display: the user's choice, else the site default
    disabled: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """A logged-in browser. `session_id` exists only in the cookie; the table keeps its hash."""

    session_id: str
    csrf_token: str
    username: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenInfo:
    """An API token as listed: never the secret (only its hash is stored)."""

    token_id: int
    username: str
    label: str
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked: bool

    def state(self, now: datetime) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"


class ConsentChange(StrEnum):
    CHANGED = "changed"  # the grant or revocation and its ledger event were written
    UNCHANGED = "unchanged"  # already so, and the ledger says so
    REPAIRED = "repaired"  # already so, but the ledger lacked its event: added now


class ConsentResult(NamedTuple):
    change: ConsentChange
    event: dict[str, str] | None  # the ledger event body written, if any


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    patient_id: str
    clinician: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class Note:
    """One entry of a patient's clinical notes thread."""

    note_id: int
    patient_id: str
    author: str
    role: str
    created_at: str
    body: str


MAX_NOTE_CHARS = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    time: datetime
    viewer: str
    role: Role
    patient_id: str
    action: str  # e.g. "page", "api.readings", "report", "batch:12", "ws"


# -- password hashing -----------------------------------------------------------------------


def hash_password(password: str, *, n: int | None = None) -> str:
    """`scrypt$N$r$p$salt$hash` (base64): the parameters travel with the hash."""
    n = SCRYPT_N if n is None else n
    r, p = SCRYPT_R, SCRYPT_P
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p)
    return "$".join(("scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)))


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; False for any malformed stored hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    try:
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
    except ValueError:
        return False
    # Refuse costs we would never have written (a tampered row must not exhaust memory).
    if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return False
    try:
        return hmac.compare_digest(_scrypt(password, salt, n, r, p), expected)
    except (ValueError, MemoryError):
        return False


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # maxmem must exceed 128·N·r bytes (RFC 7914 §2) or OpenSSL refuses.
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=_SCRYPT_DKLEN,
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# A hash of a random password, checked when the username is unknown so that a login for a
# missing user costs the same time as one for a real user (no user enumeration by timing).
_DUMMY_HASH = hash_password(secrets.token_urlsafe(16))


# -- the synchronous store -------------------------------------------------------------------


class _Tables:
    """Synchronous access to the `dash_` tables over one connection (one thread)."""

    def __init__(self, db_path: Path, clock: Clock) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._clock = clock
        # Glucose unit of users who have not chosen one (their row's unit is ''); the
        # dashboard sets it from `dashboard.default_unit`.
        self.default_unit = Unit.MMOL_L
        try:
            self._db.execute("PRAGMA busy_timeout=10000")
            self._db.execute("PRAGMA journal_mode=WAL")
            migrate(self._db, clock.now(), path=db_path)  # the hub's schema, accounts included
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    @property
    def clock(self) -> Clock:
        return self._clock

    def _now(self) -> str:
        return to_rfc3339(self._clock.now())

    # users

    def add_user(self, username: str, role: Role, password: str, patient_id: str | None) -> User:
        if not _USERNAME.fullmatch(username):
            raise AccountError(
                "username must be 1-64 of a-z 0-9 . _ - starting with a letter or digit",
                username=username,
            )
        if (role is Role.PATIENT) != bool(patient_id):
            raise AccountError(
                "a patient user needs --patient (the patient's id); other roles must not have one",
                username=username,
            )
        context = self._require_patient(patient_id) if patient_id else []
        check_password_strength(password, username=username, context=context)
        try:
            self._db.execute(
                "INSERT INTO dash_users"
                " (username, role, patient_id, password_hash, created_at, unit)"
                " VALUES (?, ?, ?, ?, ?, '')",
                (username, role.value, patient_id, hash_password(password), self._now()),
            )
        except sqlite3.IntegrityError:
            raise AccountError(f"user {username!r} already exists", username=username) from None
        return User(username=username, role=role, patient_id=patient_id, unit=self.default_unit)

    def get_user(self, username: str) -> User | None:
        row = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users WHERE username = ?",
            (username,),
        ).fetchone()
        if row is None:
            return None
        return User(
            username=row[0],
            role=Role(row[1]),
            patient_id=row[2],
            unit=Unit(row[3]) if row[3] else self.default_unit,
            disabled=bool(row[4]),
        )

    def list_users(self) -> list[User]:
        rows = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users ORDER BY username"
        ).fetchall()
        return [
            User(
                username=r[0],
                role=Role(r[1]),
                patient_id=r[2],
                unit=Unit(r[3]) if r[3] else self.default_unit,
                disabled=bool(r[4]),
            )
            for r in rows
        ]

    def _require_user(self, username: str) -> User:
        user = self.get_user(username)
        if user is None:
            raise AccountError(f"no user {username!r}", username=username)
        return user

    def _require_patient(self, patient_id: str) -> list[str]:
        """The patient's id and name (words a password must not be built from); raise
        AccountError when the hub's patient registry has no such patient."""
        try:
            row = self._db.execute(
                "SELECT display_name FROM patients WHERE patient_id = ?", (patient_id,)
            ).fetchone()
        except sqlite3.OperationalError:  # no registry in this file: nobody is registered
            row = None
        if row is None:
            raise AccountError(f"unknown patient {patient_id!r}; add the patient first")
        return [patient_id, str(row[0])]

    def _patient_context(self, user: User) -> list[str]:
        if user.patient_id is None:
            return []
        try:
            return self._require_patient(user.patient_id)
        except AccountError:
            return [user.patient_id]

    def set_password(self, username: str, password: str) -> None:
        user = self._require_user(username)
        check_password_strength(password, username=username, context=self._patient_context(user))
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "UPDATE dash_users SET password_hash = ? WHERE username = ?",
            (hash_password(password), username),
        )
        # A new password ends every session: whoever knew the old one is logged out.
        self._db.execute("DELETE FROM dash_sessions WHERE username = ?", (username,))
        self._db.execute("COMMIT")

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._require_user(username)
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute(
            "UPDATE dash_users SET disabled = ? WHERE username = ?", (int(disabled), username)
        )
        if disabled:
            self._db.execute("DELETE FROM dash_sessions WHERE username = ?", (username,))
            self._db.execute("UPDATE dash_tokens SET revoked = 1 WHERE username = ?", (username,))
        self._db.execute("COMMIT")

    def set_unit(self, username: str, unit: Unit) -> None:
        if unit not in (Unit.MG_DL, Unit.MMOL_L):
            raise AccountError(f"glucose unit must be mg/dL or mmol/L, not {unit}")
        self._db.execute(
            "UPDATE dash_users SET unit = ? WHERE username = ?", (unit.value, username)
        )

    def check_password(self, username: str, password: str) -> User | None:
        row = self._db.execute(
            "SELECT password_hash FROM dash_users WHERE username = ?", (username,)
        ).fetchone()
        if row is None:
            verify_password(password, _DUMMY_HASH)
            return None
        if not verify_password(password, row[0]):
            return None
        user = self.get_user(username)
        return None if user is None or user.disabled else user

    # login throttling

    def login_wait(self, keys: Sequence[str], now: float) -> float:
        """Seconds until every key may try again (0.0: now)."""
        marks = ",".join("?" * len(keys))
        row = self._db.execute(
            f"SELECT MAX(blocked_until) FROM dash_login_failures WHERE key IN ({marks})",
            tuple(keys),
        ).fetchone()
        return max(0.0, float(row[0]) - now) if row and row[0] is not None else 0.0

    def login_failed(self, keyed: Sequence[tuple[str, Backoff]], now: float) -> list[int]:
        """Count one failure against each key; return the keys' failure counts."""
        counts = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for key, policy in keyed:
                row = self._db.execute(
                    "SELECT failures, last_failure FROM dash_login_failures WHERE key = ?", (key,)
                ).fetchone()
                fresh = row is None or now - float(row[1]) >= policy.forget_s
                failures = 1 if fresh else int(row[0]) + 1
                self._db.execute(
                    "INSERT OR REPLACE INTO dash_login_failures"
                    " (key, failures, last_failure, blocked_until) VALUES (?, ?, ?, ?)",
                    (key, failures, now, now + policy.delay_s(failures)),
                )
                counts.append(failures)
            forget = max(PER_ACCOUNT.forget_s, PER_SOURCE.forget_s)
            self._db.execute(
                "DELETE FROM dash_login_failures WHERE last_failure < ?", (now - forget,)
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return counts

    # sessions

    def new_session(self, username: str, replaces: str | None) -> Session:
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires = now + SESSION_LIFETIME
        self._db.execute("BEGIN IMMEDIATE")
        if replaces:
            # No fixation: a session id that existed before login never becomes logged in.
            self._db.execute(
                "DELETE FROM dash_sessions WHERE session_hash = ?", (_digest(replaces),)
            )
        self._db.execute("DELETE FROM dash_sessions WHERE expires_at < ?", (to_rfc3339(now),))
        self._db.execute(
            "INSERT INTO dash_sessions (session_hash, username, csrf_token, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (_digest(session_id), username, csrf, to_rfc3339(now), to_rfc3339(expires)),
        )
        self._db.execute("COMMIT")
        return Session(
            session_id=session_id, csrf_token=csrf, username=username, expires_at=expires
        )

    def session(self, session_id: str) -> tuple[Session, User] | None:
        row = self._db.execute(
            "SELECT username, csrf_token, expires_at FROM dash_sessions WHERE session_hash = ?",
            (_digest(session_id),),
        ).fetchone()
        if row is None:
            return None
        expires = parse_rfc3339(row[2])
        if expires <= self._clock.now():
            return None
        user = self.get_user(row[0])
        if user is None or user.disabled:
            return None
        return (
            Session(session_id=session_id, csrf_token=row[1], username=row[0], expires_at=expires),
            user,
        )

    def end_session(self, session_id: str) -> None:
        self._db.execute("DELETE FROM dash_sessions WHERE session_hash = ?", (_digest(session_id),))

    # consent

    def grant(self, patient_id: str, clinician: str, by: str) -> ConsentResult:
        """The grant row and its ledger event, in one transaction. A grant whose event is
        missing (a crash between the two, before they shared a transaction) gets it now."""
        target = self._require_user(clinician)
        if target.role is not Role.CLINICIAN:
            raise AccountError(f"{clinician!r} is not a clinician", username=clinician)
        if not patient_id:
            raise AccountError("patient_id must not be empty")
        self._require_patient(patient_id)
        now = self._now()
        with self._transaction():
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO dash_grants (patient_id, clinician, granted_by, granted_at)"
                " VALUES (?, ?, ?, ?)",
                (patient_id, clinician, by, now),
            )
            if cursor.rowcount == 1:
                event = _consent_event("consent_granted", patient_id, clinician, by, now)
                return self._record(ConsentChange.CHANGED, event)
            if last_consent_event(self._db, patient_id, clinician) == "consent_granted":
                return ConsentResult(ConsentChange.UNCHANGED, None)
            granted_by, granted_at = self._db.execute(
                "SELECT granted_by, granted_at FROM dash_grants"
                " WHERE patient_id = ? AND clinician = ?",
                (patient_id, clinician),
            ).fetchone()
            event = _consent_event(
                "consent_granted", patient_id, clinician, str(granted_by), str(granted_at)
            )
            return self._record(ConsentChange.REPAIRED, {**event, "recorded_at": now})

    def revoke(self, patient_id: str, clinician: str, by: str) -> ConsentResult:
        """Delete the grant and add its ledger event, in one transaction; a revocation the
        ledger lacks (the grant is gone, its last event says granted) is recorded now."""
        self._require_user(clinician)  # a typo is an error, not "nothing to revoke"
        self._require_patient(patient_id)
        now = self._now()
        with self._transaction():
            cursor = self._db.execute(
                "DELETE FROM dash_grants WHERE patient_id = ? AND clinician = ?",
                (patient_id, clinician),
            )
            event = _consent_event("consent_revoked", patient_id, clinician, by, now)
            if cursor.rowcount == 1:
                return self._record(ConsentChange.CHANGED, event)
            if last_consent_event(self._db, patient_id, clinician) == "consent_granted":
                return self._record(ConsentChange.REPAIRED, {**event, "recorded_at": now})
            return ConsentResult(ConsentChange.UNCHANGED, None)

    def _record(self, change: ConsentChange, event: dict[str, str]) -> ConsentResult:
        body = {"type": "consent", **event}
        insert_ledger_event(self._db, event["patient_id"], body)
        return ConsentResult(change, body)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def grants_for_patient(self, patient_id: str) -> list[Grant]:
        rows = self._db.execute(
            "SELECT patient_id, clinician, granted_by, granted_at FROM dash_grants"
            " WHERE patient_id = ? ORDER BY clinician",
            (patient_id,),
        ).fetchall()
        return [
            Grant(patient_id=r[0], clinician=r[1], granted_by=r[2], granted_at=parse_rfc3339(r[3]))
            for r in rows
        ]

    def visible_patients(self, user: User) -> frozenset[str]:
        if user.disabled:
            return frozenset()
        if user.role is Role.PATIENT:
            return frozenset((user.patient_id,)) if user.patient_id else frozenset()
        if user.role is Role.CLINICIAN:
            rows = self._db.execute(
                "SELECT patient_id FROM dash_grants WHERE clinician = ?", (user.username,)
            ).fetchall()
            return frozenset(str(r[0]) for r in rows)
        return frozenset()

    # clinical notes

    def add_note(self, user: User, patient_id: str, body: str) -> Note:
        text = body.strip()
        if not 1 <= len(text) <= MAX_NOTE_CHARS:
            raise AccountError(
                f"a note has 1 to {MAX_NOTE_CHARS} characters", username=user.username
            )
        now = self._now()
        cursor = self._db.execute(
            "INSERT INTO dash_notes (patient_id, author, role, created_at, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (patient_id, user.username, user.role.value, now, text),
        )
        assert cursor.lastrowid is not None
        return Note(
            note_id=cursor.lastrowid,
            patient_id=patient_id,
            author=user.username,
            role=user.role.value,
            created_at=now,
            body=text,
        )

    def notes(self, patient_id: str, limit: int) -> list[Note]:
        rows = self._db.execute(
            "SELECT id, patient_id, author, role, created_at, body FROM dash_notes"
            " WHERE patient_id = ? ORDER BY id DESC LIMIT ?",
            (patient_id, limit),
        ).fetchall()
        return [
            Note(
                note_id=int(r[0]),
                patient_id=str(r[1]),
                author=str(r[2]),
                role=str(r[3]),
                created_at=str(r[4]),
                body=str(r[5]),
            )
            for r in rows
        ]

    # audit

    def record_view(self, user: User, patient_id: str, action: str) -> None:
        self._db.execute(
            "INSERT INTO dash_audit (time, viewer, role, patient_id, action)"
            " VALUES (?, ?, ?, ?, ?)",
            (self._now(), user.username, user.role.value, patient_id, action),
        )

    def access_log(self, patient_id: str, limit: int) -> list[AuditEntry]:
        rows = self._db.execute(
            "SELECT time, viewer, role, patient_id, action FROM dash_audit"
            " WHERE patient_id = ? ORDER BY id DESC LIMIT ?",
            (patient_id, limit),
        ).fetchall()
        return [
            AuditEntry(
                time=parse_rfc3339(r[0]), viewer=r[1], role=Role(r[2]), patient_id=r[3], action=r[4]
            )
            for r in rows
        ]

    # API tokens

    def create_token(self, username: str, label: str, expires_days: int) -> str:
        self._require_user(username)
        if not 1 <= expires_days <= MAX_TOKEN_DAYS:
            raise AccountError(
                f"a token expires after 1 to {MAX_TOKEN_DAYS} days, not {expires_days}",
                username=username,
            )
        token = "ghk_" + secrets.token_urlsafe(32)
        now = self._clock.now()
        self._db.execute(
            "INSERT INTO dash_tokens (token_hash, username, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (
                _digest(token),
                username,
                label,
                to_rfc3339(now),
                to_rfc3339(now + timedelta(days=expires_days)),
            ),
        )
        return token

    def token_user(self, token: str) -> User | None:
        row = self._db.execute(
            "SELECT id, username, expires_at, last_used_at FROM dash_tokens"
            " WHERE token_hash = ? AND revoked = 0",
            (_digest(token),),
        ).fetchone()
        if row is None:
            return None
        now = self._clock.now()
        if now >= parse_rfc3339(row[2]):
            return None
        user = self.get_user(row[1])
        if user is None or user.disabled:
            return None
        if row[3] is None or now - parse_rfc3339(row[3]) >= _TOKEN_USE_RESOLUTION:
            self._db.execute(
                "UPDATE dash_tokens SET last_used_at = ? WHERE id = ?", (to_rfc3339(now), row[0])
            )
        return user

    def list_tokens(self, username: str) -> list[TokenInfo]:
        self._require_user(username)
        rows = self._db.execute(
            "SELECT id, username, label, created_at, expires_at, last_used_at, revoked"
            " FROM dash_tokens WHERE username = ? ORDER BY id",
            (username,),
        ).fetchall()
        return [
            TokenInfo(
                token_id=int(r[0]),
                username=str(r[1]),
                label=str(r[2]),
                created_at=parse_rfc3339(r[3]),
                expires_at=parse_rfc3339(r[4]),
                last_used_at=None if r[5] is None else parse_rfc3339(r[5]),
                revoked=bool(r[6]),
            )
            for r in rows
        ]

    def revoke_token_id(self, token_id: int) -> None:
        cursor = self._db.execute("UPDATE dash_tokens SET revoked = 1 WHERE id = ?", (token_id,))
        if cursor.rowcount == 0:
            raise AccountError(f"no token {token_id}")

    def revoke_token(self, token: str) -> None:
        self._db.execute(
            "UPDATE dash_tokens SET revoked = 1 WHERE token_hash = ?", (_digest(token),)
        )


def check_password_strength(password: str, *, username: str, context: Sequence[str] = ()) -> None:
    """Raise AccountError (one line, never quoting the password) for a password that is
    short, very long, the user name, or guessable from common passwords and `context`
    (the patient's id and name; the user and service names are always included)."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(
            f"password must have at least {MIN_PASSWORD_LENGTH} characters", username=username
        )
    if len(password) > MAX_PASSWORD_LENGTH:
        raise AccountError(
            f"password must have at most {MAX_PASSWORD_LENGTH} characters", username=username
        )
    if password.strip().casefold() == username.casefold():
        raise AccountError("password must not be the user name", username=username)
    words = [username, SERVICE_NAME, *context]
    words += [part for w in words for part in re.split(r"[\W_]+", w) if len(part) >= 3]
    from zxcvbn import zxcvbn  # imported on first use: its word lists take a moment to load

    with _ZXCVBN_LOCK:
        result = zxcvbn(password[:_ZXCVBN_MAX_LENGTH], user_inputs=words)
    if int(result["score"]) >= MIN_PASSWORD_SCORE:
        return
    warning = str(result["feedback"]["warning"]).strip().rstrip(".")
    reason = (
        warning[:1].lower() + warning[1:]
        if warning
        else "it is common, or built from the user, patient or service name"
    )
    raise AccountError(
        f"password is too easy to guess ({reason}); a few unrelated words make a good passphrase",
        username=username,
    )


def _consent_event(kind: str, patient_id: str, clinician: str, by: str, at: str) -> dict[str, str]:
    return {"event": kind, "patient_id": patient_id, "clinician": clinician, "by": by, "time": at}


# -- the asynchronous face used by the web app --------------------------------------------


class Accounts:
    """The web app's view of the account tables; every call runs on one private thread."""

    def __init__(
        self,
        tables: _Tables,
        *,
        on_consent_change: ConsentCallback | None,
    ) -> None:
        self._tables = tables
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accounts")
        self._on_consent_change = on_consent_change
        # Bumped on every in-process grant/revoke so live viewers refresh their patient set.
        self.consent_version = 0

    @classmethod
    def open(
        cls,
        db_path: Path,
        *,
        on_consent_change: ConsentCallback | None = None,
        clock: Clock | None = None,
    ) -> Accounts:
        """Open (and create if needed) the account tables in the SQLite file at `db_path`."""
        return cls(_Tables(db_path, clock or SystemClock()), on_consent_change=on_consent_change)

    @property
    def default_unit(self) -> Unit:
        """The glucose unit of users who have not chosen one."""
        return self._tables.default_unit

    @default_unit.setter
    def default_unit(self, unit: Unit) -> None:
        self._tables.default_unit = unit

    def close(self) -> None:
        self._executor.submit(self._tables.close).result()
        self._executor.shutdown(wait=True)

    async def _run(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # users

    async def add_user(
        self, username: str, role: Role, password: str, patient_id: str | None = None
    ) -> User:
        return await self._run(lambda: self._tables.add_user(username, role, password, patient_id))

    async def get_user(self, username: str) -> User | None:
        return await self._run(lambda: self._tables.get_user(username))

    async def set_unit(self, username: str, unit: Unit) -> None:
        await self._run(lambda: self._tables.set_unit(username, unit))

    # login and sessions

    async def login(
        self,
        username: str,
        password: str,
        *,
        source: str | None = None,
        replaces: str | None = None,
    ) -> tuple[Session, User] | None:
        """Check the password; on success start a fresh session (and end `replaces`).

        Raise TooManyAttempts, without checking the password, while the account or the
        `source` address is held off after failures. Each failure is logged at WARNING
        with the user name and source (never the password)."""
        name = username[:64]  # no longer name exists; bounds the key and the log line
        keyed = [(f"account:{name}", PER_ACCOUNT)]
        if source:
            keyed.append((f"source:{source_key(source)}", PER_SOURCE))
        shown_source = source or "-"

        def work() -> tuple[Session, User] | None:
            now = self._tables.clock.now().timestamp()
            wait = self._tables.login_wait([key for key, _ in keyed], now)
            if wait > 0:
                log.warning(
                    "login refused for user %r from %s: too many failures, retry in %d s",
                    name,
                    shown_source,
                    math.ceil(wait),
                )
                raise TooManyAttempts(wait, username=name)
            user = self._tables.check_password(username, password)
            if user is None:
                counts = self._tables.login_failed(keyed, now)
                log.warning(
                    "failed login for user %r from %s (%s)",
                    name,
                    shown_source,
                    ", ".join(
                        f"{k}: {n} failures" for (k, _), n in zip(keyed, counts, strict=True)
                    ),
                )
                return None
            return self._tables.new_session(user.username, replaces), user

        return await self._run(work)

    async def session(self, session_id: str) -> tuple[Session, User] | None:
        return await self._run(lambda: self._tables.session(session_id))

    async def logout(self, session_id: str) -> None:
        await self._run(lambda: self._tables.end_session(session_id))

    # consent

    async def grant(self, patient_id: str, clinician: str, *, by: str) -> bool:
        """Let `clinician` see `patient_id`; False when the grant already existed (and its
        ledger event too). The grant and its event are durable when this returns."""
        result = await self._run(lambda: self._tables.grant(patient_id, clinician, by))
        return self._consent_changed(result)

    async def revoke(self, patient_id: str, clinician: str, *, by: str) -> bool:
        result = await self._run(lambda: self._tables.revoke(patient_id, clinician, by))
        return self._consent_changed(result)

    def _consent_changed(self, result: ConsentResult) -> bool:
        if result.event is None:
            return False
        self.consent_version += 1
        if self._on_consent_change is not None:
            self._on_consent_change(result.event)
        return True

    async def grants_for_patient(self, patient_id: str) -> list[Grant]:
        return await self._run(lambda: self._tables.grants_for_patient(patient_id))

    async def visible_patients(self, user: User) -> frozenset[str]:
        """The patient ids `user` may see: own id for a patient, granted ids for a clinician."""
        return await self._run(lambda: self._tables.visible_patients(user))

    # audit

    async def add_note(self, user: User, patient_id: str, body: str) -> Note:
        return await self._run(lambda: self._tables.add_note(user, patient_id, body))

    async def notes(self, patient_id: str, limit: int = 100) -> list[Note]:
        return await self._run(lambda: self._tables.notes(patient_id, limit))

    async def record_view(self, user: User, patient_id: str, action: str) -> None:
        await self._run(lambda: self._tables.record_view(user, patient_id, action))

    async def access_log(self, patient_id: str, limit: int = 200) -> list[AuditEntry]:
        return await self._run(lambda: self._tables.access_log(patient_id, limit))

    # API tokens

    async def create_token(
        self, username: str, label: str, *, expires_days: int = DEFAULT_TOKEN_DAYS
    ) -> str:
        return await self._run(lambda: self._tables.create_token(username, label, expires_days))

    async def token_user(self, token: str) -> User | None:
        return await self._run(lambda: self._tables.token_user(token))

    async def revoke_token(self, token: str) -> None:
        await self._run(lambda: self._tables.revoke_token(token))


# -- synchronous functions for the CLI ----------------------------------------------------


def _with_tables(db_path: Path, fn: Callable[[_Tables], _T]) -> _T:
    tables = _Tables(db_path, SystemClock())
    try:
        return fn(tables)
    finally:
        tables.close()


def users_add(
    db_path: Path, username: str, role: str, password: str, patient_id: str | None = None
) -> User:
    """`glucohub users add`: raise AccountError on a bad role, name, password or duplicate."""
    try:
        parsed = Role(role)
    except ValueError:
        raise AccountError(
            f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}",
            username=username,
        ) from None
    return _with_tables(db_path, lambda t: t.add_user(username, parsed, password, patient_id))


def users_list(db_path: Path) -> list[User]:
    """Every account by user name: role, patient, disabled (never a hash or a token)."""
    return _with_tables(db_path, lambda t: t.list_users())


def users_passwd(db_path: Path, username: str, password: str) -> None:
    """Set a new password and end the user's sessions."""
    _with_tables(db_path, lambda t: t.set_password(username, password))


def users_disable(db_path: Path, username: str, *, disabled: bool = True) -> None:
    """Disable (or re-enable) a user; disabling ends their sessions and revokes their tokens."""
    _with_tables(db_path, lambda t: t.set_disabled(username, disabled))


def grant(db_path: Path, patient_id: str, clinician: str, *, by: str = "cli") -> ConsentChange:
    """Let `clinician` see `patient_id`: the grant and its ledger event in one transaction
    (a running hub seals the event with its next batch)."""
    return _with_tables(db_path, lambda t: t.grant(patient_id, clinician, by)).change


def revoke(db_path: Path, patient_id: str, clinician: str, *, by: str = "cli") -> ConsentChange:
    """Withdraw the grant: the row's deletion and its ledger event in one transaction."""
    return _with_tables(db_path, lambda t: t.revoke(patient_id, clinician, by)).change


def tokens_create(
    db_path: Path, username: str, label: str, *, expires_days: int = DEFAULT_TOKEN_DAYS
) -> str:
    """Create an API token for `username`; the token is shown once and stored hashed."""
    return _with_tables(db_path, lambda t: t.create_token(username, label, expires_days))


def tokens_list(db_path: Path, username: str) -> list[TokenInfo]:
    """The user's tokens, oldest first, without their secrets."""
    return _with_tables(db_path, lambda t: t.list_tokens(username))


def tokens_revoke(db_path: Path, token_id: int) -> None:
    """Revoke one token by its id; AccountError when there is no such token."""
    _with_tables(db_path, lambda t: t.revoke_token_id(token_id))
