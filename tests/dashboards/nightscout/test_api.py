"""Nightscout API v1 on the real hub (run_hub: real SQLite, pipeline, ledger, alerts), spoken
to over HTTP the way the uploaders and followers do.

Uploads replay what the apps send, from their public source:
- xDrip+ (NightscoutFoundation/xDrip, NightscoutUploader.java): GET status.json first, then one
  POST of every pending entry to /api/v1/entries (sgv, mbg and cal together), `api-secret` =
  SHA-1 hex of the secret from the URL's user part, the body gzipped with no length (chunked),
  and the same entries again when an upload is retried.
- Juggluco (j-kaltes/Juggluco, NightPost.java and net/watchserver/uploader.cpp): a plain JSON
  array with Content-Length and `api-secret`, success only on status 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.model import (
    AlertKind,
    Device,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.storage.contract import StoredDeadLetter
from gateway.store import Store
from gateway.units import Unit
from glucohub.cli import main as cli
from glucohub.runtime import Running, run_hub

CET = timezone(timedelta(hours=1))
PATIENTS = {"p1": "Ann", "p2": "Ben"}


@dataclass
class Hub:
    running: Running
    url: str
    data_dir: Path
    secrets: dict[str, str]  # "p1", "p1-read", "p2" -> secret


def _secret(data_dir: Path, *args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["nightscout", "secret", "--data-dir", str(data_dir), *args])
    assert code == 0, err.getvalue()
    lines = dict(line.split(": ", 1) for line in out.getvalue().splitlines())
    secret = lines["secret"]
    # the URL xDrip+ takes: the secret as the URL's user part, API v1 path
    assert lines["xDrip+ base URL"].endswith(f"://{secret}@127.0.0.1:8080/api/v1/")
    return secret


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    store = Store(tmp_path)
    for pid, name in PATIENTS.items():
        store.add_patient(Patient(patient_id=pid, display_name=name))
    store.add_device(
        Device(device_id="cgm-p1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()
    secrets = {
        "p1": _secret(tmp_path, "--patient", "p1", "--label", "xdrip"),
        "p1-read": _secret(tmp_path, "--patient", "p1", "--read-only", "--label", "follower"),
        "p2": _secret(tmp_path, "--patient", "p2"),
    }
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(tmp_path),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    holder: list[Running] = []

    def on_ready(running: Running) -> None:
        holder.append(running)
        ready.set()

    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=on_ready))
    await asyncio.wait_for(ready.wait(), 20)
    running = holder[0]
    assert running.url is not None
    try:
        yield Hub(running=running, url=running.url, data_dir=tmp_path, secrets=secrets)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def sha1(secret: str) -> str:
    return hashlib.sha1(secret.encode()).hexdigest()


def xdrip_sgv(at: datetime, sgv: int, direction: str) -> dict[str, object]:
    """One entry as populateV1APIBGEntry builds it (local time with a +0100 offset)."""
    local = at.astimezone(CET).strftime("%Y-%m-%dT%H:%M:%S.000+0100")
    return {
        "device": "xDrip-DexcomG6",
        "date": int(at.timestamp() * 1000),
        "dateString": local,
        "sgv": sgv,
        "delta": 0.0,
        "direction": direction,
        "type": "sgv",
        "filtered": sgv * 1000,
        "unfiltered": sgv * 1000,
        "rssi": 100,
        "noise": 1,
        "sysTime": local,
    }


def a_day(end: datetime) -> list[dict[str, object]]:
    """288 five-minute entries ending at `end`: flat at 120 with xDrip+'s arrow, then the
    last three falling 12 mg/dL per 5 minutes, uploaded with "NONE" (no arrow)."""
    entries = []
    for i in range(288):
        at = end - timedelta(minutes=5 * (287 - i))
        falling = i - 284  # 1, 2, 3 for the last three
        if falling > 0:
            entries.append(xdrip_sgv(at, 120 - 12 * falling, "NONE"))
        else:
            entries.append(xdrip_sgv(at, 120, "Flat"))
    return entries


async def chunks(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), 4096):
        yield data[start : start + 4096]


async def xdrip_upload(
    http: aiohttp.ClientSession, hub: Hub, secret: str, entries: list[dict[str, object]]
) -> tuple[int, Any]:
    """NightscoutUploader.doRESTUploadTo: status first, then the gzipped array (chunked)."""
    headers = {"api-secret": sha1(secret)}
    async with http.get(f"{hub.url}/api/v1/status.json", headers=headers) as response:
        assert response.status == 200
        assert not (await response.json())["version"].startswith(("0.6", "0.7", "0.8"))
    body = gzip.compress(json.dumps(entries).encode())
    async with http.post(
        f"{hub.url}/api/v1/entries",
        data=chunks(body),
        headers={**headers, "Content-Type": "application/json", "Content-Encoding": "gzip"},
    ) as response:
        return response.status, await response.json()


async def get(
    http: aiohttp.ClientSession, hub: Hub, path: str, secret: str | None, **params: str
) -> tuple[int, Any]:
    headers = {"api-secret": sha1(secret)} if secret else {}
    async with http.get(f"{hub.url}{path}", headers=headers, params=params) as response:
        return response.status, await response.json()


async def stored(hub: Hub, pid: str) -> list[tuple[datetime, float]]:
    found = await hub.running.read_model.readings(
        pid, since=datetime.now(UTC) - timedelta(days=3), kinds=(ReadingKind.CGM_GLUCOSE,)
    )
    return sorted((r.time, r.value) for r in found)


async def sealed(hub: Hub, pid: str) -> int:
    return sum(b.reading_count for b in await hub.running.read_model.patient_batches(pid, 50))


async def alert_kinds(hub: Hub, pid: str) -> set[AlertKind]:
    return {a.kind for a in await hub.running.read_model.alerts(pid)}


def dead_letters(hub: Hub) -> list[StoredDeadLetter]:
    store = Store(hub.data_dir)
    try:
        return store.dead_letters()
    finally:
        store.close()


UNAUTHORIZED = {"status": 401, "message": "Unauthorized", "description": "Invalid/Missing"}


async def test_xdrip_uploads_a_day_resends_it_and_followers_read_it_back(hub: Hub) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    day = a_day(end)
    meter = {"device": "xDrip-DexcomG6", "type": "mbg", "date": day[-1]["date"], "mbg": 101.0}
    cal = {"device": "xDrip-DexcomG6", "type": "cal", "date": day[-1]["date"], "slope": 850.0}
    async with aiohttp.ClientSession() as http:
        status, body = await xdrip_upload(http, hub, hub.secrets["p1"], [*day, meter, cal])
        assert status == 200
        assert isinstance(body, list) and len(body) == 290  # every entry, none refused
        ids = {e["_id"] for e in body if e["type"] != "cal"}
        assert len(ids) == 289
        # a retry after a lost response sends the same entries: nothing new is stored
        status, again = await xdrip_upload(http, hub, hub.secrets["p1"], [*day, meter, cal])
        assert status == 200 and {e["_id"] for e in again if e["type"] != "cal"} == ids
        rows = await stored(hub, "p1")
        assert len(rows) == 288
        assert rows[-1] == (end, 84.0)

        # follower reads: the query shapes of Nightscout followers
        since = int((end - timedelta(hours=24)).timestamp() * 1000)
        status, sgvs = await get(
            http,
            hub,
            "/api/v1/entries/sgv.json",
            hub.secrets["p1-read"],
            count="300",
            **{"find[date][$gte]": str(since)},
        )
        assert status == 200 and isinstance(sgvs, list)
        assert [e["sgv"] for e in sgvs[:5]] == [84, 96, 108, 120, 120]
        assert len(sgvs) == 288 and all(e["type"] == "sgv" for e in sgvs)
        newest = sgvs[0]
        assert newest["date"] == int(end.timestamp() * 1000)
        assert newest["dateString"] == end.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        # uploaded without an arrow: the last 15 minutes (120, 108, 96, 84) fall 2.4 mg/dL/min,
        # SingleDown, -12 per 5 minutes; xDrip+'s own arrows are kept
        assert (newest["direction"], newest["delta"]) == ("SingleDown", -12.0)
        assert sgvs[4]["direction"] == "Flat" and sgvs[4]["noise"] == 1

        status, current = await get(
            http, hub, "/api/v1/entries/current.json", hub.secrets["p1-read"]
        )
        assert status == 200 and current == [newest]
        status, recent = await get(http, hub, "/api/v1/entries.json", hub.secrets["p1-read"])
        assert status == 200 and isinstance(recent, list) and len(recent) == 10
        assert (recent[0]["type"], recent[0]["mbg"]) == ("mbg", 101)  # the meter reading
        iso_since = (end - timedelta(minutes=12)).isoformat()
        status, window = await get(
            http,
            hub,
            "/api/v1/entries.json",
            hub.secrets["p1-read"],
            count="100",
            **{"find[dateString][$gte]": iso_since, "find[type]": "sgv"},
        )
        assert status == 200 and [e["sgv"] for e in window] == [84, 96, 108]

        # entries reach the ledger like any reading
        async with asyncio.timeout(10):
            while await sealed(hub, "p1") < 289:  # noqa: ASYNC110 - the ledger has no event
                await asyncio.sleep(0.1)


async def test_juggluco_posts_plain_json_and_entries_another_app_sent_are_stored_once(
    hub: Hub,
) -> None:
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    async with aiohttp.ClientSession() as http:
        assert (await xdrip_upload(http, hub, hub.secrets["p1"], a_day(end)[-3:]))[0] == 200
        # mkuploaditem's format, one sensor's pending items in one array
        items = [
            {
                "type": "sgv",
                "device": "3MH005XNBY4",
                "dateString": (end + timedelta(minutes=m)).strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
                "date": int((end + timedelta(minutes=m)).timestamp()) * 1000,
                "sgv": sgv,
                "delta": -1.0,
                "direction": "Flat",
                "noise": 1,
                "filtered": sgv * 1000,
                "unfiltered": sgv * 1000,
                "rssi": 100,
            }
            for m, sgv in ((-5, 96), (0, 84), (1, 83))
        ]
        body = json.dumps(items, separators=(",", ":")).encode()
        async with http.post(
            f"{hub.url}/api/v1/entries",
            data=body,
            headers={
                "api-secret": sha1(hub.secrets["p1"]),
                "Content-Type": "application/json",
                "Content-Length": str(len(body)),
            },
        ) as response:
            assert response.status == 200  # Juggluco counts nothing else as sent
        # xDrip+ sent 96 and 84 at the same times: one patient, one Nightscout device
        rows = await stored(hub, "p1")
        assert [v for _, v in rows] == [108.0, 96.0, 84.0, 83.0]


async def test_credentials_as_nightscout_takes_them(hub: Hub) -> None:
    p1 = hub.secrets["p1"]
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"api-secret": sha1("not the secret")}, {"api-secret": p1}):
            async with http.get(f"{hub.url}/api/v1/entries.json", headers=headers) as response:
                assert response.status == 401
                assert await response.json() == UNAUTHORIZED
        for query, headers in (
            ({"token": p1}, {}),
            ({"secret": sha1(p1)}, {}),
            ({}, {"Authorization": f"Bearer {p1}"}),
            ({}, {"api-secret": f"token={p1}"}),  # how py-nightscout passes a token
        ):
            async with http.get(
                f"{hub.url}/api/v1/entries.json", params=query, headers=headers
            ) as response:
                assert response.status == 200, (query, headers)

        # verifyauth answers 200 whatever the credential, and says what it may do
        status, body = await get(http, hub, "/api/v1/verifyauth", None)
        assert status == 200 and body["message"]["message"] == "UNAUTHORIZED"
        status, body = await get(http, hub, "/api/v1/verifyauth", hub.secrets["p1-read"])
        assert body["message"]["canRead"] and not body["message"]["canWrite"]
        status, body = await get(http, hub, "/api/v1/verifyauth", p1)
        assert body["message"]["canWrite"]
        status, body = await get(http, hub, "/api/v1/status", None)
        assert (status, body) == (401, UNAUTHORIZED)

        # a read-only secret reads but never writes
        entry = xdrip_sgv(datetime.now(UTC) - timedelta(minutes=1), 150, "Flat")
        async with http.post(
            f"{hub.url}/api/v1/entries",
            json=[entry],
            headers={"api-secret": sha1(hub.secrets["p1-read"])},
        ) as response:
            assert (response.status, await response.json()) == (401, UNAUTHORIZED)
        assert await stored(hub, "p1") == []

    # a revoked secret is refused at once
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["nightscout", "revoke", "1", "--data-dir", str(hub.data_dir)]) == 0
    async with aiohttp.ClientSession() as http:
        status, body = await get(http, hub, "/api/v1/entries.json", p1)
        assert (status, body) == (401, UNAUTHORIZED)


async def test_one_patients_secret_never_reaches_another_patients_entries(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:
        assert (await xdrip_upload(http, hub, hub.secrets["p1"], a_day(now)[-6:]))[0] == 200
        mine = [xdrip_sgv(now - timedelta(minutes=m), 201, "Flat") for m in (0, 5, 10)]
        # a field naming the other patient changes nothing: the secret decides
        status, _ = await xdrip_upload(
            http, hub, hub.secrets["p2"], [{**e, "patient_id": "p1"} for e in mine]
        )
        assert status == 200
        for path in (
            "/api/v1/entries.json",
            "/api/v1/entries/",
            "/api/v1/entries/sgv.json",
            "/api/v1/entries/current",
        ):
            status, body = await get(http, hub, path, hub.secrets["p2"], count="1000")
            assert status == 200 and isinstance(body, list) and body
            assert {e["sgv"] for e in body} == {201}, path
    assert {v for _, v in await stored(hub, "p1")} == {120.0, 108.0, 96.0, 84.0}
    assert {v for _, v in await stored(hub, "p2")} == {201.0}


async def test_bad_uploads_get_nightscout_errors_and_dead_letters_never_a_500(hub: Hub) -> None:
    headers = {"api-secret": sha1(hub.secrets["p2"]), "Content-Type": "application/json"}
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{hub.url}/api/v1/entries", data=b'[{"sgv": 1', headers=headers) as r:
            body = await r.json()
            assert r.status == 400 and body["status"] == 400 and body["message"] == "Bad Request"
        # one impossible value among good ones: the good ones are stored, it is dead-lettered
        batch = [xdrip_sgv(now, 140, "Flat"), xdrip_sgv(now - timedelta(minutes=5), 1500, "Flat")]
        async with http.post(f"{hub.url}/api/v1/entries", json=batch, headers=headers) as r:
            assert r.status == 200 and [e["sgv"] for e in await r.json()] == [140]
        # all refused: a 400
        async with http.post(f"{hub.url}/api/v1/entries", json=[batch[1]], headers=headers) as r:
            assert r.status == 400
        # gzip that is not gzip, and a gzip bomb
        async with http.post(
            f"{hub.url}/api/v1/entries",
            data=b"\x1f\x8b\x08\x00garbage",
            headers={**headers, "Content-Encoding": "gzip"},
        ) as r:
            assert r.status == 400 and (await r.json())["status"] == 400
        bomb = gzip.compress(b"[" + b" " * (8 * 1024 * 1024) + b"]")
        async with http.post(
            f"{hub.url}/api/v1/entries",
            data=bomb,
            headers={**headers, "Content-Encoding": "gzip"},
        ) as r:
            assert r.status == 413 and (await r.json())["status"] == 413
    assert [v for _, v in await stored(hub, "p2")] == [140.0]
    letters = await asyncio.to_thread(dead_letters, hub)
    reasons = [(d.reason, d.topic, d.device_id) for d in letters]
    device = "nightscout-p2"
    assert reasons == [
        ("malformed", "/api/v1/entries", device),
        ("out_of_range", "/api/v1/entries", device),
        ("out_of_range", "/api/v1/entries", device),
        ("malformed", "/api/v1/entries", device),
        ("oversized", "/api/v1/entries", device),
    ]
    assert letters[0].payload == b'[{"sgv": 1'
    assert json.loads(letters[1].payload) == batch[1]


async def test_uploaded_lows_raise_the_patients_alert(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    lows = [xdrip_sgv(now - timedelta(minutes=5 * i), 48, "Flat") for i in (3, 2, 1, 0)]
    async with aiohttp.ClientSession() as http:
        assert (await xdrip_upload(http, hub, hub.secrets["p2"], lows))[0] == 200
    async with asyncio.timeout(10):
        while AlertKind.URGENT_LOW not in await alert_kinds(hub, "p2"):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert await hub.running.read_model.alerts("p1") == []


async def test_py_nightscout_reads_back_what_was_uploaded(hub: Hub) -> None:
    import py_nightscout

    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    async with aiohttp.ClientSession() as http:
        assert (await xdrip_upload(http, hub, hub.secrets["p1"], a_day(end)))[0] == 200
    api = py_nightscout.Api(hub.url, api_secret=hub.secrets["p1-read"])
    status = await api.get_server_status()
    assert status.status == "ok" and status.apiEnabled is True
    sgvs = await api.get_sgvs()
    assert [s.sgv for s in sgvs[:4]] == [84, 96, 108, 120]
    assert len(sgvs) == 10  # Nightscout's default count
    assert sgvs[0].direction == "SingleDown" and sgvs[0].delta == -12.0
    assert sgvs[0].date == end
    assert sgvs[0].sgv_mmol == round(84 / 18, 1)


async def test_readings_from_mqtt_are_served_with_computed_arrows(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [
        Reading(
            patient_id="p1",
            device_id="cgm-p1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=value,
            unit=Unit.MG_DL,
            time=now - timedelta(minutes=5 * (2 - i)),
            source=Source.MQTT,
            seq=i,
        )
        for i, value in enumerate((100.0, 112.0, 124.0))
    ]
    outcome = await hub.running.hub.submit(origin=Origin(source=Source.MQTT), readings=readings)
    assert outcome.accepted == 3
    async with aiohttp.ClientSession() as http:
        status, body = await get(http, hub, "/api/v1/entries/sgv.json", hub.secrets["p1-read"])
    assert status == 200
    # rising 12 mg/dL per 5 minutes over 10 minutes: 2.4 mg/dL/min, SingleUp
    assert [e["sgv"] for e in body] == [124, 112, 100]
    assert {e["device"] for e in body} == {"cgm-p1"}
    assert (body[0]["direction"], body[0]["delta"]) == ("SingleUp", 12.0)
    assert [e["direction"] for e in body[1:]] == ["NOT COMPUTABLE", "NOT COMPUTABLE"]


def test_helpers_are_honest() -> None:
    # the fixture data is what the docstrings say it is
    day = a_day(datetime(2026, 1, 1, 12, tzinfo=UTC))
    assert len(day) == 288 and [e["sgv"] for e in day[-5:]] == [120, 120, 108, 96, 84]
    assert day[-1]["dateString"] == "2026-01-01T13:00:00.000+0100"
