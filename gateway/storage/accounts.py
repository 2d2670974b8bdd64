"""The storage contract of dashboard accounts: users, sessions, API tokens, Nightscout
uploader secrets, consent grants, clinical notes, the access audit and login failures.

Backends store and return plain records; they hash nothing, check no password and decide no
access (that is `dashboards/accounts.py`). Session ids and API tokens arrive already hashed.
Times are timezone-aware UTC `datetime`s, except login-failure times: seconds since the epoch,
the backoff arithmetic's own unit.

Where one user-visible change touches several rows, the backend writes them in one
transaction (named in each method's contract): a new password ends the sessions; disabling a
user ends the sessions and revokes the tokens; a consent row and its ledger event commit
together or not at all (`consent()`).

Errors: `DuplicateUser` for a user name already taken; otherwise the `StorageError` family
(`TransientStorageError`: retry may help; `PermanentStorageError`: it will not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from gateway.errors import RegistryError
from gateway.units import Unit


class DuplicateUser(RegistryError):
    """A user with this name exists already."""

    def __init__(self, username: str) -> None:
        super().__init__(f"user {username!r} already exists")
        self.username = username


@dataclass(frozen=True, slots=True, kw_only=True)
class UserRecord:
    username: str
    role: str  # "admin", "clinician" or "patient"
    patient_id: str | None
    unit: Unit | None  # None: the user has not chosen one
    disabled: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionRecord:
    username: str
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRecord:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class GrantRecord:
    patient_id: str
    clinician: str
    granted_by: str
    granted_at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class NoteRecord:
    """One entry of a patient's clinical notes thread."""

    note_id: int
    patient_id: str
    author: str
    role: str
    created_at: str  # RFC 3339, as written
    body: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    time: datetime
    viewer: str
    role: str
    patient_id: str
    action: str  # e.g. "page", "api.readings", "report", "batch:12", "ws"


@dataclass(frozen=True, slots=True, kw_only=True)
class NightscoutSecretRecord:
    """A Nightscout uploader secret as stored: never the secret, only its hash. The secret
    decides whose readings an upload is (`patient_id`) and which hub device sends them."""

    secret_id: int
    patient_id: str
    device_id: str
    can_write: bool
    label: str
    created_at: datetime
    # An access token's Nightscout roles ("readable", "careportal", "admin"); none for an
    # uploader secret, which is its patient's API_SECRET.
    roles: tuple[str, ...] = ()


class FailurePolicy(Protocol):
    """How a login-failure count grows (`dashboards.ratelimit.Backoff` is one)."""

    @property
    def forget_s(self) -> float: ...

    def delay_s(self, failures: int) -> float: ...


class UserStorage(Protocol):
    def add_user(
        self,
        *,
        username: str,
        role: str,
        patient_id: str | None,
        password_hash: str,
        created_at: datetime,
    ) -> None:
        """Raise DuplicateUser when the name is taken. A new user has chosen no unit."""

    def get_user(self, username: str) -> UserRecord | None: ...

    def list_users(self) -> list[UserRecord]:
        """Every user, by user name."""

    def password_hash(self, username: str) -> str | None: ...

    def set_password_hash(self, username: str, password_hash: str) -> None:
        """Store the new hash and delete the user's sessions, in one transaction."""

    def set_disabled(self, username: str, disabled: bool) -> None:
        """Disabling also deletes the user's sessions and revokes their tokens, in one
        transaction; enabling changes the flag only."""

    def set_unit(self, username: str, unit: Unit) -> None: ...

    def patient_name(self, patient_id: str) -> str | None:
        """The registered patient's display name; None when the registry has no such id."""


class SessionStorage(Protocol):
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
        """In one transaction: delete the session `replaces_hash` (if given) and every session
        that expired before `created_at`, then add this one."""

    def get_session(self, session_hash: str) -> SessionRecord | None:
        """The stored session, expired or not (the caller compares `expires_at`)."""

    def delete_session(self, session_hash: str) -> None: ...


class TokenStorage(Protocol):
    def add_token(
        self,
        *,
        token_hash: str,
        username: str,
        label: str,
        created_at: datetime,
        expires_at: datetime,
    ) -> int:
        """The new token's id (ids grow: a later token has a larger id)."""

    def unrevoked_token(self, token_hash: str) -> TokenRecord | None:
        """The token with this hash unless it is revoked (expired ones are returned)."""

    def set_token_used(self, token_id: int, used_at: datetime) -> None: ...

    def list_tokens(self, username: str) -> list[TokenRecord]:
        """The user's tokens, oldest first."""

    def revoke_token_id(self, token_id: int) -> bool:
        """False when there is no token with this id."""

    def revoke_token_hash(self, token_hash: str) -> None: ...


class NightscoutSecretStorage(Protocol):
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
        """The new secret's id."""

    def nightscout_secret(self, secret_hash: str) -> NightscoutSecretRecord | None:
        """The unrevoked secret with this hash."""

    def nightscout_secret_by_id(self, secret_id: int) -> NightscoutSecretRecord | None:
        """The unrevoked secret with this id."""

    def list_nightscout_secrets(
        self, patient_id: str | None = None
    ) -> list[NightscoutSecretRecord]:
        """The unrevoked secrets and tokens (of one patient, or all), oldest first."""

    def revoke_nightscout_secret(self, secret_id: int) -> bool:
        """False when there is no secret with this id."""

    def nightscout_jwt_key(self, candidate: bytes) -> bytes:
        """The key the hub signs Nightscout JWTs with: `candidate` stored if there is none
        yet (the first caller wins, so every clinic worker signs alike)."""


class ConsentTransaction(Protocol):
    """Consent rows and ledger events inside one open transaction."""

    def insert_grant(self, grant: GrantRecord) -> bool:
        """False (and nothing written) when this patient and clinician have a grant already."""

    def get_grant(self, patient_id: str, clinician: str) -> GrantRecord | None: ...

    def delete_grant(self, patient_id: str, clinician: str) -> bool:
        """False when there was no such grant."""

    def last_consent_event(self, patient_id: str, clinician: str) -> str | None:
        """The `event` ("consent_granted" or "consent_revoked") of the newest ledger event of
        type "consent" for this patient and clinician; None when the ledger has none."""

    def add_ledger_event(self, patient_id: str, body: Mapping[str, object]) -> None:
        """Queue `body` (JSON) for the next sealed ledger batch."""


class ConsentStorage(Protocol):
    def consent(self) -> AbstractContextManager[ConsentTransaction]:
        """A write transaction: committed when the block ends, rolled back (nothing of it
        kept) when the block raises."""

    def grants_for_patient(self, patient_id: str) -> list[GrantRecord]:
        """By clinician name."""

    def granted_patients(self, clinician: str) -> list[str]: ...


class NoteStorage(Protocol):
    def add_note(
        self, *, patient_id: str, author: str, role: str, created_at: datetime, body: str
    ) -> NoteRecord: ...

    def notes(self, patient_id: str, limit: int) -> list[NoteRecord]:
        """The patient's newest `limit` notes, newest first."""


class AuditStorage(Protocol):
    def add_audit(self, entry: AuditRecord) -> None: ...

    def add_audits(self, entries: Sequence[AuditRecord]) -> None:
        """All of `entries` in one transaction, in order (a page of a list: one commit)."""

    def access_log(self, patient_id: str, limit: int) -> list[AuditRecord]:
        """The newest `limit` entries about the patient, in the reverse order of writing."""


class LoginFailureStorage(Protocol):
    def login_blocked_until(self, keys: Sequence[str]) -> float | None:
        """The latest time any of `keys` is held off until; None when none has failures."""

    def add_login_failures(
        self, keyed: Sequence[tuple[str, FailurePolicy]], now: float, *, forget_before: float
    ) -> list[int]:
        """In one transaction: count one failure at `now` against each key (a key whose last
        failure is `policy.forget_s` or more old starts again at 1), hold it off until
        `now + policy.delay_s(count)`, and forget every key whose last failure is before
        `forget_before`. Return the keys' new counts."""


class AccountStorage(
    UserStorage,
    SessionStorage,
    TokenStorage,
    NightscoutSecretStorage,
    ConsentStorage,
    NoteStorage,
    AuditStorage,
    LoginFailureStorage,
    Protocol,
):
    """Every account concern over one connection, used by one thread at a time."""

    def close(self) -> None: ...
