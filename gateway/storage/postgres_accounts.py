"""The account contract (`gateway/storage/accounts.py`) on PostgreSQL, with psycopg 3.

The `dash_` tables of `postgres_migrations` (native types: timestamptz, boolean, bigint
identity ids), one autocommit connection, and an explicit transaction wherever the contract
names one. Times are kept to the millisecond, as SQLite's text keeps them, so both backends
answer alike. psycopg's errors leave as the storage family (`postgres_store.storage_error`);
a lost connection is reopened by the next call.

Consent changes take a transaction-scoped advisory lock first: like SQLite's `BEGIN
IMMEDIATE`, two of them never interleave, so a grant that lacks its ledger event is repaired
once, not by each of two racing commands.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from psycopg import errors as pg_errors

from gateway.clock import to_rfc3339
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
from gateway.storage.postgres_connection import (
    Connection,
    PostgresConnection,
    Row,
    storage_error,
    translated,
)
from gateway.storage.postgres_events import insert_ledger_event, last_consent_event
from gateway.storage.postgres_migrations import migrate, redacted
from gateway.units import Unit

# pg_advisory_xact_lock key of consent changes: "consent" in ASCII.
CONSENT_LOCK = 0x636F6E73656E74
_TOKEN_COLUMNS = "id, username, label, created_at, expires_at, last_used_at, revoked"


def _ms(value: datetime) -> datetime:
    """`value` in UTC, truncated to the millisecond (what SQLite's RFC 3339 text keeps)."""
    utc = value.astimezone(UTC)
    return utc.replace(microsecond=utc.microsecond // 1000 * 1000)


def _utc(value: object) -> datetime:
    assert isinstance(value, datetime)
    return value.astimezone(UTC)


_NS_COLUMNS = "id, patient_id, device_id, can_write, label, created_at, roles"


def _ns_record(row: Sequence[object]) -> NightscoutSecretRecord:
    return NightscoutSecretRecord(
        secret_id=int(str(row[0])),
        patient_id=str(row[1]),
        device_id=str(row[2]),
        can_write=bool(row[3]),
        label=str(row[4]),
        created_at=_utc(row[5]),
        roles=tuple(r for r in str(row[6]).split(",") if r),
    )


def _user(row: Row) -> UserRecord:
    return UserRecord(
        username=str(row[0]),
        role=str(row[1]),
        patient_id=None if row[2] is None else str(row[2]),
        unit=Unit(str(row[3])) if row[3] else None,
        disabled=bool(row[4]),
    )


def _token(row: Row) -> TokenRecord:
    return TokenRecord(
        token_id=int(row[0]),
        username=str(row[1]),
        label=str(row[2]),
        created_at=_utc(row[3]),
        expires_at=_utc(row[4]),
        last_used_at=None if row[5] is None else _utc(row[5]),
        revoked=bool(row[6]),
    )


class _PostgresConsent:
    """Consent rows and ledger events on a connection inside an open transaction."""

    def __init__(self, db: Connection) -> None:
        self._db = db

    def insert_grant(self, grant: GrantRecord) -> bool:
        cursor = self._db.execute(
            "INSERT INTO dash_grants (patient_id, clinician, granted_by, granted_at)"
            " VALUES (%s, %s, %s, %s) ON CONFLICT (patient_id, clinician) DO NOTHING",
            (grant.patient_id, grant.clinician, grant.granted_by, _ms(grant.granted_at)),
        )
        return cursor.rowcount == 1

    def get_grant(self, patient_id: str, clinician: str) -> GrantRecord | None:
        row = self._db.execute(
            "SELECT granted_by, granted_at FROM dash_grants"
            " WHERE patient_id = %s AND clinician = %s",
            (patient_id, clinician),
        ).fetchone()
        if row is None:
            return None
        return GrantRecord(
            patient_id=patient_id,
            clinician=clinician,
            granted_by=str(row[0]),
            granted_at=_utc(row[1]),
        )

    def delete_grant(self, patient_id: str, clinician: str) -> bool:
        cursor = self._db.execute(
            "DELETE FROM dash_grants WHERE patient_id = %s AND clinician = %s",
            (patient_id, clinician),
        )
        return cursor.rowcount == 1

    def last_consent_event(self, patient_id: str, clinician: str) -> str | None:
        return last_consent_event(self._db, patient_id, clinician)

    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        insert_ledger_event(self._db, patient_id, body)


class PostgresAccountStorage(PostgresConnection):
    """`AccountStorage` on a PostgreSQL database. One thread at a time."""

    def __init__(self, url: str) -> None:
        """Connect to `url` (postgresql://user@host:port/db) and apply the migrations the
        database lacks. Raise SchemaTooNew for a database from a newer Glucohub."""
        self.url = url
        self._db = self._open()
        try:
            migrate(self._db, url=url)
        except psycopg.Error as exc:
            self._db.close()
            raise storage_error(exc) from exc
        except BaseException:
            self._db.close()
            raise

    @property
    def where(self) -> str:
        """The database, for messages (the URL without its password)."""
        return redacted(self.url)

    # users

    @translated
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
                " VALUES (%s, %s, %s, %s, %s, '')",
                (username, role, patient_id, password_hash, _ms(created_at)),
            )
        except pg_errors.UniqueViolation:
            raise DuplicateUser(username) from None

    @translated
    def get_user(self, username: str) -> UserRecord | None:
        row = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users WHERE username = %s",
            (username,),
        ).fetchone()
        return None if row is None else _user(row)

    @translated
    def list_users(self) -> list[UserRecord]:
        rows = self._db.execute(
            "SELECT username, role, patient_id, unit, disabled FROM dash_users"
            ' ORDER BY username COLLATE "C"'
        ).fetchall()
        return [_user(r) for r in rows]

    @translated
    def password_hash(self, username: str) -> str | None:
        row = self._db.execute(
            "SELECT password_hash FROM dash_users WHERE username = %s", (username,)
        ).fetchone()
        return None if row is None else str(row[0])

    @translated
    def set_password_hash(self, username: str, password_hash: str) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE dash_users SET password_hash = %s WHERE username = %s",
                (password_hash, username),
            )
            self._db.execute("DELETE FROM dash_sessions WHERE username = %s", (username,))

    @translated
    def set_disabled(self, username: str, disabled: bool) -> None:
        with self._db.transaction():
            self._db.execute(
                "UPDATE dash_users SET disabled = %s WHERE username = %s", (disabled, username)
            )
            if disabled:
                self._db.execute("DELETE FROM dash_sessions WHERE username = %s", (username,))
                self._db.execute(
                    "UPDATE dash_tokens SET revoked = true WHERE username = %s", (username,)
                )

    @translated
    def set_unit(self, username: str, unit: Unit) -> None:
        self._db.execute(
            "UPDATE dash_users SET unit = %s WHERE username = %s", (unit.value, username)
        )

    @translated
    def patient_name(self, patient_id: str) -> str | None:
        row = self._db.execute(
            "SELECT display_name FROM patients WHERE patient_id = %s", (patient_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    # sessions

    @translated
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
        with self._db.transaction():
            if replaces_hash is not None:
                self._db.execute(
                    "DELETE FROM dash_sessions WHERE session_hash = %s", (replaces_hash,)
                )
            self._db.execute("DELETE FROM dash_sessions WHERE expires_at < %s", (_ms(created_at),))
            self._db.execute(
                "INSERT INTO dash_sessions"
                " (session_hash, username, csrf_token, created_at, expires_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (session_hash, username, csrf_token, _ms(created_at), _ms(expires_at)),
            )

    @translated
    def get_session(self, session_hash: str) -> SessionRecord | None:
        row = self._db.execute(
            "SELECT username, csrf_token, expires_at FROM dash_sessions WHERE session_hash = %s",
            (session_hash,),
        ).fetchone()
        if row is None:
            return None
        return SessionRecord(username=str(row[0]), csrf_token=str(row[1]), expires_at=_utc(row[2]))

    @translated
    def delete_session(self, session_hash: str) -> None:
        self._db.execute("DELETE FROM dash_sessions WHERE session_hash = %s", (session_hash,))

    # API tokens

    @translated
    def add_token(
        self,
        *,
        token_hash: str,
        username: str,
        label: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> int:
        row = self._db.execute(
            "INSERT INTO dash_tokens (token_hash, username, label, created_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (token_hash, username, label, _ms(created_at), _ms(expires_at)),
        ).fetchone()
        assert row is not None
        return int(row[0])

    @translated
    def unrevoked_token(self, token_hash: str) -> TokenRecord | None:
        row = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM dash_tokens WHERE token_hash = %s AND NOT revoked",
            (token_hash,),
        ).fetchone()
        return None if row is None else _token(row)

    @translated
    def set_token_used(self, token_id: int, used_at: datetime) -> None:
        self._db.execute(
            "UPDATE dash_tokens SET last_used_at = %s WHERE id = %s", (_ms(used_at), token_id)
        )

    @translated
    def list_tokens(self, username: str) -> list[TokenRecord]:
        rows = self._db.execute(
            f"SELECT {_TOKEN_COLUMNS} FROM dash_tokens WHERE username = %s ORDER BY id",
            (username,),
        ).fetchall()
        return [_token(r) for r in rows]

    @translated
    def revoke_token_id(self, token_id: int) -> bool:
        cursor = self._db.execute(
            "UPDATE dash_tokens SET revoked = true WHERE id = %s", (token_id,)
        )
        return cursor.rowcount > 0

    @translated
    def revoke_token_hash(self, token_hash: str) -> None:
        self._db.execute(
            "UPDATE dash_tokens SET revoked = true WHERE token_hash = %s", (token_hash,)
        )

    # Nightscout uploader secrets

    @translated
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
        row = self._db.execute(
            "INSERT INTO nightscout_secrets"
            " (secret_hash, patient_id, device_id, can_write, label, created_at, roles)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id",
            (
                secret_hash,
                patient_id,
                device_id,
                can_write,
                label,
                _ms(created_at),
                ",".join(roles),
            ),
        ).fetchone()
        assert row is not None
        return int(row[0])

    @translated
    def nightscout_secret(self, secret_hash: str) -> NightscoutSecretRecord | None:
        return self._nightscout_secret_where("secret_hash = %s", secret_hash)

    @translated
    def nightscout_secret_by_id(self, secret_id: int) -> NightscoutSecretRecord | None:
        return self._nightscout_secret_where("id = %s", secret_id)

    def _nightscout_secret_where(self, where: str, value: object) -> NightscoutSecretRecord | None:
        row = self._db.execute(
            f"SELECT {_NS_COLUMNS} FROM nightscout_secrets WHERE {where} AND NOT revoked".encode(),
            (value,),
        ).fetchone()
        return None if row is None else _ns_record(row)

    @translated
    def list_nightscout_secrets(
        self, patient_id: str | None = None
    ) -> list[NightscoutSecretRecord]:
        rows = self._db.execute(
            f"SELECT {_NS_COLUMNS} FROM nightscout_secrets WHERE NOT revoked"
            " AND (%s::text IS NULL OR patient_id = %s) ORDER BY id".encode(),
            (patient_id, patient_id),
        ).fetchall()
        return [_ns_record(r) for r in rows]

    @translated
    def revoke_nightscout_secret(self, secret_id: int) -> bool:
        cursor = self._db.execute(
            "UPDATE nightscout_secrets SET revoked = true WHERE id = %s", (secret_id,)
        )
        return cursor.rowcount > 0

    @translated
    def nightscout_jwt_key(self, candidate: bytes) -> bytes:
        self._db.execute(
            "INSERT INTO nightscout_jwt_key (id, key) VALUES (1, %s) ON CONFLICT (id) DO NOTHING",
            (candidate,),
        )
        row = self._db.execute("SELECT key FROM nightscout_jwt_key WHERE id = 1").fetchone()
        assert row is not None
        return bytes(row[0])

    # consent

    @contextmanager
    def consent(self) -> Iterator[_PostgresConsent]:
        self._connect_if_lost()
        try:
            with self._db.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(%s)", (CONSENT_LOCK,))
                yield _PostgresConsent(self._db)
        except psycopg.Error as exc:
            raise storage_error(exc, broken=self._lost()) from exc
        finally:
            self._end_open_transaction()

    @translated
    def grants_for_patient(self, patient_id: str) -> list[GrantRecord]:
        rows = self._db.execute(
            "SELECT patient_id, clinician, granted_by, granted_at FROM dash_grants"
            ' WHERE patient_id = %s ORDER BY clinician COLLATE "C"',
            (patient_id,),
        ).fetchall()
        return [
            GrantRecord(
                patient_id=str(r[0]),
                clinician=str(r[1]),
                granted_by=str(r[2]),
                granted_at=_utc(r[3]),
            )
            for r in rows
        ]

    @translated
    def granted_patients(self, clinician: str) -> list[str]:
        rows = self._db.execute(
            "SELECT patient_id FROM dash_grants WHERE clinician = %s"
            ' ORDER BY patient_id COLLATE "C"',
            (clinician,),
        ).fetchall()
        return [str(r[0]) for r in rows]

    # clinical notes

    @translated
    def add_note(
        self, *, patient_id: str, author: str, role: str, created_at: datetime, body: str
    ) -> NoteRecord:
        at = _ms(created_at)
        row = self._db.execute(
            "INSERT INTO dash_notes (patient_id, author, role, created_at, body)"
            " VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (patient_id, author, role, at, body),
        ).fetchone()
        assert row is not None
        return NoteRecord(
            note_id=int(row[0]),
            patient_id=patient_id,
            author=author,
            role=role,
            created_at=to_rfc3339(at),
            body=body,
        )

    @translated
    def notes(self, patient_id: str, limit: int) -> list[NoteRecord]:
        rows = self._db.execute(
            "SELECT id, patient_id, author, role, created_at, body FROM dash_notes"
            " WHERE patient_id = %s ORDER BY id DESC LIMIT %s",
            (patient_id, limit),
        ).fetchall()
        return [
            NoteRecord(
                note_id=int(r[0]),
                patient_id=str(r[1]),
                author=str(r[2]),
                role=str(r[3]),
                created_at=to_rfc3339(_utc(r[4])),
                body=str(r[5]),
            )
            for r in rows
        ]

    # access audit

    @translated
    def add_audits(self, entries: Sequence[AuditRecord]) -> None:
        with self._db.transaction(), self._db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO dash_audit (time, viewer, role, patient_id, action)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(_ms(e.time), e.viewer, e.role, e.patient_id, e.action) for e in entries],
            )

    @translated
    def add_audit(self, entry: AuditRecord) -> None:
        self._db.execute(
            "INSERT INTO dash_audit (time, viewer, role, patient_id, action)"
            " VALUES (%s, %s, %s, %s, %s)",
            (_ms(entry.time), entry.viewer, entry.role, entry.patient_id, entry.action),
        )

    @translated
    def access_log(self, patient_id: str, limit: int) -> list[AuditRecord]:
        rows = self._db.execute(
            "SELECT time, viewer, role, patient_id, action FROM dash_audit"
            " WHERE patient_id = %s ORDER BY id DESC LIMIT %s",
            (patient_id, limit),
        ).fetchall()
        return [
            AuditRecord(
                time=_utc(r[0]),
                viewer=str(r[1]),
                role=str(r[2]),
                patient_id=str(r[3]),
                action=str(r[4]),
            )
            for r in rows
        ]

    # login failures

    @translated
    def login_blocked_until(self, keys: Sequence[str]) -> float | None:
        row = self._db.execute(
            "SELECT MAX(blocked_until) FROM dash_login_failures WHERE key = ANY(%s)",
            (list(keys),),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    @translated
    def add_login_failures(
        self, keyed: Sequence[tuple[str, FailurePolicy]], now: float, *, forget_before: float
    ) -> list[int]:
        counts = []
        with self._db.transaction():
            for key, policy in keyed:
                # One statement counts the failure and locks the row until commit, so two
                # hubs' failures at once are both counted.
                row = self._db.execute(
                    "INSERT INTO dash_login_failures AS f"
                    " (key, failures, last_failure, blocked_until) VALUES (%s, 1, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE SET"
                    " failures = CASE WHEN excluded.last_failure - f.last_failure >= %s"
                    " THEN 1 ELSE f.failures + 1 END,"
                    " last_failure = excluded.last_failure"
                    " RETURNING failures",
                    (key, now, now, policy.forget_s),
                ).fetchone()
                assert row is not None
                failures = int(row[0])
                self._db.execute(
                    "UPDATE dash_login_failures SET blocked_until = %s WHERE key = %s",
                    (now + policy.delay_s(failures), key),
                )
                counts.append(failures)
            self._db.execute(
                "DELETE FROM dash_login_failures WHERE last_failure < %s", (forget_before,)
            )
        return counts
