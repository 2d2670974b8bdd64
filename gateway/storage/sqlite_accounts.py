"""The account contract (`gateway/storage/accounts.py`) on the hub's SQLite file.

The `dash_` tables live beside the store's in one file, behind a connection of their own
(WAL lets the hub and a CLI command write in turn). Times are stored as RFC 3339 text, login
failure times as REAL seconds. A consent change writes its ledger event on this connection in
the same transaction (`sqlite_events.insert_ledger_event`).
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.errors import PermanentStorageError, StorageError, TransientStorageError
from gateway.storage.accounts import (
    AuditRecord,
    DuplicateUser,
    FailurePolicy,
    GrantRecord,
    NightscoutSecretRecord,
    NoteRecord,
    SessionRecord,
    TokenRecord,
    UserRecord,
)
from gateway.storage.sqlite_events import insert_ledger_event, last_consent_event
from gateway.storage.sqlite_migrations import migrate
from gateway.units import Unit

_P = ParamSpec("_P")
_T = TypeVar("_T")
_S = TypeVar("_S")

BUSY_TIMEOUT_MS = 10_000


def storage_error(exc: sqlite3.Error) -> StorageError:
    """Ours for SQLite's: a busy or locked database may be free on the next try."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return TransientStorageError(f"database busy: {text}")
    return PermanentStorageError(f"database error: {text}")


def _translated(
    method: Callable[Concatenate[_S, _P], _T],
) -> Callable[Concatenate[_S, _P], _T]:
    @functools.wraps(method)
    def run(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    return run


def _time(value: datetime) -> str:
    return to_rfc3339(value)


_NS_COLUMNS = "id, patient_id, device_id, can_write, label, created_at, roles"


def _ns_record(row: Sequence[object]) -> NightscoutSecretRecord:
    return NightscoutSecretRecord(
        secret_id=int(str(row[0])),
        patient_id=str(row[1]),
        device_id=str(row[2]),
        can_write=bool(row[3]),
        label=str(row[4]),
        created_at=parse_rfc3339(str(row[5])),
        roles=tuple(r for r in str(row[6]).split(",") if r),
    )


def _user(row: sqlite3.Row | tuple[object, ...]) -> UserRecord:
    return UserRecord(
        username=str(row[0]),
        role=str(row[1]),
        patient_id=None if row[2] is None else str(row[2]),
        unit=Unit(str(row[3])) if row[3] else None,
        disabled=bool(row[4]),
    )


def _token(row: tuple[object, ...]) -> TokenRecord:
    return TokenRecord(
        token_id=int(str(row[0])),
        username=str(row[1]),
        label=str(row[2]),
        created_at=parse_rfc3339(str(row[3])),
        expires_at=parse_rfc3339(str(row[4])),
        last_used_at=None if row[5] is None else parse_rfc3339(str(row[5])),
        revoked=bool(row[6]),
    )


_TOKEN_COLUMNS = "id, username, label, created_at, expires_at, last_used_at, revoked"


class _SqliteConsent:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @_translated
    def insert_grant(self, grant: GrantRecord) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO dash_grants (patient_id, clinician, granted_by, granted_at)"
            " VALUES (?, ?, ?, ?)",
            (grant.patient_id, grant.clinician, grant.granted_by, _time(grant.granted_at)),
        )
        return cursor.rowcount == 1

    @_translated
    def get_grant(self, patient_id: str, clinician: str) -> GrantRecord | None:
        row = self._db.execute(
            "SELECT granted_by, granted_at FROM dash_grants WHERE patient_id = ? AND clinician = ?",
            (patient_id, clinician),
        ).fetchone()
        if row is None:
            return None
        return GrantRecord(
            patient_id=patient_id,
            clinician=clinician,
            granted_by=str(row[0]),
            granted_at=parse_rfc3339(str(row[1])),
        )

    @_translated
    def delete_grant(self, patient_id: str, clinician: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM dash_grants WHERE patient_id = ? AND clinician = ?",
            (patient_id, clinician),
        )
        return cursor.rowcount == 1

    @_translated
    def last_consent_event(self, patient_id: str, clinician: str) -> str | None:
        return last_consent_event(self._db, patient_id, clinician)

    @_translated
    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        insert_ledger_event(self._db, patient_id, body)


class SqliteAccountStorage:
    """`AccountStorage` on the hub's SQLite file. Use from one thread at a time."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    @classmethod
    def open(cls, db_path: Path, *, now: datetime) -> SqliteAccountStorage:
        """Open (creating the file and migrating its schema if needed) the database at
        `db_path`; `now` dates what a migration fills in. Raise SchemaTooNew for a file
        from a newer Glucohub."""
        db_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc
        try:
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            migrate(db, now, path=db_path)  # the hub's schema, accounts included
        except sqlite3.Error as exc:
            db.close()
            raise storage_error(exc) from exc
        except BaseException:
            db.close()
            raise
        return cls(db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # users

    @_translated
    def add_user(
        self,
        *,
        username: str,
        role: str,
        patient_id: str | None,
        password_hash: str,
        created_at: datetime,
    ) -> None:
        try:
            self._db.execute(
                "INSERT INTO dash_users"
                " (username, role, patient_id, password_hash, created_at, unit)"
                " VALUES (?, ?, ?, ?, ?, '')",
                (username, role, patient_id, password_hash, _time(created_at)),
            )
        except sqlite3.IntegrityError:
            raise DuplicateUser(username) from None

    @_translated
    def get_user(self, username: str) -> UserRecord | None:
        row = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users WHERE username = ?",
            (username,),
        ).fetchone()
        return None if row is None else _user(row)

    @_translated
    def list_users(self) -> list[UserRecord]:
        rows = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users ORDER BY username"
        ).fetchall()
        return [_user(r) for r in rows]

    @_translated
    def password_hash(self, username: str) -> str | None:
        row = self._db.execute(
            "SELECT password_hash FROM dash_users WHERE username = ?", (username,)
        ).fetchone()
        return None if row is None else str(row[0])

    @_translated
    def set_password_hash(self, username: str, password_hash: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE dash_users SET password_hash = ? WHERE username = ?",
                (password_hash, username),
            )
            self._db.execute("DELETE FROM dash_sessions WHERE username = ?", (username,))

    @_translated
    def set_disabled(self, username: str, disabled: bool) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE dash_users SET disabled = ? WHERE username = ?", (int(disabled), username)
            )
            if disabled:
                self._db.execute("DELETE FROM dash_sessions WHERE username = ?", (username,))
                self._db.execute(
                    "UPDATE dash_tokens SET revoked = 1 WHERE username = ?", (username,)
                )

    @_translated
    def set_unit(self, username: str, unit: Unit) -> None:
        self._db.execute(
            "UPDATE dash_users SET unit = ? WHERE username = ?", (unit.value, username)
        )

    @_translated
    def patient_name(self, patient_id: str) -> str | None:
        row = self._db.execute(
            "SELECT display_name FROM patients WHERE patient_id = ?", (patient_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    # sessions

    @_translated
    def add_session(
        self,
        *,
        session_hash: str,
        username: str,
        csrf_token: str,
        created_at: datetime,
        expires_at: datetime,
        replaces_hash: str | None,
    ) -> None:
        with self._transaction():
            if replaces_hash is not None:
                self._db.execute(
                    "DELETE FROM dash_sessions WHERE session_hash = ?", (replaces_hash,)
                )
            self._db.execute("DELETE FROM dash_sessions WHERE expires_at < ?", (_time(created_at),))
            self._db.execute(
                "INSERT INTO dash_sessions"
                " (session_hash, username, csrf_token, created_at, expires_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (session_hash, username, csrf_token, _time(created_at), _time(expires_at)),
            )

    @_translated
    def get_session(self, session_hash: str) -> SessionRecord | None:
        row = self._db.execute(
            "SELECT username, csrf_token, expires_at FROM dash_sessions WHERE session_hash = ?",
            (session_hash,),
        ).fetchone()
        if row is None:
            return None
        return SessionRecord(
            username=str(row[0]), csrf_token=str(row[1]), expires_at=parse_rfc3339(str(row[2]))
        )

    @_translated
    def delete_session(self, session_hash: str) -> None:
        self._db.execute("DELETE FROM dash_sessions WHERE session_hash = ?", (session_hash,))

    # API tokens

    @_translated
    def add_token(
        self,
        *,
        token_hash: str,
        username: str,
        label: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO dash_tokens (token_hash, username, label, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_hash, username, label, _time(created_at), _time(expires_at)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_translated
    def unrevoked_token(self, token_hash: str) -> TokenRecord | None:
        row = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM dash_tokens WHERE token_hash = ? AND revoked = 0",
            (token_hash,),
        ).fetchone()
        return None if row is None else _token(row)

    @_translated
    def set_token_used(self, token_id: int, used_at: datetime) -> None:
        self._db.execute(
            "UPDATE dash_tokens SET last_used_at = ? WHERE id = ?", (_time(used_at), token_id)
        )

    @_translated
    def list_tokens(self, username: str) -> list[TokenRecord]:
        rows = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM dash_tokens WHERE username = ? ORDER BY id",
            (username,),
        ).fetchall()
        return [_token(r) for r in rows]

    @_translated
    def revoke_token_id(self, token_id: int) -> bool:
        cursor = self._db.execute("UPDATE dash_tokens SET revoked = 1 WHERE id = ?", (token_id,))
        return cursor.rowcount > 0

    @_translated
    def revoke_token_hash(self, token_hash: str) -> None:
        self._db.execute("UPDATE dash_tokens SET revoked = 1 WHERE token_hash = ?", (token_hash,))

    # Nightscout uploader secrets

    @_translated
    def add_nightscout_secret(
        self,
        *,
        secret_hash: str,
        patient_id: str,
        device_id: str,
        can_write: bool,
        label: str,
        created_at: datetime,
        roles: Sequence[str] = (),
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO nightscout_secrets"
            " (secret_hash, patient_id, device_id, can_write, label, created_at, roles)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                secret_hash,
                patient_id,
                device_id,
                int(can_write),
                label,
                _time(created_at),
                ",".join(roles),
            ),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    @_translated
    def nightscout_secret(self, secret_hash: str) -> NightscoutSecretRecord | None:
        return self._nightscout_secret_where("secret_hash = ?", secret_hash)

    @_translated
    def nightscout_secret_by_id(self, secret_id: int) -> NightscoutSecretRecord | None:
        return self._nightscout_secret_where("id = ?", secret_id)

    def _nightscout_secret_where(self, where: str, value: object) -> NightscoutSecretRecord | None:
        row = self._db.execute(
            f"SELECT {_NS_COLUMNS} FROM nightscout_secrets WHERE {where} AND revoked = 0", (value,)
        ).fetchone()
        return None if row is None else _ns_record(row)

    @_translated
    def list_nightscout_secrets(
        self, patient_id: str | None = None
    ) -> list[NightscoutSecretRecord]:
        rows = self._db.execute(
            f"SELECT {_NS_COLUMNS} FROM nightscout_secrets WHERE revoked = 0"
            " AND (? IS NULL OR patient_id = ?) ORDER BY id",
            (patient_id, patient_id),
        ).fetchall()
        return [_ns_record(r) for r in rows]

    @_translated
    def revoke_nightscout_secret(self, secret_id: int) -> bool:
        cursor = self._db.execute(
            "UPDATE nightscout_secrets SET revoked = 1 WHERE id = ?", (secret_id,)
        )
        return cursor.rowcount > 0

    @_translated
    def nightscout_jwt_key(self, candidate: bytes) -> bytes:
        self._db.execute(
            "INSERT INTO nightscout_jwt_key (id, key) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
            (candidate,),
        )
        row = self._db.execute("SELECT key FROM nightscout_jwt_key WHERE id = 1").fetchone()
        return bytes(row[0])

    # consent

    @contextmanager
    def consent(self) -> Iterator[_SqliteConsent]:
        try:
            with self._transaction():
                yield _SqliteConsent(self._db)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    @_translated
    def grants_for_patient(self, patient_id: str) -> list[GrantRecord]:
        rows = self._db.execute(
            "SELECT patient_id, clinician, granted_by, granted_at FROM dash_grants"
            " WHERE patient_id = ? ORDER BY clinician",
            (patient_id,),
        ).fetchall()
        return [
            GrantRecord(
                patient_id=str(r[0]),
                clinician=str(r[1]),
                granted_by=str(r[2]),
                granted_at=parse_rfc3339(str(r[3])),
            )
            for r in rows
        ]

    @_translated
    def granted_patients(self, clinician: str) -> list[str]:
        rows = self._db.execute(
            "SELECT patient_id FROM dash_grants WHERE clinician = ? ORDER BY patient_id",
            (clinician,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # clinical notes

    @_translated
    def add_note(
        self, *, patient_id: str, author: str, role: str, created_at: datetime, body: str
    ) -> NoteRecord:
        at = _time(created_at)
        cursor = self._db.execute(
            "INSERT INTO dash_notes (patient_id, author, role, created_at, body)"
            " VALUES (?, ?, ?, ?, ?)",
            (patient_id, author, role, at, body),
        )
        assert cursor.lastrowid is not None
        return NoteRecord(
            note_id=cursor.lastrowid,
            patient_id=patient_id,
            author=author,
            role=role,
            created_at=at,
            body=body,
        )

    @_translated
    def notes(self, patient_id: str, limit: int) -> list[NoteRecord]:
        rows = self._db.execute(
            "SELECT id, patient_id, author, role, created_at, body FROM dash_notes"
            " WHERE patient_id = ? ORDER BY id DESC LIMIT ?",
            (patient_id, limit),
        ).fetchall()
        return [
            NoteRecord(
                note_id=int(r[0]),
                patient_id=str(r[1]),
                author=str(r[2]),
                role=str(r[3]),
                created_at=str(r[4]),
                body=str(r[5]),
            )
            for r in rows
        ]

    # access audit

    @_translated
    def add_audits(self, entries: Sequence[AuditRecord]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT INTO dash_audit (time, viewer, role, patient_id, action)"
                " VALUES (?, ?, ?, ?, ?)",
                [(_time(e.time), e.viewer, e.role, e.patient_id, e.action) for e in entries],
            )

    @_translated
    def add_audit(self, entry: AuditRecord) -> None:
        self._db.execute(
            "INSERT INTO dash_audit (time, viewer, role, patient_id, action)"
            " VALUES (?, ?, ?, ?, ?)",
            (_time(entry.time), entry.viewer, entry.role, entry.patient_id, entry.action),
        )

    @_translated
    def access_log(self, patient_id: str, limit: int) -> list[AuditRecord]:
        rows = self._db.execute(
            "SELECT time, viewer, role, patient_id, action FROM dash_audit"
            " WHERE patient_id = ? ORDER BY id DESC LIMIT ?",
            (patient_id, limit),
        ).fetchall()
        return [
            AuditRecord(
                time=parse_rfc3339(str(r[0])),
                viewer=str(r[1]),
                role=str(r[2]),
                patient_id=str(r[3]),
                action=str(r[4]),
            )
            for r in rows
        ]

    # login failures

    @_translated
    def login_blocked_until(self, keys: Sequence[str]) -> float | None:
        if not keys:
            return None
        marks = ",".join("?" * len(keys))
        row = self._db.execute(
            f"SELECT MAX(blocked_until) FROM dash_login_failures WHERE key IN ({marks})",
            tuple(keys),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @_translated
    def add_login_failures(
        self, keyed: Sequence[tuple[str, FailurePolicy]], now: float, *, forget_before: float
    ) -> list[int]:
        counts = []
        with self._transaction():
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
            self._db.execute(
                "DELETE FROM dash_login_failures WHERE last_failure < ?", (forget_before,)
            )
        return counts
