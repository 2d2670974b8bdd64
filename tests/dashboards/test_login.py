"""Login: where it redirects to, how failures are throttled (persisted, per account and per
source) and what it logs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import TCPConnector, web
from aiohttp.test_utils import TestClient, TestServer

from glucohub import accounts as hub_accounts
from glucohub.accounts import open_accounts
from tests.dashboards.conftest import CSRF_RE, login_as, make_app
from tests.dashboards.fakes import PASSWORD, World

Client = TestClient[web.Request, web.Application]
FromAddress = Callable[[str], Awaitable[Client]]


@pytest.fixture
async def from_address(app: web.Application) -> AsyncIterator[FromAddress]:
    """from_address("127.0.0.N") -> a client whose connections come from that loopback
    address, so the server sees distinct sources (Linux routes all of 127/8 to lo)."""
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    clients: list[Client] = []

    async def make(address: str) -> Client:
        client: Client = TestClient(server, connector=TCPConnector(local_addr=(address, 0)))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()
    await server.close()


async def post_login(client: Client, username: str, password: str, next_path: str = "") -> Client:
    page = await client.get("/login")
    token = CSRF_RE.search(await page.text())
    assert token is not None
    form = {"username": username, "password": password, "csrf_token": token.group(1)}
    if next_path:
        form["next"] = next_path
    return await client.post("/login", data=form, allow_redirects=False)  # type: ignore[return-value]


# -- open redirect ------------------------------------------------------------------------

BYPASSES = [
    "//evil.example",
    "//evil.example/x",
    "/\\evil.example",
    "\\/evil.example",
    "\\\\evil.example",
    "/%09/evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    " //evil.example",
    "/ /evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "/%5Cevil.example",
    "/%5C%5Cevil.example",
    "/%252F%252Fevil.example",  # double-encoded
    "/%0a/evil.example",
    "/%0d%0a/evil.example",
    "/%00/evil.example",
    "/\x0b/evil.example",
    "/\u3000/evil.example",
    "/%E3%80%80/evil.example",
    "https:evil.example",
    "https://evil.example/",
    "HTTPS://evil.example",
    "javascript:alert(1)",
    "data:text/html,hi",
    "evil.example",
    "///evil.example",
    "/\\/evil.example",
]


@pytest.mark.parametrize("next_path", BYPASSES)
async def test_login_never_redirects_off_site(from_address: FromAddress, next_path: str) -> None:
    client = await from_address("127.0.0.1")
    response = await post_login(client, "dr-grant", PASSWORD, next_path)
    assert response.status == 303
    assert response.headers["Location"] == "/"  # dr-grant's home page


@pytest.mark.parametrize(
    "next_path",
    ["/patients/pat-a?days=30", "/alerts", "/patients/pat-a/report?days=7&format=html"],
)
async def test_login_returns_to_local_pages(from_address: FromAddress, next_path: str) -> None:
    client = await from_address("127.0.0.1")
    response = await post_login(client, "dr-grant", PASSWORD, next_path)
    assert response.status == 303 and response.headers["Location"] == next_path


async def test_login_form_drops_an_unsafe_next(from_address: FromAddress) -> None:
    client = await from_address("127.0.0.1")
    page = await client.get("/login", params={"next": "/%09/evil.example"})
    assert "evil.example" not in await page.text()


# -- throttling ---------------------------------------------------------------------------


async def test_one_source_cannot_lock_a_user_out_from_elsewhere(
    from_address: FromAddress,
) -> None:
    attacker = await from_address("127.0.0.2")
    statuses = [(await post_login(attacker, "alice", f"guess {i}")).status for i in range(8)]
    assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3
    # The attacker's address is held off, even with the right password ...
    assert (await post_login(attacker, "alice", PASSWORD)).status == 429
    # ... but alice, from her own address, logs in.
    alice = await from_address("127.0.0.3")
    assert (await post_login(alice, "alice", PASSWORD)).status == 303


async def test_one_source_guessing_many_accounts_is_held_off(
    from_address: FromAddress,
) -> None:
    attacker = await from_address("127.0.0.2")
    for name in ("alice", "bob", "dr-grant", "dr-none", "root"):
        assert (await post_login(attacker, name, "password1234")).status == 401
    blocked = await post_login(attacker, "mallory", "password1234")
    assert blocked.status == 429 and int(blocked.headers["Retry-After"]) >= 1


async def test_guessing_one_account_from_many_sources_backs_off_exponentially(
    world: World, from_address: FromAddress
) -> None:
    for n in range(10):
        client = await from_address(f"127.0.1.{n + 1}")
        assert (await post_login(client, "alice", f"guess {n}")).status == 401
    fresh = await from_address("127.0.2.1")
    blocked = await post_login(fresh, "alice", PASSWORD)
    assert blocked.status == 429  # the account is held off, whoever asks
    first_wait = int(blocked.headers["Retry-After"])
    assert first_wait >= 1
    world.clock.current += timedelta(seconds=first_wait)
    another = await from_address("127.0.2.2")
    assert (await post_login(another, "alice", "guess 10")).status == 401
    again = await post_login(fresh, "alice", PASSWORD)
    assert again.status == 429
    assert int(again.headers["Retry-After"]) >= 2 * first_wait  # doubled
    # The hold on an account is short: after the longest delay alice gets in.
    world.clock.current += timedelta(minutes=15)
    assert (await post_login(fresh, "alice", PASSWORD)).status == 303


async def test_throttling_survives_a_restart(world: World, tmp_path: Path) -> None:
    async with TestClient(TestServer(make_app(world))) as client:
        for i in range(5):
            assert (await login_as(client, "alice", f"guess {i}")).status == 401  # type: ignore[attr-defined]
    world.accounts.close()
    # A new hub process: new Accounts and app on the same data directory.
    world.accounts = open_accounts(tmp_path / "glucohub.sqlite3", clock=world.clock)
    async with TestClient(TestServer(make_app(world))) as client:
        response = await login_as(client, "alice")
        assert response.status == 429  # type: ignore[attr-defined]


async def test_failed_logins_are_logged_without_the_password(
    from_address: FromAddress, caplog: pytest.LogCaptureFixture
) -> None:
    client = await from_address("127.0.0.7")
    secret = "my-secret-guess-7731"
    with caplog.at_level(logging.INFO):
        await post_login(client, "alice", secret)
        await post_login(client, "nobody-here", secret)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    messages = [r.getMessage() for r in warnings]
    assert any("alice" in m and "127.0.0.7" in m for m in messages), messages
    assert any("nobody-here" in m and "127.0.0.7" in m for m in messages), messages
    assert all(secret not in r.getMessage() and secret not in str(r.args) for r in caplog.records)
    assert secret not in caplog.text


# -- API tokens ---------------------------------------------------------------------------


async def test_expired_and_revoked_tokens_get_401(
    world: World, from_address: FromAddress, tmp_path: Path
) -> None:
    daily = await world.accounts.create_token("dr-grant", "daily", expires_days=1)
    kept = await world.accounts.create_token("dr-grant", "kept")
    revoked = await world.accounts.create_token("dr-grant", "revoked")
    client = await from_address("127.0.0.1")

    async def status(token: str) -> int:
        auth = {"Authorization": f"Bearer {token}"}
        return (await client.get("/api/v1/patients/pat-a/readings", headers=auth)).status

    assert [await status(t) for t in (daily, kept, revoked)] == [200, 200, 200]
    db = tmp_path / "glucohub.sqlite3"
    [target] = [t for t in hub_accounts.tokens_list(db, "dr-grant") if t.label == "revoked"]
    hub_accounts.tokens_revoke(db, target.token_id)  # from the CLI, while the hub runs
    world.clock.current += timedelta(days=1)
    assert [await status(t) for t in (daily, kept, revoked)] == [401, 200, 401]
