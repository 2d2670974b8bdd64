"""Nightscout API v1 treatments on the real hub (run_hub: real SQLite, pipeline, ledger), spoken
to over HTTP with the treatment JSON the apps send, from their public source:

- AndroidAPS (nightscout/AndroidAPS, plugins/sync/src/main/kotlin/app/aaps/plugins/sync/nsclient/
  extensions/*.kt, `toJson`): BolusExtension ("Meal Bolus", or "Correction Bolus" for an SMB,
  `insulin`, `date`, `type`, `isSMB`), CarbsExtension ("Carb Correction" under 12 g, else
  "Meal Bolus" with only `carbs`), TemporaryBasalExtension ("Temp Basal", `absolute`, `rate`,
  `duration` and `durationInMilliseconds`), TherapyEventExtension ("Note", "Exercise",
  "Sensor Start", "Site Change"). AndroidAPS's v1 client sends these objects over socket.io
  (`dbAdd`); here they are POSTed as the same JSON array, as Nightscout's REST API takes them.
- xDrip+ (NightscoutFoundation/xDrip, NightscoutUploader.java, `populateV1APITreatmentEntry`
  and `postTreatments`): one PUT per treatment, eventType "<none>" with `insulin` and `carbs`
  (0 when none), `uuid`, `_id` = `uuid_to_id(uuid)`, `timestamp` (ms), `created_at`, `sysTime`,
  gzipped.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from gateway.store import DB_FILENAME
from tests.dashboards.nightscout import test_api
from tests.dashboards.nightscout.test_api import UNAUTHORIZED, Hub, dead_letters, get, sha1

hub = test_api.hub  # the real hub with p1's, p1's read-only and p2's secrets (a fixture)


def iso(at: datetime) -> str:
    """AndroidAPS DateUtil.toISOString and xDrip+ DateUtil.toISOString: UTC, ms, Z."""
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


def aaps_treatments(t0: datetime) -> list[dict[str, Any]]:
    """Nine treatments a loop day has, one minute apart from t0, as AndroidAPS's toJson."""

    def at(minute: int) -> dict[str, Any]:
        when = t0 + timedelta(minutes=minute)
        return {"created_at": iso(when), "date": ms(when), "isValid": True}

    return [
        {
            **at(0),
            "eventType": "Meal Bolus",
            "insulin": 6.5,
            "type": "NORMAL",
            "notes": None,
            "isSMB": False,
            "pumpId": 4711,
            "pumpType": "OMNIPOD_DASH",
            "pumpSerial": "A1",
        },
        {**at(1), "eventType": "Correction Bolus", "insulin": 0.3, "type": "SMB", "isSMB": True},
        {**at(2), "eventType": "Carb Correction", "carbs": 8.0, "notes": "juice"},
        {**at(3), "eventType": "Meal Bolus", "carbs": 45.0},
        {
            **at(4),
            "enteredBy": "openaps://AndroidAPS",
            "eventType": "Temp Basal",
            "duration": 30,
            "durationInMilliseconds": 1_800_000,
            "type": "NORMAL",
            "rate": 0.8,
            "absolute": 0.8,
        },
        {
            **at(5),
            "eventType": "Note",
            "enteredBy": "AndroidAPS",
            "units": "mg/dl",
            "notes": "sick day",
        },
        {
            **at(6),
            "eventType": "Exercise",
            "enteredBy": "AndroidAPS",
            "units": "mg/dl",
            "duration": 45,
            "durationInMilliseconds": 2_700_000,
        },
        {**at(7), "eventType": "Sensor Start", "enteredBy": "AndroidAPS", "units": "mg/dl"},
        {**at(8), "eventType": "Site Change", "enteredBy": "AndroidAPS", "units": "mg/dl"},
    ]


async def post(
    http: aiohttp.ClientSession, hub: Hub, secret: str, body: object, method: str = "POST"
) -> tuple[int, Any]:
    async with http.request(
        method,
        f"{hub.url}/api/v1/treatments",
        data=body if isinstance(body, bytes) else json.dumps(body),
        headers={"api-secret": sha1(secret), "Content-Type": "application/json"},
    ) as response:
        return response.status, await response.json()


def ledger_treatments(hub: Hub) -> list[tuple[dict[str, Any], int | None]]:
    db = sqlite3.connect(hub.data_dir / DB_FILENAME)
    try:
        rows = db.execute("SELECT body, batch_seq FROM ledger_events ORDER BY id").fetchall()
    finally:
        db.close()
    bodies = [(json.loads(b), s) for b, s in rows]
    return [(b, s) for b, s in bodies if b.get("type") == "treatment"]


async def test_androidaps_treatments_are_stored_once_read_back_and_sealed(hub: Hub) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    sent = aaps_treatments(t0)
    async with aiohttp.ClientSession() as http:
        status, body = await post(http, hub, hub.secrets["p1"], sent)
        assert status == 200 and isinstance(body, list) and len(body) == 9
        assert [t["eventType"] for t in body] == [t["eventType"] for t in sent]
        ids = [t["_id"] for t in body]
        assert len(set(ids)) == 9 and all(len(i) == 24 for i in ids)
        # AndroidAPS resends when it misses the acknowledgement: nothing new is stored
        status, again = await post(http, hub, hub.secrets["p1"], sent)
        assert status == 200 and [t["_id"] for t in again] == ids

        since = iso(t0 - timedelta(minutes=1))
        status, back = await get(
            http,
            hub,
            "/api/v1/treatments.json",
            hub.secrets["p1-read"],
            **{"find[created_at][$gte]": since},
        )
    assert status == 200 and isinstance(back, list) and len(back) == 9
    newest_first = list(reversed(sent))
    assert [t["created_at"] for t in back] == [t["created_at"] for t in newest_first]
    by_type = {(t["eventType"], t.get("insulin"), t.get("carbs")): t for t in back}
    assert set(by_type) == {
        ("Meal Bolus", 6.5, None),
        ("Correction Bolus", 0.3, None),
        ("Carb Correction", None, 8.0),
        ("Meal Bolus", None, 45.0),
        ("Temp Basal", None, None),
        ("Note", None, None),
        ("Exercise", None, None),
        ("Sensor Start", None, None),
        ("Site Change", None, None),
    }
    basal = by_type[("Temp Basal", None, None)]
    assert (basal["absolute"], basal["duration"], basal["enteredBy"]) == (
        0.8,
        30.0,
        "openaps://AndroidAPS",
    )
    assert by_type[("Note", None, None)]["notes"] == "sick day"
    assert by_type[("Exercise", None, None)]["duration"] == 45.0
    assert back[0]["mills"] == ms(t0 + timedelta(minutes=8))

    # each stored once in the ledger, and sealed like readings
    events = ledger_treatments(hub)
    assert len(events) == 9
    kinds = [b["kind"] for b, _ in events]
    assert kinds == [
        "insulin_bolus",
        "insulin_bolus",
        "carbs",
        "carbs",
        "temp_basal",
        "note",
        "exercise",
        "sensor_start",
        "site_change",
    ]
    assert {b["patient_id"] for b, _ in events} == {"p1"}
    async with asyncio.timeout(10):
        while any(seq is None for _, seq in ledger_treatments(hub)):  # noqa: ASYNC110
            await asyncio.sleep(0.1)


async def test_xdrip_puts_one_gzipped_treatment_at_a_time_and_an_edit_replaces_it(
    hub: Hub,
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    uuid = "3f1c2a9e-7b4d-4e21-9a6b-0c5d8e7f6a12"
    record = {
        "timestamp": ms(when),
        "eventType": "<none>",
        "enteredBy": "xdrip",
        "uuid": uuid,
        "carbs": 0,
        "insulin": 4.0,
        "created_at": iso(when),
        "sysTime": when.astimezone().strftime("%Y-%m-%dT%H:%M:%S.000%z"),
        "_id": "3f1c2a9e7b4d4e219a6b0c5d",  # uuid_to_id: the uuid without dashes, 24 chars
    }

    async def put(item: dict[str, Any]) -> tuple[int, Any]:
        async with http.put(
            f"{hub.url}/api/v1/treatments",
            data=gzip.compress(json.dumps(item).encode()),
            headers={
                "api-secret": sha1(hub.secrets["p1"]),
                "Content-Type": "application/json",
                "Content-Encoding": "gzip",
            },
        ) as response:
            return response.status, await response.json()

    async with aiohttp.ClientSession() as http:
        status, saved = await put(record)
        assert status == 200 and isinstance(saved, dict)  # PUT answers with the one object
        assert saved["_id"] == "3f1c2a9e7b4d4e219a6b0c5d"  # xDrip+ finds it by this id
        assert (saved["insulin"], "carbs" in saved) == (4.0, False)  # carbs 0: none
        assert (await put(record))[0] == 200  # resent
        status, edited = await put({**record, "carbs": 30})  # the user adds the meal
        assert status == 200 and edited["carbs"] == 30.0
        status, back = await get(http, hub, "/api/v1/treatments", hub.secrets["p1"])
    assert status == 200 and len(back) == 1
    assert (back[0]["insulin"], back[0]["carbs"]) == (4.0, 30.0)
    assert back[0]["_id"] == "3f1c2a9e7b4d4e219a6b0c5d"
    assert [b["event"] for b, _ in ledger_treatments(hub)] == ["added", "replaced"]


async def test_treatments_are_per_patient_and_read_only_secrets_cannot_write(hub: Hub) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    bolus = {"eventType": "Correction Bolus", "insulin": 2.0, "created_at": iso(when)}
    async with aiohttp.ClientSession() as http:
        assert (await post(http, hub, hub.secrets["p1"], bolus))[0] == 200
        status, body = await post(http, hub, hub.secrets["p1-read"], bolus)
        assert (status, body) == (401, UNAUTHORIZED)
        status, body = await get(http, hub, "/api/v1/treatments", hub.secrets["p2"])
        assert (status, body) == (200, [])
        status, body = await get(http, hub, "/api/v1/treatments", None)
        assert (status, body) == (401, UNAUTHORIZED)
        status, mine = await get(http, hub, "/api/v1/treatments", hub.secrets["p1-read"])
        assert status == 200 and [t["insulin"] for t in mine] == [2.0]


async def test_impossible_treatments_are_refused_with_dead_letters_never_stored(
    hub: Hub,
) -> None:
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    good = {"eventType": "Carb Correction", "carbs": 15, "created_at": iso(when)}
    negative = {"eventType": "Correction Bolus", "insulin": -2, "created_at": iso(when)}
    absurd = {"eventType": "Meal Bolus", "carbs": 5000, "created_at": iso(when)}
    async with aiohttp.ClientSession() as http:
        status, body = await post(http, hub, hub.secrets["p1"], [negative, absurd])
        assert status == 400 and body["status"] == 400
        assert "insulin_units -2 U outside 0-200 U" in body["description"]
        assert "carbs_grams 5000 g outside 0-400 g" in body["description"]
        status, body = await post(http, hub, hub.secrets["p1"], [good, negative])
        assert status == 200 and [t["carbs"] for t in body] == [15.0]
        status, body = await post(http, hub, hub.secrets["p1"], b"[{not json")
        assert status == 400
        status, back = await get(http, hub, "/api/v1/treatments", hub.secrets["p1"])
    assert [t.get("carbs") for t in back] == [15.0]
    letters = [d for d in dead_letters(hub) if d.topic == "/api/v1/treatments"]
    assert sorted(d.reason for d in letters) == [
        "malformed",
        "out_of_range",
        "out_of_range",
        "out_of_range",
    ]
    assert any(json.loads(d.payload) == negative for d in letters)
