"""The account storage contract (`gateway/storage/accounts.py`), one suite for every backend.

Each test runs on SQLite (the hub's file) and on PostgreSQL (a fresh database on the tests'
own server). Setting up a registered patient, planting a failure and counting rows go
through the backend's own driver (`AccountBackend.sql`); everything checked goes through the
contract. Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from dashboards import accounts as accounts_module
from dashboards.accounts import AccountRules, Accounts, ConsentChange, Role
from gateway.errors import StorageError
from gateway.storage.accounts import (
    AccountStorage,
    AuditRecord,
    DuplicateUser,
    GrantRecord,
    SessionRecord,
    UserRecord,
)
from gateway.storage.postgres_accounts import PostgresAccountStorage
from gateway.storage.sqlite_accounts import SqliteAccountStorage
from gateway.units import Unit
from tests.dashboards.fakes import FakeClock

ROOT = Path(__file__).resolve().parent.parent.parent
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
PASSWORD = "a long enough password"

SQLITE_REFUSE_EVENTS = (
    "CREATE TRIGGER refuse_events BEFORE INSERT ON ledger_events"
    " BEGIN SELECT RAISE(ABORT, 'planted failure'); END",
)
POSTGRES_REFUSE_EVENTS = (
    "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql"
    " AS $$ BEGIN RAISE EXCEPTION 'planted failure'; END $$",
    "CREATE TRIGGER refuse_events BEFORE INSERT ON ledger_events"
    " FOR EACH ROW EXECUTE FUNCTION refuse_events()",
)


@dataclass
class AccountBackend:
    name: str
    where: str  # the database: a SQLite file's path or a postgresql:// URL
    open: Callable[[], AccountStorage]
    sql: Callable[[str], list[tuple[object, ...]]]  # one statement, committed, own connection
    refuse_events: tuple[str, ...]

    def register_patient(self, patient_id: str, name: str) -> None:
        self.sql(
            "INSERT INTO patients (patient_id, display_name, timezone)"
            f" VALUES ('{patient_id}', '{name}', 'UTC')"
        )

    def ledger_bodies(self) -> list[dict[str, object]]:
        return [
            json.loads(str(r[0])) for r in self.sql("SELECT body FROM ledger_events ORDER BY id")
        ]


def _sqlite_backend(path: Path) -> AccountBackend:
    def sql(statement: str) -> list[tuple[object, ...]]:
        db = sqlite3.connect(path)
        try:
            rows = db.execute(statement).fetchall()
            db.commit()
            return rows
        finally:
            db.close()

    return AccountBackend(
        "sqlite",
        str(path),
        lambda: SqliteAccountStorage.open(path, now=T0),
        sql,
        SQLITE_REFUSE_EVENTS,
    )


def _postgres_backend(url: str) -> AccountBackend:
    def sql(statement: str) -> list[tuple[object, ...]]:
        with psycopg.connect(url, autocommit=True) as db:
            cursor = db.execute(statement.encode())
            return cursor.fetchall() if cursor.description else []

    return AccountBackend(
        "postgresql", url, lambda: PostgresAccountStorage(url), sql, POSTGRES_REFUSE_EVENTS
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def accounts_db(request: pytest.FixtureRequest, tmp_path: Path) -> AccountBackend:
    if request.param == "sqlite":
        made = _sqlite_backend(tmp_path / "glucohub.sqlite3")
    else:
        made = _postgres_backend(request.getfixturevalue("postgres_url"))
    made.open().close()  # the schema, so that set-up SQL finds its tables
    made.register_patient("p1", "Ann Example")
    return made


@pytest.fixture
def storage(accounts_db: AccountBackend) -> Iterator[AccountStorage]:
    opened = accounts_db.open()
    yield opened
    opened.close()


def add_user(storage: AccountStorage, username: str, role: str = "clinician") -> None:
    storage.add_user(
        username=username,
        role=role,
        patient_id="p1" if role == "patient" else None,
        password_hash=f"hash-of-{username}",
        created_at=T0,
    )


# -- users ----------------------------------------------------------------------------------


def test_users_are_created_found_and_listed_by_name(storage: AccountStorage) -> None:
    add_user(storage, "dr-b")
    add_user(storage, "ann", "patient")
    add_user(storage, "dr-a")
    assert storage.get_user("ann") == UserRecord(
        username="ann", role="patient", patient_id="p1", unit=None, disabled=False
    )
    assert storage.get_user("nobody") is None
    assert [u.username for u in storage.list_users()] == ["ann", "dr-a", "dr-b"]
    assert storage.password_hash("dr-a") == "hash-of-dr-a"
    assert storage.password_hash("nobody") is None


def test_a_taken_user_name_is_refused_and_the_first_user_kept(storage: AccountStorage) -> None:
    add_user(storage, "dr-a")
    with pytest.raises(DuplicateUser) as raised:
        storage.add_user(
            username="dr-a", role="admin", patient_id=None, password_hash="other", created_at=T0
        )
    assert raised.value.username == "dr-a"
    assert storage.password_hash("dr-a") == "hash-of-dr-a"
    assert [u.role for u in storage.list_users()] == ["clinician"]


def test_unit_preference_and_disabling_are_kept(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    add_user(storage, "dr-a")
    storage.set_unit("dr-a", Unit.MG_DL)
    storage.set_disabled("dr-a", True)
    reopened = accounts_db.open()
    try:
        user = reopened.get_user("dr-a")
        assert user is not None and (user.unit, user.disabled) == (Unit.MG_DL, True)
        reopened.set_disabled("dr-a", False)
        user = reopened.get_user("dr-a")
        assert user is not None and user.disabled is False
    finally:
        reopened.close()


def test_the_patient_registry_is_read(storage: AccountStorage) -> None:
    assert storage.patient_name("p1") == "Ann Example"
    assert storage.patient_name("p9") is None


# -- sessions -------------------------------------------------------------------------------


def add_session(
    storage: AccountStorage, name: str, at: datetime, *, replaces: str | None = None
) -> None:
    storage.add_session(
        session_hash=name,
        username="dr-a",
        csrf_token=f"csrf-{name}",
        created_at=at,
        expires_at=at + timedelta(hours=12),
        replaces_hash=replaces,
    )


def test_sessions_are_found_replaced_expired_and_deleted(storage: AccountStorage) -> None:
    add_user(storage, "dr-a")
    at = T0 + timedelta(microseconds=123_456)  # kept to the millisecond: .123
    add_session(storage, "s1", at)
    assert storage.get_session("s1") == SessionRecord(
        username="dr-a",
        csrf_token="csrf-s1",
        expires_at=datetime(2026, 12, 1, 22, 0, 0, 123_000, tzinfo=UTC),
    )
    add_session(storage, "s2", T0 + timedelta(hours=1), replaces="s1")
    assert storage.get_session("s1") is None  # replaced at login (no fixation)
    add_session(storage, "s3", T0 + timedelta(hours=2))
    # s2 expires at T0+13h, s3 at T0+14h: a session made at T0+14h removes the sessions that
    # expired before it, so s2 goes and s3 stays.
    add_session(storage, "s4", T0 + timedelta(hours=14))
    assert storage.get_session("s2") is None
    assert storage.get_session("s3") is not None  # expires exactly at T0+14h: not before it
    storage.delete_session("s3")
    assert storage.get_session("s3") is None
    assert storage.get_session("s4") is not None


def test_a_new_password_ends_the_users_sessions_only(storage: AccountStorage) -> None:
    add_user(storage, "dr-a")
    add_user(storage, "dr-b")
    add_session(storage, "mine", T0)
    storage.add_session(
        session_hash="theirs",
        username="dr-b",
        csrf_token="c",
        created_at=T0,
        expires_at=T0 + timedelta(hours=12),
        replaces_hash=None,
    )
    storage.set_password_hash("dr-a", "new-hash")
    assert storage.password_hash("dr-a") == "new-hash"
    assert storage.get_session("mine") is None
    assert storage.get_session("theirs") is not None


# -- API tokens -----------------------------------------------------------------------------


def test_tokens_expire_are_revoked_and_remember_their_last_use(storage: AccountStorage) -> None:
    add_user(storage, "dr-a")
    first = storage.add_token(
        token_hash="h1",
        username="dr-a",
        label="ehr",
        created_at=T0,
        expires_at=T0 + timedelta(days=90),
    )
    second = storage.add_token(
        token_hash="h2",
        username="dr-a",
        label="daily",
        created_at=T0,
        expires_at=T0 + timedelta(days=1),
    )
    assert second > first
    found = storage.unrevoked_token("h2")
    assert found is not None and (found.token_id, found.label) == (second, "daily")
    assert found.last_used_at is None
    assert found.state(T0 + timedelta(days=1)) == "expired"  # expiry is the end, exclusive
    assert found.state(T0 + timedelta(hours=23)) == "active"
    storage.set_token_used(first, T0 + timedelta(minutes=5))
    assert storage.revoke_token_id(second) is True
    assert storage.revoke_token_id(9999) is False
    assert storage.unrevoked_token("h2") is None
    listed = storage.list_tokens("dr-a")
    assert [(t.label, t.revoked, t.last_used_at) for t in listed] == [
        ("ehr", False, T0 + timedelta(minutes=5)),
        ("daily", True, None),
    ]
    storage.revoke_token_hash("h1")
    assert storage.unrevoked_token("h1") is None
    assert storage.list_tokens("nobody") == []


def test_nightscout_secrets_are_found_by_hash_until_revoked(storage: AccountStorage) -> None:
    first = storage.add_nightscout_secret(
        secret_hash="n1",
        patient_id="p1",
        device_id="nightscout-p1",
        can_write=True,
        label="xdrip",
        created_at=T0,
    )
    second = storage.add_nightscout_secret(
        secret_hash="n2",
        patient_id="p1",
        device_id="nightscout-p1",
        can_write=False,
        label="follower",
        created_at=T0 + timedelta(minutes=1),
    )
    assert second > first
    found = storage.nightscout_secret("n2")
    assert found is not None
    assert (found.secret_id, found.patient_id, found.device_id) == (second, "p1", "nightscout-p1")
    assert (found.can_write, found.label, found.created_at) == (
        False,
        "follower",
        T0 + timedelta(minutes=1),
    )
    assert storage.nightscout_secret("n1") is not None and storage.nightscout_secret("n3") is None
    assert storage.revoke_nightscout_secret(first) is True
    assert storage.revoke_nightscout_secret(9999) is False
    assert storage.nightscout_secret("n1") is None and storage.nightscout_secret("n2") is not None


def test_a_nightscout_secret_is_stored_as_sha256_of_its_sha1_hex(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    rules = AccountRules(storage, FakeClock())
    _, secret = rules.create_nightscout_secret("p1", "nightscout-p1", can_write=True, label="x")
    header = hashlib.sha1(secret.encode()).hexdigest()  # what xDrip+ sends as api-secret
    rows = accounts_db.sql("SELECT secret_hash FROM nightscout_secrets")
    assert rows == [(hashlib.sha256(header.encode()).hexdigest(),)]
    found = rules.nightscout_uploader(header.upper())  # hex in either case
    assert found is not None and found.patient_id == "p1"
    assert rules.nightscout_uploader(hashlib.sha1(b"a guess").hexdigest()) is None


def test_disabling_ends_sessions_and_revokes_tokens_for_good(storage: AccountStorage) -> None:
    add_user(storage, "dr-a")
    add_session(storage, "s1", T0)
    storage.add_token(
        token_hash="h1",
        username="dr-a",
        label="ehr",
        created_at=T0,
        expires_at=T0 + timedelta(days=9),
    )
    storage.set_disabled("dr-a", True)
    assert storage.get_session("s1") is None and storage.unrevoked_token("h1") is None
    storage.set_disabled("dr-a", False)
    assert storage.unrevoked_token("h1") is None  # enabling does not bring tokens back


# -- consent and its ledger event -----------------------------------------------------------


def grant_record(clinician: str = "dr-a", patient_id: str = "p1") -> GrantRecord:
    return GrantRecord(patient_id=patient_id, clinician=clinician, granted_by="ann", granted_at=T0)


def test_a_grant_and_its_ledger_event_commit_together(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    accounts_db.register_patient("p2", "Bo")
    with storage.consent() as tx:
        assert tx.last_consent_event("p1", "dr-a") is None
        assert tx.insert_grant(grant_record()) is True
        tx.add_ledger_event(
            "p1", {"type": "consent", "event": "consent_granted", "clinician": "dr-a"}
        )
    with storage.consent() as tx:
        assert tx.insert_grant(grant_record()) is False  # already granted: nothing written
        assert tx.insert_grant(grant_record("dr-b")) is True
        assert tx.insert_grant(grant_record("dr-a", "p2")) is True
        assert tx.get_grant("p1", "dr-a") == grant_record()
        assert tx.get_grant("p1", "dr-z") is None
        assert tx.last_consent_event("p1", "dr-a") == "consent_granted"
        assert tx.last_consent_event("p1", "dr-b") is None  # another clinician's event only
    assert storage.grants_for_patient("p1") == [grant_record("dr-a"), grant_record("dr-b")]
    assert storage.granted_patients("dr-a") == ["p1", "p2"]
    with storage.consent() as tx:
        assert tx.delete_grant("p1", "dr-a") is True
        assert tx.delete_grant("p1", "dr-a") is False
        tx.add_ledger_event(
            "p1", {"type": "consent", "event": "consent_revoked", "clinician": "dr-a"}
        )
    assert storage.granted_patients("dr-a") == ["p2"]
    assert [b["event"] for b in accounts_db.ledger_bodies()] == [
        "consent_granted",
        "consent_revoked",
    ]


def test_a_failed_ledger_event_leaves_no_grant(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    for statement in accounts_db.refuse_events:
        accounts_db.sql(statement)
    with (
        pytest.raises(StorageError, match="planted failure") as raised,
        storage.consent() as tx,
    ):
        assert tx.insert_grant(grant_record()) is True
        tx.add_ledger_event("p1", {"type": "consent", "event": "consent_granted"})
    assert raised.value.transient is False
    assert storage.grants_for_patient("p1") == []
    assert accounts_db.sql("SELECT COUNT(*) FROM dash_grants") == [(0,)]
    assert accounts_db.ledger_bodies() == []
    # The connection is usable afterwards: no transaction was left open.
    add_user(storage, "dr-a")
    assert storage.get_user("dr-a") is not None


def test_an_error_inside_the_consent_block_rolls_the_grant_back(storage: AccountStorage) -> None:
    with pytest.raises(RuntimeError), storage.consent() as tx:
        tx.insert_grant(grant_record())
        raise RuntimeError("the caller gave up")
    assert storage.grants_for_patient("p1") == []


def test_a_body_that_is_not_json_is_skipped_when_reading_consent(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    with storage.consent() as tx:
        tx.add_ledger_event(
            "p1", {"type": "consent", "event": "consent_granted", "clinician": "dr-a"}
        )
    accounts_db.sql(
        "INSERT INTO ledger_events (patient_id, body) VALUES ('p1', '{\"consent\" broken')"
    )
    with storage.consent() as tx:
        assert tx.last_consent_event("p1", "dr-a") == "consent_granted"


# -- notes and the access audit -------------------------------------------------------------


def test_notes_are_returned_newest_first(storage: AccountStorage) -> None:
    first = storage.add_note(
        patient_id="p1", author="dr-a", role="clinician", created_at=T0, body="one"
    )
    second = storage.add_note(
        patient_id="p1",
        author="ann",
        role="patient",
        created_at=T0 + timedelta(minutes=1),
        body="two",
    )
    storage.add_note(patient_id="p2", author="dr-a", role="clinician", created_at=T0, body="other")
    assert first.created_at == "2026-12-01T10:00:00.000Z"
    assert second.note_id > first.note_id
    assert [(n.body, n.author, n.created_at) for n in storage.notes("p1", 10)] == [
        ("two", "ann", "2026-12-01T10:01:00.000Z"),
        ("one", "dr-a", "2026-12-01T10:00:00.000Z"),
    ]
    assert [n.body for n in storage.notes("p1", 1)] == ["two"]


def test_the_access_log_is_in_reverse_order_of_writing(storage: AccountStorage) -> None:
    # Written with times out of order: the log follows the writing, not the clock.
    for minute, action in ((5, "page"), (1, "report"), (3, "api.readings")):
        storage.add_audit(
            AuditRecord(
                time=T0 + timedelta(minutes=minute),
                viewer="dr-a",
                role="clinician",
                patient_id="p1",
                action=action,
            )
        )
    storage.add_audit(AuditRecord(time=T0, viewer="x", role="admin", patient_id="p2", action="ws"))
    log = storage.access_log("p1", 2)
    assert [(e.action, e.time) for e in log] == [
        ("api.readings", T0 + timedelta(minutes=3)),
        ("report", T0 + timedelta(minutes=1)),
    ]
    assert [e.viewer for e in storage.access_log("p2", 10)] == ["x"]


def test_a_page_of_views_is_logged_in_order(storage: AccountStorage) -> None:
    storage.add_audits(
        [
            AuditRecord(time=T0, viewer="dr-a", role="clinician", patient_id=p, action="triage")
            for p in ("p1", "p2", "p1")
        ]
    )
    storage.add_audits([])
    assert [(e.viewer, e.action, e.time) for e in storage.access_log("p1", 10)] == [
        ("dr-a", "triage", T0),
        ("dr-a", "triage", T0),
    ]
    assert len(storage.access_log("p2", 10)) == 1


# -- login failures -------------------------------------------------------------------------


@dataclass(frozen=True)
class TenPerFailure:
    forget_s: float = 100.0

    def delay_s(self, failures: int) -> float:
        return 10.0 * failures


def test_login_failures_count_forget_and_survive_a_restart(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    policy = TenPerFailure()
    keyed = [("account:dr-a", policy), ("source:10.0.0.1", policy)]
    assert storage.login_blocked_until(["account:dr-a"]) is None
    assert storage.add_login_failures(keyed, 1000.0, forget_before=0.0) == [1, 1]
    assert storage.login_blocked_until(["account:dr-a"]) == 1010.0  # 1000 + 10·1
    # 50 s later: under forget_s, so the count grows; held off until 1050 + 10·2.
    assert storage.add_login_failures(keyed[:1], 1050.0, forget_before=0.0) == [2]
    assert storage.login_blocked_until(["account:dr-a", "source:10.0.0.1"]) == 1070.0
    storage.close()
    reopened = accounts_db.open()  # a restart keeps the counts
    try:
        assert reopened.login_blocked_until(["source:10.0.0.1"]) == 1010.0
        # 150 s after its last failure (>= forget_s 100): the count starts again at 1.
        assert reopened.add_login_failures(keyed[:1], 1200.0, forget_before=0.0) == [1]
        assert reopened.login_blocked_until(["account:dr-a"]) == 1210.0
        # Keys whose last failure is before forget_before are forgotten.
        other = [("source:10.0.0.2", policy)]
        assert reopened.add_login_failures(other, 5000.0, forget_before=1100.0) == [1]
        assert reopened.login_blocked_until(["source:10.0.0.1"]) is None  # last at 1000
        assert reopened.login_blocked_until(["account:dr-a"]) == 1210.0  # last at 1200
    finally:
        reopened.close()


# -- the account rules over each accounts_db ----------------------------------------------------


@pytest.fixture
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_module, "SCRYPT_N", 2**10)


@pytest.mark.usefixtures("cheap_scrypt")
def test_the_rules_grant_revoke_and_repair_on_every_backend(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    rules = AccountRules(storage, FakeClock())
    rules.add_user("dr-a", Role.CLINICIAN, PASSWORD, None)
    assert rules.grant("p1", "dr-a", "ann").change is ConsentChange.CHANGED
    assert rules.grant("p1", "dr-a", "ann").change is ConsentChange.UNCHANGED
    # A grant row without its event (what old versions could leave) is repaired once.
    accounts_db.sql("DELETE FROM ledger_events")
    assert rules.grant("p1", "dr-a", "ann").change is ConsentChange.REPAIRED
    assert rules.revoke("p1", "dr-a", "ann").change is ConsentChange.CHANGED
    assert rules.revoke("p1", "dr-a", "ann").change is ConsentChange.UNCHANGED
    assert [b["event"] for b in accounts_db.ledger_bodies()] == [
        "consent_granted",
        "consent_revoked",
    ]
    dr_a = rules.get_user("dr-a")
    assert dr_a is not None and rules.visible_patients(dr_a) == frozenset()


@pytest.mark.usefixtures("cheap_scrypt")
def test_the_rules_refuse_a_grant_whose_event_fails(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    rules = AccountRules(storage, FakeClock())
    rules.add_user("dr-a", Role.CLINICIAN, PASSWORD, None)
    for statement in accounts_db.refuse_events:
        accounts_db.sql(statement)
    with pytest.raises(StorageError):
        rules.grant("p1", "dr-a", "ann")
    assert rules.grants_for_patient("p1") == []


@pytest.mark.usefixtures("cheap_scrypt")
async def test_login_session_and_token_through_the_web_face(storage: AccountStorage) -> None:
    clock = FakeClock()
    accounts = Accounts(storage, clock=clock)
    try:
        await accounts.add_user("dr-a", Role.CLINICIAN, PASSWORD)
        assert await accounts.login("dr-a", "wrong password here") is None
        found = await accounts.login("dr-a", PASSWORD)
        assert found is not None
        session, user = found
        assert (user.username, user.unit) == ("dr-a", Unit.MMOL_L)
        assert await accounts.session(session.session_id) == (session, user)
        token = await accounts.create_token("dr-a", "ehr", expires_days=1)
        assert await accounts.token_user(token) == user
        clock.current += timedelta(days=1)
        assert await accounts.token_user(token) is None
        assert await accounts.session(session.session_id) is None  # 12 h are past
    finally:
        await asyncio.to_thread(accounts.close)


# A process that grants consent through the rules and stops just before the ledger event is
# written (the grant row is in the open transaction), saying so, for the test to kill it.
PAUSE_BEFORE_LEDGER_EVENT = r"""
import contextlib, sys, time
from dashboards import accounts
from glucohub.accounts import open_account_storage

storage = open_account_storage(sys.argv[1])
consent = storage.consent

@contextlib.contextmanager
def pausing():
    with consent() as tx:
        def add_ledger_event(patient_id, body):
            print("between", flush=True)
            time.sleep(120)
        tx.add_ledger_event = add_ledger_event
        yield tx

storage.consent = pausing
accounts.SCRYPT_N = 2**10
accounts.grant(storage, "p1", "dr-a", by="ann")
"""


@pytest.mark.usefixtures("cheap_scrypt")
def test_a_grant_killed_before_its_ledger_event_leaves_neither(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    AccountRules(storage, FakeClock()).add_user("dr-a", Role.CLINICIAN, PASSWORD, None)
    with subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_LEDGER_EVENT, accounts_db.where],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "between\n"  # the grant row is written by now
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert storage.grants_for_patient("p1") == []
    assert accounts_db.ledger_bodies() == []


def test_access_tokens_keep_their_roles_are_listed_and_found_by_id(
    accounts_db: AccountBackend, storage: AccountStorage
) -> None:
    accounts_db.register_patient("p2", "Ben")
    rules = AccountRules(storage, FakeClock(T0))
    secret_id, _ = rules.create_nightscout_secret("p1", "nightscout-p1", can_write=True, label="x")
    read_id, read = rules.create_nightscout_token(
        "p1", "nightscout-p1", subject="Mum's phone", roles=["readable"]
    )
    write_id, _ = rules.create_nightscout_token(
        "p2", "nightscout-p2", subject="AAPS", roles=["careportal", "readable"]
    )
    # Nightscout's token shape: the subject abbreviated (lower case, letters and digits), "-"
    assert read.startswith("mumsphone-") and len(read) == len("mumsphone-") + 32
    found = rules.nightscout_uploader(hashlib.sha1(read.encode()).hexdigest())
    assert found is not None and found.secret_id == read_id
    assert (found.roles, found.can_write, found.label) == (("readable",), False, "Mum's phone")
    by_id = rules.nightscout_uploader_by_id(write_id)
    assert by_id is not None and by_id.roles == ("careportal", "readable") and by_id.can_write
    assert [r.secret_id for r in rules.list_nightscout_secrets()] == [secret_id, read_id, write_id]
    assert [r.roles for r in rules.list_nightscout_secrets("p1")] == [(), ("readable",)]
    storage.revoke_nightscout_secret(read_id)
    assert rules.nightscout_uploader_by_id(read_id) is None
    assert [r.secret_id for r in rules.list_nightscout_secrets("p1")] == [secret_id]


def test_the_jwt_key_is_made_once_and_shared(accounts_db: AccountBackend) -> None:
    first, second = accounts_db.open(), accounts_db.open()
    try:
        key = first.nightscout_jwt_key(b"k" * 32)
        assert key == b"k" * 32
        assert second.nightscout_jwt_key(b"other" * 8) == b"k" * 32  # the first one wins
    finally:
        first.close()
        second.close()
