"""Accounts: scrypt hashes, sessions, consent, audit and tokens, through the async and CLI faces."""

from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboards import accounts
from dashboards.accounts import AccountError, Accounts, Role, hash_password, verify_password
from gateway.units import Unit
from tests.dashboards.fakes import FakeClock

PASSWORD = "a long enough password"


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
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    with pytest.raises(AccountError, match="role must be one of"):
        accounts.users_add(db, "x", "superuser", PASSWORD)
    with pytest.raises(AccountError, match="at least 8"):
        accounts.users_add(db, "y", "admin", "short")
    with pytest.raises(AccountError, match="patient-id"):
        accounts.users_add(db, "z", "patient", PASSWORD)  # a patient user needs a patient id
    with pytest.raises(AccountError, match="username"):
        accounts.users_add(db, "Bad Name", "admin", PASSWORD)
    with pytest.raises(AccountError, match="not a clinician"):
        accounts.users_add(db, "pat", "patient", PASSWORD, patient_id="p1")
        accounts.grant(db, "p1", "pat")


def test_secrets_are_not_stored_in_the_clear(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    token = accounts.tokens_create(db, "dr-who", "ehr")
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert PASSWORD not in dump and token not in dump and token[4:] not in dump


async def test_sessions_expire_and_end_on_password_change(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    clock = FakeClock()
    acc = Accounts.open(db, clock=clock)
    try:
        found = await acc.login("dr-who", PASSWORD)
        assert found is not None
        session, user = found
        assert user.role is Role.CLINICIAN and user.unit is Unit.MG_DL
        assert session.expires_at == clock.now() + timedelta(hours=12)
        assert await acc.session(session.session_id) is not None
        clock.current += timedelta(hours=12)
        assert await acc.session(session.session_id) is None  # expired at exactly 12 h
        clock.current -= timedelta(hours=12)
        accounts.users_passwd(db, "dr-who", PASSWORD + "!")
        assert await acc.session(session.session_id) is None  # a new password ends sessions
        assert await acc.login("dr-who", PASSWORD) is None
        assert await acc.login("dr-who", PASSWORD + "!") is not None
    finally:
        acc.close()


async def test_disabling_ends_sessions_and_tokens(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    acc = Accounts.open(db)
    try:
        found = await acc.login("dr-who", PASSWORD)
        assert found is not None
        token = await acc.create_token("dr-who", "ehr")
        assert (await acc.token_user(token)) is not None
        accounts.users_disable(db, "dr-who")
        assert await acc.session(found[0].session_id) is None
        assert await acc.token_user(token) is None
        assert await acc.login("dr-who", PASSWORD) is None
        accounts.users_disable(db, "dr-who", disabled=False)
        assert await acc.token_user(token) is None  # revoked tokens stay revoked
        assert await acc.login("dr-who", PASSWORD) is not None
    finally:
        acc.close()


async def test_visibility_by_role_and_consent(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    accounts.users_add(db, "ann", "patient", PASSWORD, patient_id="p-ann")
    accounts.users_add(db, "root", "admin", PASSWORD)
    events: list[dict[str, str]] = []
    assert accounts.grant(db, "p-ann", "dr-who", by="cli", on_consent_change=events.append)
    assert not accounts.grant(db, "p-ann", "dr-who", on_consent_change=events.append)  # no-op
    acc = Accounts.open(db, on_consent_change=events.append)
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
    assert [(e["event"], e["by"]) for e in events] == [
        ("consent_granted", "cli"),
        ("consent_revoked", "ann"),
    ]
    assert all(e["time"].endswith("Z") for e in events)


async def test_access_log_newest_first(tmp_path: Path) -> None:
    db = tmp_path / "hub.sqlite3"
    accounts.users_add(db, "dr-who", "clinician", PASSWORD)
    clock = FakeClock()
    acc = Accounts.open(db, clock=clock)
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
