"""DELETE on Nightscout API v1 entries and treatments, on the real hub (run_hub: real SQLite,
pipeline, ledger). Nightscout removes what matches (lib/api/entries/index.js and
lib/api/treatments/index.js, `delete_records`, answering MongoDB's deleteMany result); the
hub's ledger is append-only, so a DELETE hides what matches and seals one ledger event
naming it: treatments from every read, entries from Nightscout reads and only those its
Nightscout uploader sent. Rows stay; readings from the hub's own devices are never hidden.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from gateway.model import Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from tests.dashboards.nightscout import test_api
from tests.dashboards.nightscout.test_api import UNAUTHORIZED, Hub, get, sha1, xdrip_sgv
from tests.dashboards.nightscout.test_treatments_api import aaps_treatments, iso
from tests.dashboards.nightscout.test_treatments_api import post as post_treatments

hub = test_api.hub  # the real hub with p1's, p1's read-only and p2's secrets (a fixture)


async def delete(
    http: aiohttp.ClientSession, hub: Hub, path: str, secret: str, **params: str
) -> tuple[int, Any]:
    headers = {"api-secret": sha1(secret)}
    async with http.delete(f"{hub.url}{path}", headers=headers, params=params) as response:
        return response.status, await response.json()


def sql(hub: Hub, statement: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(hub.data_dir / DB_FILENAME)
    try:
        return db.execute(statement).fetchall()
    finally:
        db.close()


def deletions(hub: Hub) -> list[tuple[dict[str, Any], int | None]]:
    rows = sql(hub, "SELECT body, batch_seq FROM ledger_events ORDER BY id")
    bodies = [(json.loads(b), s) for b, s in rows]
    return [(b, s) for b, s in bodies if b["type"] == "nightscout_deletion"]


def gone(count: int) -> dict[str, object]:
    return {"acknowledged": True, "deletedCount": count}


async def test_deleted_treatments_are_hidden_everywhere_kept_and_sealed(hub: Hub) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent = aaps_treatments(t0)
    since = {"find[created_at][$gte]": iso(t0 - timedelta(minutes=1))}
    async with aiohttp.ClientSession() as http:
        status, stored = await post_treatments(http, hub, hub.secrets["p1"], sent)
        assert status == 200 and len(stored) == 9
        note = next(t for t in stored if t["eventType"] == "Note")
        path = f"/api/v1/treatments/{note['_id']}"
        # read-only, and another patient's secret: nothing of p1's is touched
        assert await delete(http, hub, path, hub.secrets["p1-read"]) == (401, UNAUTHORIZED)
        assert await delete(http, hub, path, hub.secrets["p2"]) == (200, gone(0))
        assert await delete(http, hub, path, hub.secrets["p1"]) == (200, gone(1))
        assert await delete(http, hub, path, hub.secrets["p1"]) == (200, gone(0))
        by_type = {"find[eventType]": "Temp Basal", **since}
        status, answer = await delete(http, hub, "/api/v1/treatments", hub.secrets["p1"], **by_type)
        assert (status, answer) == (200, gone(1))
        # Nightscout would take a bare DELETE as "the last four days": refused here
        status, answer = await delete(http, hub, "/api/v1/treatments", hub.secrets["p1"])
        assert status == 400 and "find[...]" in answer["description"]

        status, left = await get(http, hub, "/api/v1/treatments", hub.secrets["p1-read"], **since)
        assert status == 200 and len(left) == 7
        assert {t["eventType"] for t in left}.isdisjoint({"Note", "Temp Basal"})
        # AndroidAPS resending the deleted note does not bring it back
        status, _ = await post_treatments(http, hub, hub.secrets["p1"], sent)
        status, left = await get(http, hub, "/api/v1/treatments", hub.secrets["p1"], **since)
        assert status == 200 and len(left) == 7
    # the dashboards' and reports' reads (the storage's `treatments`) leave them out too
    store = Store(hub.data_dir, read_only=True)
    try:
        shown = store.treatments("p1", since=t0, until=t0 + timedelta(hours=1))
    finally:
        store.close()
    assert len(shown) == 7 and {t.event_type for t in shown}.isdisjoint({"Note", "Temp Basal"})
    assert sql(hub, "SELECT count(*) FROM treatments WHERE patient_id = 'p1'") == [(9,)]
    events = deletions(hub)
    assert [(b["patient_id"], b["collection"], len(b["record_keys"])) for b, _ in events] == [
        ("p1", "treatments", 1),
        ("p1", "treatments", 1),
    ]
    async with asyncio.timeout(10):
        while any(seq is None for _, seq in deletions(hub)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_deleted_entries_are_hidden_from_nightscout_only_and_device_readings_stay(
    hub: Hub,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    uploaded = [xdrip_sgv(now - timedelta(minutes=m), 100 + m, "Flat") for m in (20, 25, 30)]
    from_mqtt = [
        Reading(
            patient_id="p1",
            device_id="cgm-p1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=150.0 + i,
            unit=Unit.MG_DL,
            time=now - timedelta(minutes=5 * i),
            source=Source.MQTT,
            seq=i,
        )
        for i in (1, 2)
    ]
    outcome = await hub.running.hub.submit(origin=Origin(source=Source.MQTT), readings=from_mqtt)
    assert outcome.accepted == 2
    async with aiohttp.ClientSession() as http:
        status, echo = await test_api.xdrip_upload(http, hub, hub.secrets["p1"], uploaded)
        assert status == 200 and len(echo) == 3
        status, every = await get(http, hub, "/api/v1/entries.json", hub.secrets["p1"], count="50")
        assert [e["sgv"] for e in every] == [151, 152, 120, 125, 130]
        mqtt_id = every[0]["_id"]
        one_id = next(e["_id"] for e in every if e["sgv"] == 125)
        path = "/api/v1/entries"
        # a reading from the hub's own CGM is not the uploader's to delete
        assert await delete(http, hub, f"{path}/{mqtt_id}", hub.secrets["p1"]) == (200, gone(0))
        assert await delete(http, hub, f"{path}/{one_id}", hub.secrets["p1-read"]) == (
            401,
            UNAUTHORIZED,
        )
        assert await delete(http, hub, f"{path}/{one_id}", hub.secrets["p2"]) == (200, gone(0))
        assert await delete(http, hub, f"{path}/{one_id}", hub.secrets["p1"]) == (200, gone(1))
        since = {"find[date][$gte]": str(int((now - timedelta(hours=1)).timestamp() * 1000))}
        status, answer = await delete(http, hub, f"{path}/sgv", hub.secrets["p1"], **since)
        assert (status, answer) == (200, gone(2))  # the other two uploaded; not the CGM's
        status, left = await get(http, hub, "/api/v1/entries.json", hub.secrets["p1"], count="50")
        assert [e["sgv"] for e in left] == [151, 152]
    # the readings themselves stay in the clinical record
    kept = await hub.running.read_model.readings(
        "p1", since=now - timedelta(hours=1), kinds=(ReadingKind.CGM_GLUCOSE,)
    )
    assert sorted(r.value for r in kept) == [120, 125, 130, 151, 152]
    assert [(b["collection"], len(b["record_keys"])) for b, _ in deletions(hub)] == [
        ("entries", 1),
        ("entries", 2),
    ]
