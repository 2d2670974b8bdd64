from __future__ import annotations

import pytest

from tests.dashboards.conftest import Login
from tests.dashboards.fakes import World


async def test_health_and_metrics(login: Login) -> None:
    client = await login("")
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "ok"
    metrics = await client.get("/metrics")
    assert metrics.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "glucohub_readings_total 42" in await metrics.text()


async def test_checkpoint_and_key(world: World, login: Login) -> None:
    client = await login("")
    checkpoint = await client.get("/log/checkpoint")
    assert checkpoint.content_type == "text/plain"
    assert (await checkpoint.text()).startswith("glucohub-local\n2\n")
    assert (await (await client.get("/log/key")).text()) == "glucohub-local+0badc0de+AQID\n"
    world.ledger.note = None
    assert (await client.get("/log/checkpoint")).status == 404


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/log/tile/0/000.p/2", 200),
        ("/log/tile/0/000", 404),  # well-formed, absent
        ("/log/tile/0/../../etc/passwd", 404),  # never reaches the ledger
        ("/log/tile/0/x001/234", 404),
        ("/log/tile/entries/000.p/2", 404),
    ],
)
async def test_tiles(login: Login, path: str, status: int) -> None:
    client = await login("")
    response = await client.get(path)
    assert response.status == status
    if status == 200:
        assert response.content_type == "application/octet-stream"
        assert await response.read() == b"\x01" * 64
        assert "immutable" not in response.headers.get("Cache-Control", "")  # partial tile


async def test_consistency_proof_shape(login: Login) -> None:
    client = await login("")
    ok = await client.get("/log/consistency", params={"old": "1", "new": "2"})
    # The fake returns one 32-byte hash of 0xaa: base64 "qqqq..." (0xaa 0xaa 0xaa -> "qqqq").
    assert await ok.json() == {
        "old_size": 1,
        "new_size": 2,
        "proof": ["qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo="],
    }
    for params in (
        {"old": "2", "new": "1"},
        {"old": "x", "new": "1"},
        {"old": "1"},
        {"old": "1", "new": "9"},
    ):
        assert (await client.get("/log/consistency", params=params)).status == 400


async def test_cosignature_submission(world: World, login: Login) -> None:
    client = await login("")
    good = await client.post("/log/cosignature", data="— witness.example AAAA\n")
    assert good.status == 200 and world.ledger.cosignatures == ["— witness.example AAAA\n"]
    bad = await client.post("/log/cosignature", data="garbage")
    assert bad.status == 400 and "not a signature line" in await bad.text()
    huge = await client.post("/log/cosignature", data="— " + "A" * 9000)
    assert huge.status == 413


@pytest.mark.parametrize(("status", "code"), [("ok", 200), ("degraded", 200), ("stopping", 503)])
async def test_health_status_codes(world: World, login: Login, status: str, code: int) -> None:
    world.status.health = lambda: {"status": status}  # type: ignore[method-assign]
    client = await login("")
    response = await client.get("/healthz")
    assert response.status == code and (await response.json())["status"] == status
