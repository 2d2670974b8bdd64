"""The dashboard on the real hub: run_hub with the dashboard enabled, real SQLite, real ledger,
real alert engine, talked to over HTTP and a WebSocket like a browser would."""

from __future__ import annotations

import asyncio
import json
import random
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub import accounts as hub_accounts
from glucohub.runtime import Running, run_hub
from ledger._b64 import b64url_decode
from ledger.records import open_batch_view

PASSWORD = "a long enough password"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
META_RE = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
ORIGIN = Origin(source=Source.MQTT, topic="test")


def cgm(pid: str, seq: int, value: float, at: datetime) -> Reading:
    return Reading(
        patient_id=pid,
        device_id=f"cgm-{pid}",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=seq,
    )


class Hub:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.running: Running | None = None

    def on_ready(self, running: Running) -> None:
        self.running = running
        self.ready.set()

    @property
    def url(self) -> str:
        assert self.running is not None and self.running.url is not None
        return self.running.url


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    store = Store(tmp_path)
    for pid, name in (("p1", "Ann"), ("p2", "Ben")):
        store.add_patient(Patient(patient_id=pid, display_name=name))
        store.add_device(
            Device(
                device_id=f"cgm-{pid}",
                patient_id=pid,
                kind=DeviceKind.CGM,
                transport=Transport.MQTT,
            )
        )
    store.close()
    db = tmp_path / DB_FILENAME
    hub_accounts.users_add(db, "dr", "clinician", PASSWORD)
    hub_accounts.users_add(db, "ann", "patient", PASSWORD, patient_id="p1")
    hub_accounts.grant(db, "p1", "dr")
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(tmp_path),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    under_test = Hub()
    task = asyncio.create_task(
        run_hub(settings, stop=under_test.stop, on_ready=under_test.on_ready)
    )
    await asyncio.wait_for(under_test.ready.wait(), 20)
    yield under_test
    under_test.stop.set()
    await asyncio.wait_for(task, 30)


async def login(session: aiohttp.ClientSession, base: str, username: str) -> str:
    async with session.get(f"{base}/login") as page:
        token = CSRF_RE.search(await page.text())
    assert token is not None
    form = {"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    async with session.post(f"{base}/login", data=form) as response:
        found = META_RE.search(await response.text())
        assert response.status == 200 and found is not None
        return found.group(1)


async def test_dashboard_on_the_real_hub(hub: Hub) -> None:
    base = hub.url
    assert hub.running is not None
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as dr:
        csrf = await login(dr, base, "dr")
        async with dr.ws_connect(f"{base}/ws") as ws:
            await asyncio.sleep(0.2)  # let the viewer register before publishing
            now = datetime.now(UTC).replace(microsecond=0)
            readings = [
                cgm(pid, i, value, now - timedelta(minutes=5 * (3 - i)))
                for i, value in enumerate((90.0, 70.0, 58.0, 48.0))
                for pid in ("p1", "p2")
            ]
            outcome = await hub.running.hub.submit(origin=ORIGIN, readings=readings)
            assert outcome.accepted == 8
            seen: set[str] = set()
            types: set[str] = set()
            async with asyncio.timeout(10):
                while not {"readings", "alert"} <= types:
                    message = await ws.receive_json()
                    types.add(message["type"])
                    pid = message.get("patient_id") or message.get("alert", {}).get("patient_id")
                    if pid:
                        seen.add(pid)
            assert seen == {"p1"}  # Ben's readings and alerts never reach this clinician

        async with dr.get(f"{base}/api/v1/patients/p1/readings") as response:
            assert len((await response.json())["readings"]) == 4
        async with dr.get(f"{base}/api/v1/patients/p2/readings") as response:
            assert response.status == 404
        async with dr.get(f"{base}/patients/p1") as response:
            assert response.status == 200 and "Ann" in await response.text()
        async with dr.get(f"{base}/") as response:
            assert "Ann" in await response.text() and "Ben" not in await response.text()

        async with dr.get(f"{base}/api/v1/alerts") as response:
            alerts = (await response.json())["alerts"]
        assert alerts and {a["patient_id"] for a in alerts} == {"p1"}
        raised = next(a for a in alerts if a["state"] == "raised")
        async with dr.post(
            f"{base}/api/v1/alerts/{raised['alert_id']}/ack", headers={"X-CSRF-Token": csrf}
        ) as response:
            assert response.status == 200
            assert (await response.json())["acknowledged_by"] == "dr"

        for _ in range(100):  # the batch seals within batch_max_seconds
            async with dr.get(f"{base}/log/checkpoint") as response:
                if response.status == 200:
                    break
            await asyncio.sleep(0.1)
        assert response.status == 200
        async with dr.get(f"{base}/ledger") as response:
            assert "Batches" in await response.text()
        # The first batch with readings holds Ann's and Ben's readings and Ann's alert
        # transitions (the fixture's grant is a ledger event too, maybe sealed before them):
        # dr receives Ann's records of it, each proven against the signed root, and nothing
        # of Ben's, not even inside the JWS.
        model = hub.running.read_model
        for _ in range(100):
            sealed = [b for b in reversed(await model.latest_batches(5)) if b.reading_count]
            if sealed:
                break
            await asyncio.sleep(0.1)
        mixed = sealed[0]
        for _ in range(100):  # and its checkpoint is signed
            async with dr.get(f"{base}/log/checkpoint") as response:
                if int((await response.text()).splitlines()[1]) > mixed.seq:
                    break
            await asyncio.sleep(0.1)
        assert {r.patient_id for r in await model.batch_readings(mixed.seq)} == {"p1", "p2"}
        async with dr.get(f"{base}/log/batch/{mixed.seq}") as response:
            assert response.status == 200 and response.content_type == "application/json"
            text = await response.text()
        payload, records = open_batch_view(text, hub.running.keys.batch_key.public_key())
        assert payload.batch_seq == mixed.seq and payload.record_count > len(records)
        assert {r.record["patient_id"] for r in records} == {"p1"}
        assert any(r.record.get("type") == "alert" for r in records)
        jws_payload = b64url_decode(json.loads(text)["jws"].split(".")[1])
        assert b'"p2"' not in jws_payload and '"p2"' not in text  # quotes: never in base64
        # The batch holds 8 readings, 4 of them Ann's: dr's ledger page counts Ann's only.
        assert mixed.reading_count == 8
        parts = {b.seq: b for b in await model.patient_batches("p1", 5)}
        assert parts[mixed.seq].reading_count == 4
        async with dr.get(f"{base}/ledger") as response:
            page = await response.text()
        assert f"<tr><td>{mixed.seq}</td><td>4</td>" in page

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ann:
        await login(ann, base, "ann")
        async with ann.get(f"{base}/consent") as response:
            text = await response.text()
        assert ">dr<" in text and ">your record<" in text  # Ann sees that dr looked at it
        async with ann.get(f"{base}/patients/p2") as response:
            assert response.status == 404


async def test_unauthenticated_metrics_hold_no_patient_derived_figures(hub: Hub) -> None:
    assert hub.running is not None
    now = datetime.now(UTC).replace(microsecond=0)
    low = [cgm("p1", i, 45.0, now - timedelta(minutes=5 * (1 - i))) for i in range(2)]
    assert (await hub.running.hub.submit(origin=ORIGIN, readings=low)).accepted == 2
    for _ in range(100):
        if await hub.running.read_model.alerts("p1"):
            break
        await asyncio.sleep(0.05)
    assert {a.kind.value for a in await hub.running.read_model.alerts("p1")} >= {"urgent_low"}
    async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{hub.url}/metrics") as got:
        assert got.status == 200
        body = await got.text()
    assert "glucohub_readings_ingested_total 2" in body  # operational figures stay
    assert "alert" not in body and "urgent_low" not in body


async def test_fuzzed_requests_to_the_real_hub_never_give_a_server_error(
    hub: Hub, tmp_path: Path
) -> None:
    """The fuzz run of test_fuzz against the real store and ledger (huge ids reach SQLite)."""
    from tests.dashboards.conftest import make_app
    from tests.dashboards.fakes import build_world
    from tests.dashboards.test_fuzz import SEED, app_routes, fuzz

    world = build_world(tmp_path / "routes" / DB_FILENAME)  # only to list the app's routes
    routes = app_routes(make_app(world))
    world.accounts.close()
    rng = random.Random(SEED + 1)
    failures: list[str] = []
    for username in ("dr", "ann"):
        jar = aiohttp.CookieJar(unsafe=True)
        async with aiohttp.ClientSession(cookie_jar=jar) as session:
            csrf = await login(session, hub.url, username)

            async def send(
                method: str, url: str, data: bytes, headers: dict[str, str]
            ) -> tuple[int, bytes]:
                async with session.request(
                    method, hub.url + url, data=data, headers=headers, allow_redirects=False
                ) as response:
                    return response.status, await response.read()

            failures += [f"{username} {f}" for f in await fuzz(send, routes, csrf, rng, 600)]
    assert failures == [], "\n".join(failures[:40]) + f"\n({len(failures)} in all)"


async def test_a_patient_forgets_their_device_and_its_readings_stop_counting(hub: Hub) -> None:
    base = hub.url
    assert hub.running is not None
    now = datetime.now(UTC).replace(microsecond=0)
    before = await hub.running.hub.submit(origin=ORIGIN, readings=[cgm("p1", 1, 101.0, now)])
    assert before.accepted == 1
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ann:
        csrf = await login(ann, base, "ann")
        async with ann.get(f"{base}/me") as response:
            page = await response.text()
        assert 'action="/me/devices/cgm-p1/forget"' in page and "cgm-p2" not in page

        # Ben's device, or one that does not exist: the same 404, and nothing changes.
        for other in ("cgm-p2", "nope"):
            async with ann.post(
                f"{base}/me/devices/{other}/forget", data={"csrf_token": csrf}
            ) as response:
                assert response.status == 404
                assert "cgm-p2" not in await response.text()
        async with ann.post(f"{base}/me/devices/cgm-p1/forget", data={}) as response:
            assert response.status == 403  # no CSRF token: refused, device kept

        async with ann.post(
            f"{base}/me/devices/cgm-p1/forget", data={"csrf_token": csrf}
        ) as response:
            assert response.status == 200
            page = await response.text()
        assert "is forgotten: the hub no longer takes readings from it" in page
        assert 'action="/me/devices/cgm-p1/forget"' not in page
        async with ann.post(
            f"{base}/me/devices/cgm-p1/forget", data={"csrf_token": csrf}
        ) as response:
            assert response.status == 404  # already forgotten

    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as dr:
        csrf = await login(dr, base, "dr")
        async with dr.post(
            f"{base}/me/devices/cgm-p2/forget", data={"csrf_token": csrf}
        ) as response:
            assert response.status == 403  # a clinician forgets nobody's device

    devices = {d.device_id: d.active for d in await hub.running.read_model.list_devices()}
    assert devices == {"cgm-p1": False, "cgm-p2": True}
    # What it sent before stays; what it sends now is refused, not stored.
    after = await hub.running.hub.submit(
        origin=ORIGIN, readings=[cgm("p1", 2, 102.0, now + timedelta(minutes=1))]
    )
    assert after.accepted == 0 and after.rejected == 1
    kept = await hub.running.read_model.readings("p1", since=now - timedelta(minutes=1))
    assert [r.value for r in kept] == [101.0]
