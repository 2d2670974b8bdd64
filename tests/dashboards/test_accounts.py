"""Accounts: scrypt hashes, sessions, consent, audit and tokens, through the async and CLI faces."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards import accounts
from dashboards.accounts import (
    AccountError,
    ConsentChange,
    Role,
    hash_password,
    verify_password,
)
from gateway.model import Patient
from gateway.storage.sqlite_migrations import migrate
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub import accounts as hub_accounts
from glucohub.accounts import open_accounts
from tests.dashboards.fakes import FakeClock

PASSWORD = "a long enough password"


def hub_db(tmp_path: Path) -> Path:
    """A hub database whose patient registry holds p1, p-ann and zv-7731-q."""
    store = Store(tmp_path / "hub")
    store.add_patient(Patient(patient_id="p1", display_name="Ann Example"))
    store.add_patient(Patient(patient_id="p-ann", display_name="Annabel Lee"))
    store.add_patient(Patient(patient_id="zv-7731-q", display_name="Zarqa Vellacott"))
    store.close()
    return store.path


def test_hash_stores_its_parameters_and_salt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "SCRYPT_N", 2**15)  # the real default, not the test's
    first = hash_password(PASSWORD)
    second = hash_password(PASSWORD)
    scheme, n, r, p, salt, digest = first.split("$")
    assert (scheme, n, r, p) == ("scrypt", "32768", "8", "1")
    assert len(salt) == 24 and len(digest) == 44  # base64 of 16 and 32 bytes
    assert first != second  # a fresh salt each time
    assert verify_password(PASSWORD, first) and verify_password(PASSWORD, second)
    assert not verify_password(PASSWORD + "x", first)


def test_verify_uses_the_stored_cost_not_the_current_default() -> None:
    old = hash_password(PASSWORD, n=2**11)
    assert old.split("$")[1] == "2048"
    assert verify_password(PASSWORD, old)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "scrypt$",
        "bcrypt$1$2$3$4$5",
        "scrypt$x$8$1$AAAA$AAAA",
        "scrypt$1024$8$1$!!$AAAA",
        "scrypt$1000$8$1$AAAA$AAAA",  # N not a power of two
        "scrypt$1073741824$8$1$AAAA$AAAA",  # 2^30: would need 1 TiB
    ],
)
def test_malformed_hashes_never_match(stored: str) -> None:
    assert verify_password(PASSWORD, stored) is False


@given(st.text(max_size=80))
def test_verify_never_raises(stored: str) -> None:
    assert verify_password(PASSWORD, stored) in (True, False)


def test_cli_functions_validate(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    with pytest.raises(AccountError, match="role must be one of"):
        hub_accounts.users_add(db, "x", "superuser", PASSWORD)
    with pytest.raises(AccountError, match="at least 8"):
        hub_accounts.users_add(db, "y", "admin", "short")
    with pytest.raises(AccountError, match="needs --patient "):
        hub_accounts.users_add(db, "z", "patient", PASSWORD)  # a patient user needs a patient id
    with pytest.raises(AccountError, match="username"):
        hub_accounts.users_add(db, "Bad Name", "admin", PASSWORD)
    with pytest.raises(AccountError, match="not a clinician"):
        hub_accounts.users_add(db, "pat", "patient", PASSWORD, patient_id="p1")
        hub_accounts.grant(db, "p1", "pat")


def test_secrets_are_not_stored_in_the_clear(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    token = hub_accounts.tokens_create(db, "dr-who", "ehr")
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert PASSWORD not in dump and token not in dump and token[4:] not in dump


async def test_sessions_expire_and_end_on_password_change(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    clock = FakeClock()
    acc = open_accounts(db, clock=clock)
    try:
        found = await acc.login("dr-who", PASSWORD)
        assert found is not None
        session, user = found
        assert (
            user.role is Role.CLINICIAN and user.unit is Unit.MMOL_L
        )  # no choice made: the default
        assert session.expires_at == clock.now() + timedelta(hours=12)
        assert await acc.session(session.session_id) is not None
        clock.current += timedelta(hours=12)
        assert await acc.session(session.session_id) is None  # expired at exactly 12 h
        clock.current -= timedelta(hours=12)
        hub_accounts.users_passwd(db, "dr-who", PASSWORD + "!")
        assert await acc.session(session.session_id) is None  # a new password ends sessions
        assert await acc.login("dr-who", PASSWORD) is None
        assert await acc.login("dr-who", PASSWORD + "!") is not None
    finally:
        acc.close()


async def test_disabling_ends_sessions_and_tokens(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    acc = open_accounts(db)
    try:
        found = await acc.login("dr-who", PASSWORD)
        assert found is not None
        token = await acc.create_token("dr-who", "ehr")
        assert (await acc.token_user(token)) is not None
        hub_accounts.users_disable(db, "dr-who")
        assert await acc.session(found[0].session_id) is None
        assert await acc.token_user(token) is None
        assert await acc.login("dr-who", PASSWORD) is None
        hub_accounts.users_disable(db, "dr-who", disabled=False)
        assert await acc.token_user(token) is None  # revoked tokens stay revoked
        assert await acc.login("dr-who", PASSWORD) is not None
    finally:
        acc.close()


async def test_visibility_by_role_and_consent(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    hub_accounts.users_add(db, "ann", "patient", PASSWORD, patient_id="p-ann")
    hub_accounts.users_add(db, "root", "admin", PASSWORD)
    events: list[dict[str, str]] = []
    assert hub_accounts.grant(db, "p-ann", "dr-who", by="cli") is ConsentChange.CHANGED
    assert hub_accounts.grant(db, "p-ann", "dr-who") is ConsentChange.UNCHANGED  # no new event
    acc = open_accounts(db, on_consent_change=events.append)
    try:
        users = {name: await acc.get_user(name) for name in ("dr-who", "ann", "root")}
        visible = {n: await acc.visible_patients(u) for n, u in users.items() if u}
        assert visible == {
            "dr-who": frozenset({"p-ann"}),
            "ann": frozenset({"p-ann"}),
            "root": frozenset(),  # the admin sees no health data nobody consented to
        }
        assert await acc.revoke("p-ann", "dr-who", by="ann")
        assert not await acc.revoke("p-ann", "dr-who", by="ann")
        who = users["dr-who"]
        assert who is not None and await acc.visible_patients(who) == frozenset()
        assert acc.consent_version == 1
    finally:
        acc.close()
    assert [(e["event"], e["by"]) for e in events] == [("consent_revoked", "ann")]
    ledger = [json.loads(body) for (body,) in sqlite3.connect(db).execute(
        "SELECT body FROM ledger_events ORDER BY id")]  # fmt: skip
    assert [(e["type"], e["event"], e["by"]) for e in ledger] == [
        ("consent", "consent_granted", "cli"),
        ("consent", "consent_revoked", "ann"),
    ]
    assert ledger[1] == events[0] and all(e["time"].endswith("Z") for e in ledger)


async def test_access_log_newest_first(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    clock = FakeClock()
    acc = open_accounts(db, clock=clock)
    try:
        user = await acc.get_user("dr-who")
        assert user is not None
        await acc.record_view(user, "p1", "page")
        clock.current += timedelta(minutes=1)
        await acc.record_view(user, "p1", "api.readings")
        await acc.record_view(user, "p2", "page")
        log = await acc.access_log("p1")
        assert [(e.action, e.viewer, e.role) for e in log] == [
            ("api.readings", "dr-who", Role.CLINICIAN),
            ("page", "dr-who", Role.CLINICIAN),
        ]
    finally:
        acc.close()


# -- passwords: NCSC-style deny list, context words, no composition rules -------------------


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "12345678",
        "Password1!",
        "qwertyuiop",
        "iloveyou",
        "letmein1",
        "zarqavellacott",  # the patient's name
        "Zarqa Vellacott",
        "vellacott2026",
        "zv-7731-q",  # the patient's id
        "zv-7731-q!",
        "ann-the-user",  # the user name
        "ann-the-user1",
        "glucohub",  # the service
        "glucohub2026",
        "aaaaaaaaaaaaaaaa",
    ],
)
def test_common_and_context_passwords_are_refused(tmp_path: Path, password: str) -> None:
    db = hub_db(tmp_path)
    with pytest.raises(AccountError, match="password"):
        hub_accounts.users_add(db, "ann-the-user", "patient", password, patient_id="zv-7731-q")
    hub_accounts.users_add(db, "ann-the-user", "patient", PASSWORD, patient_id="zv-7731-q")
    with pytest.raises(AccountError, match="password"):
        hub_accounts.users_passwd(db, "ann-the-user", password)


def test_the_username_is_refused_as_a_password(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    with pytest.raises(AccountError, match="user name"):
        hub_accounts.users_add(db, "nurse.ratched", "clinician", "nurse.ratched")


@pytest.mark.parametrize(
    "password",
    [
        "qzmwkxrt",  # 8 random lower-case letters: no composition rule asks for more
        "correct horse battery staple",
        "three random words: kettle, ocean, velvet " * 5,  # a long passphrase (215 chars)
        "Tr0ub4dor&3",
    ],
)
def test_strong_passwords_and_long_passphrases_are_accepted(tmp_path: Path, password: str) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", password)

    async def login() -> object:
        acc = open_accounts(db)
        try:
            return await acc.login("dr-who", password)
        finally:
            acc.close()

    assert asyncio.run(login()) is not None


def test_a_refused_password_says_why_in_one_line(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    with pytest.raises(AccountError) as caught:
        hub_accounts.users_add(db, "dr-who", "clinician", "password")
    message = str(caught.value)
    assert "\n" not in message and "common" in message


# -- patients must exist ------------------------------------------------------------------


def test_accounts_and_grants_need_a_registered_patient(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    with pytest.raises(AccountError, match="unknown patient 'NOPE'"):
        hub_accounts.users_add(db, "nope", "patient", PASSWORD, patient_id="NOPE")
    with pytest.raises(AccountError, match="unknown patient 'NOPE'"):
        hub_accounts.grant(db, "NOPE", "dr-who")
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert "NOPE" not in dump


async def test_the_web_consent_path_refuses_an_unknown_patient(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    acc = open_accounts(db)
    try:
        with pytest.raises(AccountError, match="unknown patient"):
            await acc.grant("NOPE", "dr-who", by="someone")
        assert await acc.grant("p1", "dr-who", by="ann")
    finally:
        acc.close()


# -- API tokens: expiry, listing, revocation one by one ---------------------------------------


async def test_tokens_expire(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    clock = FakeClock()
    acc = open_accounts(db, clock=clock)
    try:
        default = await acc.create_token("dr-who", "ehr")
        short = await acc.create_token("dr-who", "lab", expires_days=1)
        clock.current += timedelta(days=1)
        assert await acc.token_user(short) is None  # expired at exactly one day
        assert await acc.token_user(default) is not None
        clock.current += timedelta(days=89) - timedelta(seconds=1)
        assert await acc.token_user(default) is not None
        clock.current += timedelta(seconds=1)
        assert await acc.token_user(default) is None  # 90 days by default
    finally:
        acc.close()


async def test_tokens_are_listed_without_secrets_and_revoked_one_by_one(tmp_path: Path) -> None:
    db = hub_db(tmp_path)
    hub_accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    first = hub_accounts.tokens_create(db, "dr-who", "ehr", expires_days=30)
    second = hub_accounts.tokens_create(db, "dr-who", "lab")
    clock = FakeClock()
    acc = open_accounts(db, clock=clock)
    try:
        assert await acc.token_user(second) is not None
    finally:
        acc.close()
    listed = hub_accounts.tokens_list(db, "dr-who")
    assert [t.label for t in listed] == ["ehr", "lab"]
    assert listed[0].expires_at - listed[0].created_at == timedelta(days=30)
    assert listed[0].last_used_at is None and listed[1].last_used_at == clock.now()
    assert all(first not in repr(t) and second not in repr(t) for t in listed)
    hub_accounts.tokens_revoke(db, listed[0].token_id)
    acc = open_accounts(db)
    try:
        assert await acc.token_user(first) is None
        assert await acc.token_user(second) is not None  # the other one still works
    finally:
        acc.close()
    assert [t.revoked for t in hub_accounts.tokens_list(db, "dr-who")] == [True, False]
    with pytest.raises(AccountError, match="no token 999"):
        hub_accounts.tokens_revoke(db, 999)


def test_token_rows_from_before_expiry_keep_working_for_90_days(tmp_path: Path) -> None:
    db = tmp_path / DB_FILENAME
    # A database at schema 5 (migration 6 gives tokens ids and expiry), with one token row.
    old = sqlite3.connect(db, isolation_level=None)
    migrate(old, FakeClock().now(), upto=5)
    token = "ghk_" + "x" * 43
    old.execute(
        "INSERT INTO dash_users VALUES ('dr-who', 'clinician', NULL, ?, 'mg/dL', 0, "
        "'2024-01-01T00:00:00.000Z')",
        (hash_password(PASSWORD),),
    )
    old.execute(
        "INSERT INTO dash_tokens VALUES (?, 'dr-who', 'old', '2024-01-01T00:00:00.000Z', 0)",
        (hashlib.sha256(token.encode()).hexdigest(),),
    )
    old.commit()
    old.close()
    clock = FakeClock()

    async def user_at(offset: timedelta) -> object:
        clock.current = upgrade + offset
        acc = open_accounts(db, clock=clock)
        try:
            return await acc.token_user(token)
        finally:
            acc.close()

    upgrade = clock.now()
    assert asyncio.run(user_at(timedelta(0))) is not None
    assert asyncio.run(user_at(timedelta(days=90) - timedelta(seconds=1))) is not None
    assert asyncio.run(user_at(timedelta(days=90))) is None
    [listed] = hub_accounts.tokens_list(db, "dr-who")
    assert listed.label == "old" and listed.expires_at == upgrade + timedelta(days=90)
