"""Nightscout API v1 devicestatus and profile on the real hub (run_hub: real SQLite, pipeline,
ledger), with the bodies the apps upload, taken from their public source:

- AndroidAPS (nightscout/AndroidAPS, plugins/aps/loop/DeviceStatus.java and NSDeviceStatus:
  `device` "openaps://…", `pump` {clock, reservoir, battery, status, extended}, `openaps`
  {suggested, enacted, iob}, `uploaderBattery`, `isCharging`, `configuration`; the profile
  store of LocalProfilePlugin: `defaultProfile`, `date`, `created_at`, `startDate`, `store`).
  Its v1 client sends these over socket.io (`dbAdd`); here they are POSTed as the same JSON,
  as Nightscout's REST API takes them.
- Loop (NightscoutUploadKit, ps2/rileylink_ios DeviceStatus/DeviceStatus.swift and
  PumpStatus.swift, later LoopKit/NightscoutKit; DeviceStatus and ProfileSet
  `dictionaryRepresentation`): arrays, `device` "loop://…", `created_at`, `pump` {clock,
  pumpID, reservoir, suspended, bolusing, secondsFromGMT}, `uploader` {name, timestamp,
  battery}, `loop` {iob, cob, predicted}; a profile with text `mills`, `loopSettings` and
  mg/dL schedules.
- xDrip+ (NightscoutFoundation/xDrip, NightscoutUploader.java, uploadDeviceStatus): one
  gzipped object {device, uploader {battery, batteryVoltage, temperature}}, no time.

Followers read back as Nightscout's own site does (devicestatus `count` and
`find[created_at][$gte]`, /profile and /profile/current).
"""

from __future__ import annotations

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
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def aaps_status(at: datetime) -> dict[str, Any]:
    return {
        "device": "openaps://AndroidAPS Pixel 7",
        "created_at": iso(at),
        "pump": {
            "clock": iso(at),
            "reservoir": 112.4,
            "battery": {"percent": 75},
            "status": {"status": "normal", "timestamp": iso(at)},
            "extended": {"Version": "3.2.0.4", "ActiveProfile": "Day"},
        },
        "openaps": {
            "suggested": {
                "bg": 143,
                "temp": "absolute",
                "timestamp": iso(at),
                "predBGs": {"IOB": list(range(143, 95, -1)), "ZT": list(range(143, 119, -1))},
                "reason": "COB: 12, Dev: 8, BGI: -1.9, ISF: 2.5, Target: 5.5",
                "COB": 12,
                "IOB": 1.2,
                "eventualBG": 112,
            },
            "iob": {"iob": 1.2, "basaliob": 0.3, "activity": 0.01, "time": iso(at)},
        },
        "uploaderBattery": 64,
        "isCharging": False,
        "configuration": {"pump": "Omnipod Dash", "version": "3.2.0.4"},
    }


def loop_status(at: datetime) -> dict[str, Any]:
    return {
        "device": "loop://iPhone",
        "created_at": iso(at),
        "pump": {
            "clock": iso(at),
            "pumpID": "1A2B3C",
            "manufacturer": "Insulet",
            "model": "Dash",
            "reservoir": 50,
            "suspended": False,
            "bolusing": False,
            "secondsFromGMT": -21600,
        },
        "uploader": {"name": "iPhone", "timestamp": iso(at), "battery": 85},
        "loop": {
            "name": "Loop",
            "version": "3.4.1",
            "timestamp": iso(at),
            "iob": {"timestamp": iso(at), "iob": 2.35},
            "cob": {"timestamp": iso(at), "cob": 30},
            "predicted": {"startDate": iso(at), "values": [130, 128, 125]},
            "recommendedBolus": 0,
        },
    }


XDRIP_STATUS = {
    "device": "xDrip-DexcomG6",
    "uploader": {"battery": 60, "batteryVoltage": 3783, "temperature": "+31.0°C"},
}


def aaps_profile(at: datetime) -> dict[str, Any]:
    def one(value: float) -> list[dict[str, Any]]:
        return [{"time": "00:00", "timeAsSeconds": 0, "value": value}]

    return {
        "defaultProfile": "Day",
        "date": int(at.timestamp() * 1000),
        "created_at": iso(at),
        "startDate": iso(at),
        "units": "mmol",
        "store": {
            "Day": {
                "dia": 5,
                "carbratio": [
                    {"time": "00:00", "timeAsSeconds": 0, "value": 10},
                    {"time": "12:00", "timeAsSeconds": 43200, "value": 8},
                ],
                "sens": one(2.5),
                "basal": one(0.8),
                "target_low": one(5.5),
                "target_high": one(6.5),
                "units": "mmol",
                "timezone": "Europe/Prague",
            }
        },
    }


def loop_profile(at: datetime) -> dict[str, Any]:
    def one(value: float) -> list[dict[str, Any]]:
        return [{"time": "00:00", "value": value, "timeAsSeconds": 0}]

    return {
        "defaultProfile": "Default",
        "startDate": iso(at),
        "mills": str(int(at.timestamp() * 1000)),
        "units": "mg/dL",
        "enteredBy": "Loop",
        "loopSettings": {"dosingEnabled": True, "maximumBolus": 10, "maximumBasalRatePerHour": 3},
        "store": {
            "Default": {
                "dia": 6,
                "carbratio": one(10),
                "sens": one(45),
                "basal": one(0.9),
                "target_low": one(100),
                "target_high": one(110),
                "timezone": "America/Chicago",
                "units": "mg/dL",
            }
        },
    }


async def post(
    http: aiohttp.ClientSession,
    hub: Hub,
    path: str,
    secret: str,
    body: object,
    *,
    gzipped: bool = False,
) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"api-secret": sha1(secret), "Content-Type": "application/json"}
    if gzipped:
        data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
    async with http.post(f"{hub.url}{path}", data=data, headers=headers) as response:
        return response.status, await response.json()


async def test_devicestatus_of_androidaps_loop_and_xdrip_is_kept_and_read_as_followers_do(
    hub: Hub,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:
        path = "/api/v1/devicestatus"
        status, echo = await post(http, hub, path, hub.secrets["p1"], aaps_status(now - _m(10)))
        assert status == 200 and len(echo) == 1 and len(echo[0]["_id"]) == 24
        assert echo[0]["openaps"]["suggested"]["eventualBG"] == 112
        # AndroidAPS resends on a missed acknowledgement: stored once, same _id
        status, again = await post(http, hub, path, hub.secrets["p1"], aaps_status(now - _m(10)))
        assert status == 200 and again[0]["_id"] == echo[0]["_id"]
        status, looped = await post(http, hub, path, hub.secrets["p1"], [loop_status(now - _m(5))])
        assert status == 200 and [d["device"] for d in looped] == ["loop://iPhone"]
        status, xdrip = await post(
            http, hub, path + ".json", hub.secrets["p1"], XDRIP_STATUS, gzipped=True
        )
        assert status == 200 and xdrip[0]["uploader"]["battery"] == 60

        # Nightscout's site: the newest first, `count`
        status, newest = await get(http, hub, path + ".json", hub.secrets["p1-read"], count="1")
        assert status == 200 and [d["device"] for d in newest] == ["xDrip-DexcomG6"]
        # xDrip+ sent no time: created_at is when it arrived (lib/server/devicestatus.js)
        arrived = datetime.fromisoformat(newest[0]["created_at"])
        assert abs(arrived - datetime.now(UTC)) < timedelta(seconds=30)
        status, every = await get(http, hub, path, hub.secrets["p1-read"])
        assert [d["device"] for d in every] == [
            "xDrip-DexcomG6",
            "loop://iPhone",
            "openaps://AndroidAPS Pixel 7",
        ]
        assert every[1]["loop"]["iob"]["iob"] == 2.35 and every[1]["pump"]["reservoir"] == 50
        assert every[2]["pump"]["battery"] == {"percent": 75}
        assert every[2]["created_at"] == iso(now - _m(10))
        assert every[2]["mills"] == int((now - _m(10)).timestamp() * 1000)
        since = {"find[created_at][$gte]": iso(now - _m(7))}
        status, recent = await get(http, hub, path, hub.secrets["p1-read"], **since)
        assert [d["device"] for d in recent] == ["xDrip-DexcomG6", "loop://iPhone"]
        # another patient's secret sees none of it
        status, other = await get(http, hub, path, hub.secrets["p2"], count="100")
        assert status == 200 and other == []


def _m(minutes: int) -> timedelta:
    return timedelta(minutes=minutes)


async def test_profiles_of_androidaps_and_loop_are_listed_newest_first_and_sealed(
    hub: Hub,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:
        status, stored = await post(
            http, hub, "/api/v1/profile", hub.secrets["p1"], aaps_profile(now - _m(60))
        )
        assert status == 200 and stored[0]["defaultProfile"] == "Day"
        status, _ = await post(
            http, hub, "/api/v1/profile/", hub.secrets["p1"], [loop_profile(now - _m(1))]
        )
        assert status == 200
        status, listed = await get(http, hub, "/api/v1/profile.json", hub.secrets["p1-read"])
        assert status == 200 and [p["defaultProfile"] for p in listed] == ["Default", "Day"]
        loop, aaps = listed
        assert loop["store"]["Default"]["sens"] == [
            {"time": "00:00", "value": 45, "timeAsSeconds": 0}
        ]
        assert loop["startDate"] == iso(now - _m(1)) and loop["loopSettings"]["maximumBolus"] == 10
        # Loop sent no created_at: its startDate stands in for it
        assert loop["created_at"] == iso(now - _m(1))
        assert aaps["store"]["Day"]["carbratio"][1] == {
            "time": "12:00",
            "timeAsSeconds": 43200,
            "value": 8,
        }
        assert aaps["created_at"] == iso(now - _m(60)) and aaps["units"] == "mmol"
        status, current = await get(http, hub, "/api/v1/profile/current", hub.secrets["p1"])
        assert status == 200 and current["defaultProfile"] == "Default"
        status, nothing = await get(http, hub, "/api/v1/profile/current", hub.secrets["p2"])
        assert status == 200 and nothing is None
        status, none = await get(http, hub, "/api/v1/profile", hub.secrets["p2"])
        assert status == 200 and none == []
    profiles = [b for b in ledger_bodies(hub) if b["type"] == "profile"]
    assert [(b["patient_id"], b["event"]) for b in profiles] == [("p1", "added"), ("p1", "added")]
    assert not [b for b in ledger_bodies(hub) if b["type"] == "devicestatus"]


def ledger_bodies(hub: Hub) -> list[dict[str, Any]]:
    db = sqlite3.connect(hub.data_dir / DB_FILENAME)
    try:
        rows = db.execute("SELECT body FROM ledger_events ORDER BY id").fetchall()
    finally:
        db.close()
    return [json.loads(r[0]) for r in rows]


async def test_bad_bodies_get_nightscouts_400_and_a_dead_letter_never_a_500(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    no_store = {k: v for k, v in aaps_profile(now).items() if k != "store"}
    huge = {**aaps_status(now), "notes": "x" * 40_000}
    cases: list[tuple[str, object, str]] = [
        ("/api/v1/devicestatus", b"{not json", "malformed: not JSON"),
        ("/api/v1/devicestatus", b"42", "expected a devicestatus object or an array"),
        ("/api/v1/devicestatus", [{**aaps_status(now), "_id": "x1"}], "Invalid _id format"),
        ("/api/v1/devicestatus", [{**aaps_status(now), "created_at": "yesterday"}], "ISO 8601"),
        ("/api/v1/devicestatus", [huge], "oversized"),
        ("/api/v1/devicestatus", [{"a": [[[[[[[[[[[[[1]]]]]]]]]]]]]}], "nested deeper"),
        ("/api/v1/devicestatus", b'[{"device": "x", "uploaderBattery": NaN}]', "NaN"),
        ("/api/v1/profile", no_store, "non-empty `store`"),
        ("/api/v1/profile", [1, 2], "must be an object"),
    ]
    before = len(dead_letters(hub))
    async with aiohttp.ClientSession() as http:
        for path, body, says in cases:
            status, answer = await post(http, hub, path, hub.secrets["p1"], body)
            assert status == 400, (path, body, answer)
            assert answer["status"] == 400 and answer["message"] == "Bad Request"
            assert says in answer["description"], answer
        status, listed = await get(http, hub, "/api/v1/devicestatus", hub.secrets["p1"])
        assert status == 200 and listed == []
        # one good and one bad: the good one is kept, the bad one dead-lettered
        status, kept = await post(
            http, hub, "/api/v1/devicestatus", hub.secrets["p1"], [loop_status(now), "oops"]
        )
        assert status == 200 and [d["device"] for d in kept] == ["loop://iPhone"]
    letters = dead_letters(hub)[before:]
    # one each, two for [1, 2] (each document its own), one for "oops"
    assert len(letters) == 8 + 2 + 1
    assert letters[0].payload == b"{not json" and letters[0].reason == "malformed"
    assert json.loads(letters[7].payload) == json.loads(json.dumps(no_store))
    assert letters[-1].payload == b'"oops"' and letters[-1].topic == "/api/v1/devicestatus"


async def test_only_the_patients_writing_secret_uploads(hub: Hub) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:
        for path, body in (
            ("/api/v1/devicestatus", aaps_status(now)),
            ("/api/v1/profile", aaps_profile(now)),
        ):
            status, answer = await post(http, hub, path, hub.secrets["p1-read"], body)
            assert (status, answer) == (401, UNAUTHORIZED)
            async with http.post(f"{hub.url}{path}", json=body) as response:
                assert (response.status, await response.json()) == (401, UNAUTHORIZED)
            status, answer = await get(http, hub, path, None)
            assert (status, answer) == (401, UNAUTHORIZED)
            status, answer = await get(http, hub, path, "not-a-secret")
            assert (status, answer) == (401, UNAUTHORIZED)
        status, listed = await get(http, hub, "/api/v1/devicestatus", hub.secrets["p1"])
        assert listed == []
