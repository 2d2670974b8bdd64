"""Enrolment tokens in the clinic archive's database (`clinic_enrolment_tokens`, clinic
migration 2): made by `glucohub hubs token`, listed without their secret, revoked, and
redeemed once by the enrolment endpoint.

Redeeming is one transaction: a single `UPDATE … WHERE used_at IS NULL AND revoked_at IS
NULL AND expires_at > now RETURNING` consumes the token (two hubs racing with one token:
PostgreSQL's row lock lets exactly one of them match), then the hub is enrolled in the same
transaction. A hub that cannot be enrolled (its id taken by other keys) rolls it all back,
so its token stays usable for a corrected attempt.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.clinic.enrolment import (
    EnrolmentRefused,
    EnrolmentRequest,
    Refused,
    new_token,
    token_digest,
)
from gateway.clinic.witness import EnrolmentError, enrolled_hub
from gateway.errors import InputError
from gateway.storage.postgres_clinic import enrol_keys, migrate_clinic
from gateway.storage.postgres_connection import PostgresConnection, connect, translated


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRow:
    """A token as `glucohub hubs list` shows it: never its secret."""

    token_id: int
    hub_id: str | None
    created_at: datetime
    created_by: str
    expires_at: datetime
    used_at: datetime | None
    used_by_hub: str | None
    revoked_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.used_at is not None:
            return "used"
        return "expired" if self.expires_at <= now else "outstanding"


@dataclass(frozen=True, slots=True, kw_only=True)
class Redeemed:
    token_id: int
    hub_id: str
    re_enrolled: bool  # the hub was enrolled before (same keys, or replaced keys)


class ClinicEnrolment(PostgresConnection):
    """One connection; synchronous, one thread at a time. Applies the clinic migrations."""

    def __init__(self, url: str, now: datetime) -> None:
        self.url = url
        self._db = connect(url)
        try:
            self._migrate(now)
        except BaseException:
            self._db.close()
            raise

    @translated
    def _migrate(self, now: datetime) -> None:
        migrate_clinic(self._db, now, url=self.url)

    @translated
    def create_token(
        self, hub_id: str | None, lifetime: timedelta, created_by: str, now: datetime
    ) -> tuple[int, str]:
        """A new token (its id and its text: the only time the text exists)."""
        token = new_token()
        row = self._db.execute(
            "INSERT INTO clinic_enrolment_tokens (token_sha256, hub_id, created_at, created_by,"
            " expires_at) VALUES (%s, %s, %s, %s, %s) RETURNING id",
            (token_digest(token), hub_id, now, created_by, now + lifetime),
        ).fetchone()
        assert row is not None  # INSERT … RETURNING gives its row
        return int(row[0]), token

    @translated
    def tokens(self) -> list[TokenRow]:
        rows = self._db.execute(
            "SELECT id, hub_id, created_at, created_by, expires_at, used_at, used_by_hub,"
            " revoked_at FROM clinic_enrolment_tokens ORDER BY id"
        ).fetchall()
        return [
            TokenRow(
                token_id=int(r[0]),
                hub_id=r[1],
                created_at=r[2],
                created_by=r[3],
                expires_at=r[4],
                used_at=r[5],
                used_by_hub=r[6],
                revoked_at=r[7],
            )
            for r in rows
        ]

    @translated
    def revoke(self, token_id: int, now: datetime) -> None:
        """Revoke a token not used yet; `InputError` for an unknown or used one."""
        with self._db.transaction():
            row = self._db.execute(
                "SELECT used_at, revoked_at FROM clinic_enrolment_tokens WHERE id = %s FOR UPDATE",
                (token_id,),
            ).fetchone()
            if row is None:
                raise InputError(f"no enrolment token #{token_id}")
            if row[0] is not None:
                raise InputError(f"enrolment token #{token_id} was used already")
            if row[1] is None:
                self._db.execute(
                    "UPDATE clinic_enrolment_tokens SET revoked_at = %s WHERE id = %s",
                    (now, token_id),
                )

    def redeem(
        self, request: EnrolmentRequest, now: datetime, broker_password_hash: str | None = None
    ) -> Redeemed:
        """Consume the token and enrol the hub, or `EnrolmentRefused` with nothing changed.
        With `broker_password_hash`, the hub's broker password (Mosquitto's hash) too."""
        try:
            enrolled_hub(request.hub_id, request.batch_jwk, request.log_key)
        except EnrolmentError as exc:
            raise EnrolmentRefused(Refused.BAD_KEYS, str(exc)) from None
        return self._redeem(request, now, broker_password_hash)

    @translated
    def _redeem(
        self, request: EnrolmentRequest, now: datetime, password_hash: str | None
    ) -> Redeemed:
        digest = token_digest(request.token)
        with self._db.transaction():
            row = self._db.execute(
                "UPDATE clinic_enrolment_tokens SET used_at = %s, used_by_hub = %s"
                " WHERE token_sha256 = %s AND used_at IS NULL AND revoked_at IS NULL"
                " AND expires_at > %s AND (hub_id IS NULL OR hub_id = %s)"
                " RETURNING id, hub_id",
                (now, request.hub_id, digest, now, request.hub_id),
            ).fetchone()
            if row is None:
                raise EnrolmentRefused(self._why_not(digest, request.hub_id, now))
            token_id, bound = int(row[0]), row[1]
            try:
                # A token made for this hub may give it new keys (while it has no batches);
                # a token for any hub may not take over an enrolled hub's id.
                before = enrol_keys(
                    self._db,
                    request.hub_id,
                    request.batch_jwk,
                    request.log_key,
                    now,
                    replace=bound is not None,
                )
            except InputError as exc:
                detail = str(exc) if bound is not None else ""  # else: only "enrolled"
                raise EnrolmentRefused(Refused.KEYS_DIFFER, detail) from None
            if password_hash is not None:
                self._db.execute(
                    "INSERT INTO clinic_hub_credentials (hub_id, mosquitto_hash, issued_at)"
                    " VALUES (%s, %s, %s) ON CONFLICT (hub_id) DO UPDATE"
                    " SET mosquitto_hash = excluded.mosquitto_hash,"
                    " issued_at = excluded.issued_at",
                    (request.hub_id, password_hash, now),
                )
        return Redeemed(token_id=token_id, hub_id=request.hub_id, re_enrolled=before)

    def _why_not(self, digest: bytes, hub_id: str, now: datetime) -> Refused:
        row = self._db.execute(
            "SELECT revoked_at, used_at, expires_at, hub_id FROM clinic_enrolment_tokens"
            " WHERE token_sha256 = %s",
            (digest,),
        ).fetchone()
        if row is None:
            return Refused.UNKNOWN
        if row[0] is not None:
            return Refused.REVOKED
        if row[1] is not None:
            return Refused.USED
        if row[2] <= now:
            return Refused.EXPIRED
        return Refused.WRONG_HUB

    @translated
    def broker_credentials(self) -> list[tuple[str, str]]:
        """(hub id, Mosquitto password hash) of the hubs given a broker password."""
        rows = self._db.execute(
            "SELECT hub_id, mosquitto_hash FROM clinic_hub_credentials ORDER BY hub_id"
        ).fetchall()
        return [(str(r[0]), str(r[1])) for r in rows]
