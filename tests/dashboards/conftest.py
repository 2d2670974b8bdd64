"""Fixtures: a world of fakes, the app under aiohttp's test client, and logged-in clients."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboards import accounts as accounts_module
from dashboards.app import create_app
from gateway.settings import DashboardSettings
from gateway.storage.opening import StorageLocation
from tests.dashboards.fakes import PASSWORD, World, build_world

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
META_RE = re.compile(r'<meta name="csrf-token" content="([^"]*)">')

Login = Callable[[str], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests create many users; N=2^10 keeps them fast. test_accounts checks the real default.
    monkeypatch.setattr(accounts_module, "SCRYPT_N", 2**10)


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = build_world(tmp_path / "glucohub.sqlite3")
    yield w  # type: ignore[misc]
    w.accounts.close()


def make_app(
    world: World,
    settings: DashboardSettings | None = None,
    storage: StorageLocation | None = None,
) -> web.Application:
    return create_app(
        settings=settings or DashboardSettings(port=0),
        read_model=world.model,
        live=world.live,
        alerts=world.alerts,
        ledger=world.ledger,
        status=world.status,
        accounts=world.accounts,
        clock=world.clock,
        devices=world.devices,
        storage=storage,
    )


@pytest.fixture
async def app(world: World) -> web.Application:
    return make_app(world)


@pytest.fixture
async def login(app: web.Application) -> AsyncIterator[Login]:
    """login(username) -> a TestClient with its own cookie jar, logged in as that user."""
    clients: list[TestClient[web.Request, web.Application]] = []
    server = TestServer(app)
    await server.start_server()

    async def do_login(username: str) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = TestClient(server)
        await client.start_server()
        clients.append(client)
        if username:
            await login_as(client, username)
        return client

    yield do_login
    for client in clients:
        await client.close()
    await server.close()


async def login_as(
    client: TestClient[web.Request, web.Application], username: str, password: str = PASSWORD
) -> web.StreamResponse | object:
    page = await client.get("/login")
    token = CSRF_RE.search(await page.text())
    assert token is not None
    response = await client.post(
        "/login",
        data={"username": username, "password": password, "csrf_token": token.group(1)},
        allow_redirects=False,
    )
    return response


async def csrf_of(client: TestClient[web.Request, web.Application], path: str = "/alerts") -> str:
    page = await client.get(path)
    found = META_RE.search(await page.text())
    assert found is not None and found.group(1)
    return found.group(1)
