"""Dashboard accounts: users, password hashes, sessions, consent grants, audit log, API tokens.

The rules live here; the rows behind an `AccountStorage` (`gateway/storage/accounts.py`) that
the wiring passes in (SQLite or PostgreSQL). A consent change and its ledger event are one
storage transaction. `Accounts` runs every storage call on one thread it owns, so the event
loop never blocks; the module-level functions (`users_add`, `grant`, ...) are the synchronous
entry points the CLI calls, on a storage of its own, while the hub may be running.

Secrets at rest are never stored in a usable form: passwords as salted scrypt hashes with
their cost parameters, session ids and API tokens as SHA-256 digests (a copied database
file does not let anyone log in).

Failed logins are counted in the storage too, per account and per source address, so the
backoff of `ratelimit.py` survives a restart of the hub.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import logging
import math
import multiprocessing
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple, TypeVar

from dashboards import kdf
from dashboards.ratelimit import PER_ACCOUNT, PER_SOURCE, Backoff, source_key
from gateway.clock import Clock, SystemClock, to_rfc3339
from gateway.errors import InputError
from gateway.storage.accounts import (
    AccountStorage,
    AuditRecord,
    ConsentTransaction,
    DuplicateUser,
    GrantRecord,
    NightscoutSecretRecord,
    NoteRecord,
    TokenRecord,
    UserRecord,
)
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


TokenInfo = TokenRecord  # an API token as listed: never the secret


class ConsentChange(StrEnum):
    CHANGED = "changed"  # the grant or revocation and its ledger event were written
    UNCHANGED = "unchanged"  # already so, and the ledger says so
    REPAIRED = "repaired"  # already so, but the ledger lacked its event: added now


class ConsentResult(NamedTuple):
    change: ConsentChange
    event: dict[str, str] | None  # the ledger event body written, if any


Grant = GrantRecord
Note = NoteRecord  # one entry of a patient's clinical notes thread


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


_kdf_pool: ProcessPoolExecutor | None = None


def hash_in_process() -> None:
    """From now on compute scrypt in a small process of its own (`dashboards.kdf`), so the
    calling process (the hub) never holds scrypt's memory. Callers block on the answer, as
    they did on the computation: they are threads, never the event loop."""
    global _kdf_pool
    if _kdf_pool is None:
        _kdf_pool = ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    args = (password.encode(), salt, n, r, p, _SCRYPT_DKLEN)
    if _kdf_pool is None:
        return kdf.scrypt(*args)
    return _kdf_pool.submit(kdf.scrypt, *args).result()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def api_secret(secret: str) -> str:
    """The `api-secret` header an uploader sends for `secret`: its SHA-1 in hex (xDrip+'s
    NightscoutUploader.java, Nightscout's lib/authorization/index.js)."""
    return hashlib.sha1(secret.encode()).hexdigest()


def nightscout_secret_hash(api_secret_hex: str) -> str:
    """What is stored of a Nightscout uploader secret: SHA-256 of its SHA-1 hex, so that the
    header can be checked and neither the secret nor the header value is kept."""
    return _digest(api_secret_hex.strip().lower())


# A hash of a random password, checked when the username is unknown so that a login for a
# missing user costs the same time as one for a real user (no user enumeration by timing).
@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


# Nightscout's roles (lib/authorization/storage.js) a hub access token may have, and whether
# each lets it upload. Two levels only: "readable" reads; "careportal" (Nightscout: create
# treatments) and "admin" read and upload everything of their patient.
NIGHTSCOUT_ROLES = {"readable": False, "careportal": True, "admin": True}


# -- the rules over the storage contract -----------------------------------------------------


class AccountRules:
    """The account rules (names, roles, password strength, expiry, consent) over an
    `AccountStorage`, synchronously; use from one thread at a time."""

    def __init__(self, storage: AccountStorage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock
        self._jwt_key: bytes | None = None
        # Glucose unit of users who have not chosen one; the dashboard sets it from
        # `dashboard.default_unit`.
        self.default_unit = Unit.MMOL_L

    def close(self) -> None:
        self._storage.close()

    @property
    def clock(self) -> Clock:
        return self._clock

    def _user(self, record: UserRecord) -> User:
        return User(
            username=record.username,
            role=Role(record.role),
            patient_id=record.patient_id,
            unit=record.unit or self.default_unit,
            disabled=record.disabled,
        )

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
            self._storage.add_user(
                username=username,
                role=role.value,
                patient_id=patient_id,
                password_hash=hash_password(password),
                created_at=self._clock.now(),
            )
        except DuplicateUser:
            raise AccountError(f"user {username!r} already exists", username=username) from None
        return User(username=username, role=role, patient_id=patient_id, unit=self.default_unit)

    def get_user(self, username: str) -> User | None:
        record = self._storage.get_user(username)
        return None if record is None else self._user(record)

    def list_users(self) -> list[User]:
        return [self._user(r) for r in self._storage.list_users()]

    def _require_user(self, username: str) -> User:
        user = self.get_user(username)
        if user is None:
            raise AccountError(f"no user {username!r}", username=username)
        return user

    def _require_patient(self, patient_id: str) -> list[str]:
        """The patient's id and name (words a password must not be built from); raise
        AccountError when the hub's patient registry has no such patient."""
        name = self._storage.patient_name(patient_id)
        if name is None:
            raise AccountError(f"unknown patient {patient_id!r}; add the patient first")
        return [patient_id, name]

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
        # A new password ends every session: whoever knew the old one is logged out.
        self._storage.set_password_hash(username, hash_password(password))

    def set_disabled(self, username: str, disabled: bool) -> None:
        self._require_user(username)
        self._storage.set_disabled(username, disabled)

    def set_unit(self, username: str, unit: Unit) -> None:
        if unit not in (Unit.MG_DL, Unit.MMOL_L):
            raise AccountError(f"glucose unit must be mg/dL or mmol/L, not {unit}")
        self._storage.set_unit(username, unit)

    def check_password(self, username: str, password: str) -> User | None:
        stored = self._storage.password_hash(username)
        if stored is None:
            verify_password(password, _dummy_hash())
            return None
        if not verify_password(password, stored):
            return None
        user = self.get_user(username)
        return None if user is None or user.disabled else user

    # login throttling

    def login_wait(self, keys: Sequence[str], now: float) -> float:
        """Seconds until every key may try again (0.0: now)."""
        until = self._storage.login_blocked_until(keys)
        return 0.0 if until is None else max(0.0, until - now)

    def login_failed(self, keyed: Sequence[tuple[str, Backoff]], now: float) -> list[int]:
        """Count one failure against each key; return the keys' failure counts."""
        forget = max(PER_ACCOUNT.forget_s, PER_SOURCE.forget_s)
        return self._storage.add_login_failures(keyed, now, forget_before=now - forget)

    # sessions

    def new_session(self, username: str, replaces: str | None) -> Session:
        session_id = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires = now + SESSION_LIFETIME
        self._storage.add_session(
            session_hash=_digest(session_id),
            username=username,
            csrf_token=csrf,
            created_at=now,
            expires_at=expires,
            # No fixation: a session id that existed before login never becomes logged in.
            replaces_hash=_digest(replaces) if replaces else None,
        )
        return Session(
            session_id=session_id, csrf_token=csrf, username=username, expires_at=expires
        )

    def session(self, session_id: str) -> tuple[Session, User] | None:
        found = self._storage.get_session(_digest(session_id))
        if found is None or found.expires_at <= self._clock.now():
            return None
        user = self.get_user(found.username)
        if user is None or user.disabled:
            return None
        session = Session(
            session_id=session_id,
            csrf_token=found.csrf_token,
            username=found.username,
            expires_at=found.expires_at,
        )
        return session, user

    def end_session(self, session_id: str) -> None:
        self._storage.delete_session(_digest(session_id))

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
        now = self._clock.now()
        at = to_rfc3339(now)
        new = Grant(patient_id=patient_id, clinician=clinician, granted_by=by, granted_at=now)
        with self._storage.consent() as tx:
            if tx.insert_grant(new):
                event = _consent_event("consent_granted", patient_id, clinician, by, at)
                return _record(tx, ConsentChange.CHANGED, event)
            if tx.last_consent_event(patient_id, clinician) == "consent_granted":
                return ConsentResult(ConsentChange.UNCHANGED, None)
            old = tx.get_grant(patient_id, clinician)
            assert old is not None  # the insert found it, and the transaction holds it
            event = _consent_event(
                "consent_granted", patient_id, clinician, old.granted_by, to_rfc3339(old.granted_at)
            )
            return _record(tx, ConsentChange.REPAIRED, {**event, "recorded_at": at})

    def revoke(self, patient_id: str, clinician: str, by: str) -> ConsentResult:
        """Delete the grant and add its ledger event, in one transaction; a revocation the
        ledger lacks (the grant is gone, its last event says granted) is recorded now."""
        self._require_user(clinician)  # a typo is an error, not "nothing to revoke"
        self._require_patient(patient_id)
        at = to_rfc3339(self._clock.now())
        with self._storage.consent() as tx:
            event = _consent_event("consent_revoked", patient_id, clinician, by, at)
            if tx.delete_grant(patient_id, clinician):
                return _record(tx, ConsentChange.CHANGED, event)
            if tx.last_consent_event(patient_id, clinician) == "consent_granted":
                return _record(tx, ConsentChange.REPAIRED, {**event, "recorded_at": at})
            return ConsentResult(ConsentChange.UNCHANGED, None)

    def grants_for_patient(self, patient_id: str) -> list[Grant]:
        return self._storage.grants_for_patient(patient_id)

    def visible_patients(self, user: User) -> frozenset[str]:
        if user.disabled:
            return frozenset()
        if user.role is Role.PATIENT:
            return frozenset((user.patient_id,)) if user.patient_id else frozenset()
        if user.role is Role.CLINICIAN:
            return frozenset(self._storage.granted_patients(user.username))
        return frozenset()

    # clinical notes

    def add_note(self, user: User, patient_id: str, body: str) -> Note:
        text = body.strip()
        if not 1 <= len(text) <= MAX_NOTE_CHARS:
            raise AccountError(
                f"a note has 1 to {MAX_NOTE_CHARS} characters", username=user.username
            )
        return self._storage.add_note(
            patient_id=patient_id,
            author=user.username,
            role=user.role.value,
            created_at=self._clock.now(),
            body=text,
        )

    def notes(self, patient_id: str, limit: int) -> list[Note]:
        return self._storage.notes(patient_id, limit)

    # audit

    def record_view(self, user: User, patient_id: str, action: str) -> None:
        self._storage.add_audit(
            AuditRecord(
                time=self._clock.now(),
                viewer=user.username,
                role=user.role.value,
                patient_id=patient_id,
                action=action,
            )
        )

    def record_views(self, user: User, patient_ids: Sequence[str], action: str) -> None:
        """`record_view` of each patient, in one transaction (a page of the triage list)."""
        now = self._clock.now()
        self._storage.add_audits(
            [
                AuditRecord(
                    time=now,
                    viewer=user.username,
                    role=user.role.value,
                    patient_id=pid,
                    action=action,
                )
                for pid in patient_ids
            ]
        )

    def access_log(self, patient_id: str, limit: int) -> list[AuditEntry]:
        return [
            AuditEntry(
                time=r.time,
                viewer=r.viewer,
                role=Role(r.role),
                patient_id=r.patient_id,
                action=r.action,
            )
            for r in self._storage.access_log(patient_id, limit)
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
        self._storage.add_token(
            token_hash=_digest(token),
            username=username,
            label=label,
            created_at=now,
            expires_at=now + timedelta(days=expires_days),
        )
        return token

    # Nightscout uploader secrets

    def create_nightscout_secret(
        self, patient_id: str, device_id: str, *, can_write: bool, label: str
    ) -> tuple[int, str]:
        """A new uploader secret for the patient's Nightscout device: (its id, the secret).
        Shown once; only `nightscout_secret_hash` of it is stored."""
        self._require_patient(patient_id)
        secret = "ns" + secrets.token_urlsafe(24)  # URL-safe: xDrip+ takes it in the URL
        secret_id = self._storage.add_nightscout_secret(
            secret_hash=nightscout_secret_hash(api_secret(secret)),
            patient_id=patient_id,
            device_id=device_id,
            can_write=can_write,
            label=label,
            created_at=self._clock.now(),
        )
        return secret_id, secret

    def nightscout_uploader(self, api_secret_hex: str) -> NightscoutSecretRecord | None:
        return self._storage.nightscout_secret(nightscout_secret_hash(api_secret_hex))

    def create_nightscout_token(
        self, patient_id: str, device_id: str, *, subject: str, roles: Sequence[str]
    ) -> tuple[int, str]:
        """A Nightscout access token of the patient with `roles`: (its id, the token).
        Shaped as Nightscout's (`<subject abbreviated>-<hex>`, lib/authorization/storage.js)
        but with 128 random bits; shown once, stored as `nightscout_secret_hash` of it."""
        self._require_patient(patient_id)
        unknown = sorted(set(roles) - set(NIGHTSCOUT_ROLES))
        if not roles or unknown:
            raise AccountError(
                f"roles must be some of {', '.join(NIGHTSCOUT_ROLES)}, not {', '.join(unknown)}"
            )
        abbrev = re.sub(r"[^a-z0-9]", "", subject.lower())[:10] or "token"
        token = f"{abbrev}-{secrets.token_hex(16)}"
        token_id = self._storage.add_nightscout_secret(
            secret_hash=nightscout_secret_hash(api_secret(token)),
            patient_id=patient_id,
            device_id=device_id,
            can_write=any(NIGHTSCOUT_ROLES[r] for r in roles),
            label=subject,
            created_at=self._clock.now(),
            roles=sorted(set(roles)),
        )
        return token_id, token

    def nightscout_uploader_by_id(self, secret_id: int) -> NightscoutSecretRecord | None:
        return self._storage.nightscout_secret_by_id(secret_id)

    def list_nightscout_secrets(
        self, patient_id: str | None = None
    ) -> list[NightscoutSecretRecord]:
        return self._storage.list_nightscout_secrets(patient_id)

    def nightscout_jwt_key(self) -> bytes:
        if self._jwt_key is None:
            self._jwt_key = self._storage.nightscout_jwt_key(secrets.token_bytes(32))
        return self._jwt_key

    def revoke_nightscout_secret(self, secret_id: int) -> None:
        if not self._storage.revoke_nightscout_secret(secret_id):
            raise AccountError(f"no Nightscout secret {secret_id}")

    def token_user(self, token: str) -> User | None:
        found = self._storage.unrevoked_token(_digest(token))
        if found is None:
            return None
        now = self._clock.now()
        if now >= found.expires_at:
            return None
        user = self.get_user(found.username)
        if user is None or user.disabled:
            return None
        if found.last_used_at is None or now - found.last_used_at >= _TOKEN_USE_RESOLUTION:
            self._storage.set_token_used(found.token_id, now)
        return user

    def list_tokens(self, username: str) -> list[TokenInfo]:
        self._require_user(username)
        return self._storage.list_tokens(username)

    def revoke_token_id(self, token_id: int) -> None:
        if not self._storage.revoke_token_id(token_id):
            raise AccountError(f"no token {token_id}")

    def revoke_token(self, token: str) -> None:
        self._storage.revoke_token_hash(_digest(token))


def _record(tx: ConsentTransaction, change: ConsentChange, event: dict[str, str]) -> ConsentResult:
    body = {"type": "consent", **event}
    tx.add_ledger_event(event["patient_id"], body)
    return ConsentResult(change, body)


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
    """The web app's view of the accounts; every storage call runs on one private thread.
    `close` closes the storage too."""

    def __init__(
        self,
        storage: AccountStorage,
        *,
        on_consent_change: ConsentCallback | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._tables = AccountRules(storage, clock or SystemClock())
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="accounts")
        self._on_consent_change = on_consent_change
        # Bumped on every in-process grant/revoke so live viewers refresh their patient set.
        self.consent_version = 0

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

    async def record_views(self, user: User, patient_ids: Sequence[str], action: str) -> None:
        await self._run(lambda: self._tables.record_views(user, patient_ids, action))

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

    async def nightscout_uploader(self, api_secret_hex: str) -> NightscoutSecretRecord | None:
        """The uploader whose secret's SHA-1 hex is `api_secret_hex`, unless revoked."""
        return await self._run(lambda: self._tables.nightscout_uploader(api_secret_hex))

    async def nightscout_uploader_by_id(self, secret_id: int) -> NightscoutSecretRecord | None:
        """The unrevoked uploader secret or access token with this id."""
        return await self._run(lambda: self._tables.nightscout_uploader_by_id(secret_id))

    async def nightscout_jwt_key(self) -> bytes:
        """The hub's key for Nightscout JWTs (made on first use, shared by clinic workers)."""
        return await self._run(self._tables.nightscout_jwt_key)


# -- synchronous functions for the CLI ----------------------------------------------------


def _rules(storage: AccountStorage) -> AccountRules:
    return AccountRules(storage, SystemClock())


def users_add(
    storage: AccountStorage, username: str, role: str, password: str, patient_id: str | None = None
) -> User:
    """`glucohub users add`: raise AccountError on a bad role, name, password or duplicate."""
    try:
        parsed = Role(role)
    except ValueError:
        raise AccountError(
            f"role must be one of {', '.join(r.value for r in Role)}, not {role!r}",
            username=username,
        ) from None
    return _rules(storage).add_user(username, parsed, password, patient_id)


def users_list(storage: AccountStorage) -> list[User]:
    """Every account by user name: role, patient, disabled (never a hash or a token)."""
    return _rules(storage).list_users()


def users_passwd(storage: AccountStorage, username: str, password: str) -> None:
    """Set a new password and end the user's sessions."""
    _rules(storage).set_password(username, password)


def users_disable(storage: AccountStorage, username: str, *, disabled: bool = True) -> None:
    """Disable (or re-enable) a user; disabling ends their sessions and revokes their tokens."""
    _rules(storage).set_disabled(username, disabled)


def grant(
    storage: AccountStorage, patient_id: str, clinician: str, *, by: str = "cli"
) -> ConsentChange:
    """Let `clinician` see `patient_id`: the grant and its ledger event in one transaction
    (a running hub seals the event with its next batch)."""
    return _rules(storage).grant(patient_id, clinician, by).change


def revoke(
    storage: AccountStorage, patient_id: str, clinician: str, *, by: str = "cli"
) -> ConsentChange:
    """Withdraw the grant: the row's deletion and its ledger event in one transaction."""
    return _rules(storage).revoke(patient_id, clinician, by).change


def tokens_create(
    storage: AccountStorage, username: str, label: str, *, expires_days: int = DEFAULT_TOKEN_DAYS
) -> str:
    """Create an API token for `username`; the token is shown once and stored hashed."""
    return _rules(storage).create_token(username, label, expires_days)


def tokens_list(storage: AccountStorage, username: str) -> list[TokenInfo]:
    """The user's tokens, oldest first, without their secrets."""
    return _rules(storage).list_tokens(username)


def tokens_revoke(storage: AccountStorage, token_id: int) -> None:
    """Revoke one token by its id; AccountError when there is no such token."""
    _rules(storage).revoke_token_id(token_id)


def nightscout_secret_create(
    storage: AccountStorage, patient_id: str, device_id: str, *, can_write: bool, label: str
) -> tuple[int, str]:
    """`glucohub nightscout secret`: (id, secret) of a new uploader secret, shown once."""
    return _rules(storage).create_nightscout_secret(
        patient_id, device_id, can_write=can_write, label=label
    )


def nightscout_token_create(
    storage: AccountStorage, patient_id: str, device_id: str, *, subject: str, roles: Sequence[str]
) -> tuple[int, str]:
    """`glucohub nightscout token`: (id, token) of a new access token, shown once."""
    return _rules(storage).create_nightscout_token(
        patient_id, device_id, subject=subject, roles=roles
    )


def nightscout_secrets_list(
    storage: AccountStorage, patient_id: str | None = None
) -> list[NightscoutSecretRecord]:
    """Unrevoked uploader secrets and access tokens, oldest first (never the secrets)."""
    return _rules(storage).list_nightscout_secrets(patient_id)


def nightscout_secret_revoke(storage: AccountStorage, secret_id: int) -> None:
    """Revoke one uploader secret by its id; AccountError when there is no such secret."""
    _rules(storage).revoke_nightscout_secret(secret_id)
