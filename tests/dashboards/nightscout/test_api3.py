"""Nightscout API v3 on the real hub (run_hub: real SQLite, pipeline, ledger), spoken to as
AndroidAPS' NSClientV3 speaks it, from its public source (nightscout/AndroidAPS):

- core/nssdk/.../networking/NightscoutRemoteService.kt: the requests (`v3/status`,
  `v3/lastModified`, `POST v3/entries` one document per request, `v3/entries/history/{from}
  ?limit=500`, `v3/entries?sort=date&date$gt=..&limit=..`, `v3/entries?sort$desc=date&type=sgv`,
  `POST`/`PATCH v3/treatments[/{identifier}]`, `v3/treatments/history/{from}`,
  `v3/treatments?sort=created_at&created_at$gt=..`).
- NSAuthInterceptor.kt: every request carries `Date: <ms>` and `Authorization: Bearer <jwt>`
  (empty at first; a 401 or 403 makes it fetch a JWT and retry).
- remotemodel/RemoteEntry.kt, RemoteTreatment.kt and the nsclientV3 extensions
  (GlucoseValueExtension, BolusExtension, CarbsExtension): the bodies, as Gson writes them
  (null fields left out; Kotlin Doubles as `120.0`). `app` is "AAPS"; new records have no
  identifier (the server gives one), resends and updates carry the one it gave.
- NSAndroidClientImpl.kt: what it reads of the answers (`identifier`, `isDeduplication`,
  `deduplicatedIdentifier`, `lastModified` at the top level of a create's answer; `result` of
  reads; the history ETag `W/"<ms>"`), and that it uploads only when `/status` says "crud" for
  all six collections (ApiPermissions.isFull).

Expected answers are Nightscout 15's (lib/api3: const.json messages, operationTools.js
sendJSON/sendJSONStatus envelopes), worked out by hand for each request.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from gateway.store import Store
from tests.dashboards.nightscout import test_api
from tests.dashboards.nightscout.test_api import Hub, dead_letters, sha1

hub = test_api.hub  # the real hub with p1's, p1's read-only and p2's secrets (a fixture)

# operationTools.js: identifiers are uuid v5 in the namespace of these 16 ASCII bytes
NS_NAMESPACE = uuid.UUID(bytes=b"NightscoutRocks!")


def bearer(hub: Hub, who: str) -> str:
    """What NSClientV3 sends as `Authorization: Bearer` for the token it was given. The one
    place tests get it: with API v2 JWTs, this is the JWT of
    /api/v2/authorization/request/<token>; today the hub takes the uploader secret itself."""
    return hub.secrets[who]


def ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


async def call(
    http: aiohttp.ClientSession,
    hub: Hub,
    method: str,
    path: str,
    who: str | None,
    body: object = None,
    **params: str,
) -> tuple[int, Any, dict[str, str]]:
    headers = {"Date": str(ms(datetime.now(UTC)))}  # NSAuthInterceptor.requestWithBearer
    headers["Authorization"] = f"Bearer {bearer(hub, who) if who else ''}"
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = "application/json; charset=UTF-8"
    async with http.request(
        method, f"{hub.url}/api/v3/{path}", headers=headers, data=data, params=params
    ) as response:
        return (
            response.status,
            await response.json(),
            {k.lower(): v for k, v in response.headers.items()},
        )


async def all_events_sealed(hub: Hub, within_s: float = 10.0) -> bool:
    for _ in range(int(within_s / 0.1)):
        store = Store(hub.data_dir)
        try:
            if store.count_unsealed_events() == 0:
                return True
        finally:
            store.close()
        await asyncio.sleep(0.1)
    return False


def aaps_sgv(at: datetime, sgv: float, direction: str) -> dict[str, object]:
    """GlucoseValueExtension.toNSSvgV3 -> SvgMapper.toRemoteEntry, app set by createSgv."""
    return {
        "type": "sgv",
        "sgv": sgv,
        "date": ms(at),
        "device": "Dexcom G6 Native",
        "direction": direction,
        "app": "AAPS",
        "utcOffset": 60,
        "isValid": True,
        "isReadOnly": False,
        "filtered": sgv,
        "unfiltered": 0.0,
        "units": "mg/dl",
    }


def aaps_bolus(at: datetime, insulin: float, identifier: str | None = None) -> dict[str, object]:
    """BolusExtension.toNSBolus -> TreatmentMapper (NSBolus), app set by createTreatment."""
    body: dict[str, object] = {
        "date": ms(at),
        "utcOffset": 60,
        "app": "AAPS",
        "isValid": True,
        "isReadOnly": False,
        "eventType": "Meal Bolus",
        "insulin": insulin,
        "type": "NORMAL",
        "isBasalInsulin": False,
        "pumpId": 4711,
        "pumpType": "OMNIPOD_DASH",
        "pumpSerial": "A1",
    }
    if identifier is not None:
        body["identifier"] = identifier
    return body


def aaps_carbs(at: datetime, grams: float) -> dict[str, object]:
    """CarbsExtension.toNSCarbs: under 12 g a "Carb Correction"."""
    return {
        "date": ms(at),
        "utcOffset": 60,
        "app": "AAPS",
        "isValid": True,
        "eventType": "Carb Correction",
        "carbs": grams,
    }


async def test_status_tells_nsclientv3_it_may_upload_and_a_missing_token_is_refused(
    hub: Hub,
) -> None:
    async with aiohttp.ClientSession() as http:
        # NSAuthInterceptor's first request: an empty Bearer
        status, body, _ = await call(http, hub, "GET", "status", None)
        assert (status, body) == (401, {"status": 401, "message": MISSING})
        status, body, _ = await call(http, hub, "GET", "status", "p1")
        assert status == 200 and body["status"] == 200
        result = body["result"]
        assert result["apiVersion"] == "3.0.3-alpha" and result["version"] == "15.0.0"
        assert abs(result["srvDate"] - ms(datetime.now(UTC))) < 60_000
        six = ("devicestatus", "entries", "food", "profile", "settings", "treatments")
        assert result["apiPermissions"] == dict.fromkeys(six, "crud")  # isFull(): uploads
        status, body, _ = await call(http, hub, "GET", "status", "p1-read")
        assert body["result"]["apiPermissions"] == dict.fromkeys(six, "r")  # isRead() only
        # an unknown token, and v1's api-secret header (API v3 takes only a Bearer)
        async with http.get(
            f"{hub.url}/api/v3/status", headers={"Authorization": "Bearer nsNOTASECRET"}
        ) as response:
            assert (response.status, await response.json()) == (401, BAD)
        async with http.get(
            f"{hub.url}/api/v3/status", headers={"api-secret": sha1(hub.secrets["p1"])}
        ) as response:
            assert (response.status, await response.json()) == (
                401,
                {"status": 401, "message": MISSING},
            )
        # version needs no token (specific/version.js)
        async with http.get(f"{hub.url}/api/v3/version") as response:
            version = await response.json()
        assert response.status == 200 and version["result"]["apiVersion"] == "3.0.3-alpha"


MISSING = "Missing or bad access token or JWT"
BAD = {"status": 401, "message": "Bad access token or JWT"}


async def test_nsclientv3_uploads_sgvs_resends_them_and_reads_them_back(hub: Hub) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    times = [t0 + timedelta(minutes=5 * i) for i in range(4)]
    values = [(120.0, "Flat"), (126.0, "FortyFiveUp"), (135.0, "FortyFiveUp"), (131.0, "Flat")]
    async with aiohttp.ClientSession() as http:
        ids: list[str] = []
        for at, (sgv, direction) in zip(times, values, strict=True):
            status, body, headers = await call(
                http, hub, "POST", "entries", "p1", aaps_sgv(at, sgv, direction)
            )
            # create/insert.js: 201, identifier and lastModified at the top level
            assert status == 201 and body["status"] == 201, body
            assert set(body) == {"status", "identifier", "lastModified"}
            assert body["lastModified"] == ms(at)  # a reading's srvModified: its own time
            assert headers["location"] == f"/api/v3/entries/{body['identifier']}"
            ids.append(body["identifier"])
        assert len(set(ids)) == 4
        # a resend (the answer was lost): found again, the same identifier, nothing new
        status, body, _ = await call(
            http, hub, "POST", "entries", "p1", aaps_sgv(times[1], 126.0, "FortyFiveUp")
        )
        assert status == 200 and body["isDeduplication"] is True
        assert body["identifier"] == ids[1] and body["lastModified"] == ms(times[1])
        # the same time and type with another value is the same entry (date + type,
        # lib/api3/generic/setup.js); a sealed reading is not replaced
        status, body, _ = await call(
            http, hub, "POST", "entries", "p1", aaps_sgv(times[1], 200.0, "DoubleUp")
        )
        assert status == 200 and body["identifier"] == ids[1] and body["isDeduplication"]

        # LoadBgWorker: history after the last load, limit 500; ETag is its next start
        status, body, headers = await call(
            http, hub, "GET", f"entries/history/{ms(times[0])}", "p1", limit="500"
        )
        assert status == 200 and body["status"] == 200
        got = body["result"]
        assert [d["identifier"] for d in got] == ids[1:]
        assert [(d["sgv"], d["direction"], d["date"]) for d in got] == [
            (126, "FortyFiveUp", ms(times[1])),
            (135, "FortyFiveUp", ms(times[2])),
            (131, "Flat", ms(times[3])),
        ]
        assert all(d["type"] == "sgv" and d["isValid"] is True for d in got)
        assert [d["srvModified"] for d in got] == [ms(t) for t in times[1:]]
        assert headers.get("etag") == f'W/"{ms(times[3])}"', headers
        status, body, headers = await call(
            http, hub, "GET", f"entries/history/{ms(times[3])}", "p1", limit="500"
        )
        assert (status, body["result"]) == (200, []) and "etag" not in headers
        # history with a limit: the oldest changes first
        _, body, headers = await call(
            http, hub, "GET", f"entries/history/{ms(times[0]) - 1}", "p1", limit="2"
        )
        assert [d["identifier"] for d in body["result"]] == ids[:2]
        assert headers["etag"] == f'W/"{ms(times[1])}"'

        # getSgvsNewerThan: sort=date, date$gt, limit
        _, body, _ = await call(
            http,
            hub,
            "GET",
            "entries",
            "p1",
            **{"sort": "date", "date$gt": str(ms(times[1])), "limit": "1"},
        )
        assert [d["identifier"] for d in body["result"]] == [ids[2]]
        # getSgvs: sort$desc=date&type=sgv (1000 at most)
        _, body, _ = await call(
            http, hub, "GET", "entries", "p1", **{"sort$desc": "date", "type": "sgv"}
        )
        assert [d["identifier"] for d in body["result"]] == ids[::-1]
        # READ one; entries are sealed readings: read-only documents. Changing one is
        # refused with 400, not Nightscout's 422, which would stop NSClientV3's queue
        status, body, _ = await call(http, hub, "GET", f"entries/{ids[0]}", "p1")
        assert status == 200 and body["result"]["sgv"] == 120 and body["result"]["isReadOnly"]
        read_only = {"status": 400, "message": "Trying to modify read-only document"}
        status, body, _ = await call(http, hub, "PATCH", f"entries/{ids[0]}", "p1", {"sgv": 99})
        assert (status, body) == (400, read_only)
        status, body, _ = await call(http, hub, "DELETE", f"entries/{ids[0]}", "p1")
        assert (status, body) == (400, read_only)
        status, body, _ = await call(http, hub, "GET", f"entries/{ids[0]}", "p1")
        assert status == 200 and body["result"]["sgv"] == 120
        status, body, _ = await call(http, hub, "GET", "entries/no-such-id", "p1")
        assert (status, body) == (404, {"status": 404})
        # lastModified: the newest reading
        _, body, _ = await call(http, hub, "GET", "lastModified", "p1")
        assert body["result"]["collections"]["entries"] == ms(times[3])
        # the v1 API (and so the dashboard's store) holds the four readings, once each
        async with http.get(
            f"{hub.url}/api/v1/entries/sgv.json",
            headers={"api-secret": sha1(hub.secrets["p1"])},
            params={"count": "10"},
        ) as response:
            v1 = await response.json()
        assert sorted(e["sgv"] for e in v1) == [120, 126, 131, 135]


async def test_nsclientv3_treatments_create_resend_patch_and_history(hub: Hub) -> None:
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=20)
    async with aiohttp.ClientSession() as http:
        status, body, _ = await call(http, hub, "POST", "treatments", "p1", aaps_bolus(t0, 4.0))
        # no identifier sent: Nightscout's own, uuid v5 of "<device>_<date>_<eventType>"
        # (no device: JavaScript's "undefined")
        expected = str(uuid.uuid5(NS_NAMESPACE, f"undefined_{ms(t0)}_Meal Bolus"))
        assert (status, body["status"], body["identifier"]) == (201, 201, expected), body
        first_modified = body["lastModified"]
        assert abs(first_modified - ms(datetime.now(UTC))) < 60_000  # srvModified: now
        # the same upload again (with the identifier it was given): found again
        status, body, _ = await call(
            http, hub, "POST", "treatments", "p1", aaps_bolus(t0, 4.0, identifier=expected)
        )
        assert status == 200
        assert body == {
            "status": 200,
            "lastModified": first_modified,
            "identifier": expected,
            "isDeduplication": True,
        }
        status, body, _ = await call(http, hub, "POST", "treatments", "p1", aaps_carbs(t0, 8.0))
        assert status == 201
        carbs_id = body["identifier"]

        # LoadTreatmentsWorker: history from before both
        status, body, headers = await call(
            http, hub, "GET", f"treatments/history/{first_modified - 1}", "p1", limit="500"
        )
        got = body["result"]
        assert [(d["identifier"], d["eventType"]) for d in got] == [
            (expected, "Meal Bolus"),
            (carbs_id, "Carb Correction"),
        ]
        assert got[0]["insulin"] == 4.0 and got[0]["date"] == ms(t0)
        assert got[1]["carbs"] == 8.0
        etag_ms = int(headers["etag"][3:-1])  # NSAndroidClientImpl: substring(3, length - 1)
        assert etag_ms == got[1]["srvModified"] >= got[0]["srvModified"]

        # updateTreatment: PATCH with the identifier, date and utcOffset left out
        patch = aaps_bolus(t0, 5.0, identifier=expected)
        del patch["date"], patch["utcOffset"], patch["app"]
        status, body, _ = await call(http, hub, "PATCH", f"treatments/{expected}", "p1", patch)
        assert (status, body) == (200, {"status": 200})
        status, body, _ = await call(
            http, hub, "GET", f"treatments/history/{etag_ms}", "p1", limit="500"
        )
        assert [(d["identifier"], d["insulin"]) for d in body["result"]] == [(expected, 5.0)]
        assert body["result"][0]["srvModified"] > etag_ms
        assert body["result"][0]["srvCreated"] == got[0]["srvCreated"]
        # a PATCH may not move a treatment in time nor change its type
        status, body, _ = await call(
            http, hub, "PATCH", f"treatments/{expected}", "p1", {"eventType": "Note"}
        )
        assert (status, body) == (
            400,
            {"status": 400, "message": "Field eventType cannot be modified by the client"},
        )
        status, body, _ = await call(
            http, hub, "PATCH", "treatments/nothing-here", "p1", {"insulin": 1}
        )
        assert (status, body) == (404, {"status": 404})

        # getTreatmentsNewerThan: sort=created_at, created_at$gt (ISO 8601), limit
        since = (t0 - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        _, body, _ = await call(
            http,
            hub,
            "GET",
            "treatments",
            "p1",
            **{"sort": "created_at", "created_at$gt": since, "limit": "500"},
        )
        assert sorted(d["identifier"] for d in body["result"]) == sorted([expected, carbs_id])
        status, body, _ = await call(http, hub, "GET", f"treatments/{expected}", "p1")
        assert status == 200 and body["result"]["insulin"] == 5.0
        _, body, _ = await call(http, hub, "GET", "lastModified", "p1")
        assert body["result"]["collections"]["treatments"] > etag_ms
        # the v1 API shows the edit: one bolus of 5 U
        async with http.get(
            f"{hub.url}/api/v1/treatments.json", headers={"api-secret": sha1(hub.secrets["p1"])}
        ) as response:
            v1 = await response.json()
        assert sorted((t["eventType"], t.get("insulin"), t.get("carbs")) for t in v1) == [
            ("Carb Correction", None, 8.0),
            ("Meal Bolus", 5.0, None),
        ]


async def test_a_treatment_uploaded_over_v1_is_found_again_by_time_and_type(hub: Hub) -> None:
    # xDrip+'s PUT of a note, then AndroidAPS creating the same note (created_at + eventType,
    # the treatments' dedupFallbackFields): one treatment, under the identifier it had
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=7)
    iso = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    v1 = {"eventType": "Note", "created_at": iso, "notes": "run", "_id": "5f1e2d3c4b5a697887766554"}
    async with aiohttp.ClientSession() as http:
        async with http.put(
            f"{hub.url}/api/v1/treatments",
            headers={"api-secret": sha1(hub.secrets["p1"])},
            json=v1,
        ) as response:
            assert response.status == 200
        note = {"date": ms(at), "utcOffset": 0, "app": "AAPS", "eventType": "Note", "notes": "run!"}
        status, body, _ = await call(http, hub, "POST", "treatments", "p1", note)
        sent = str(uuid.uuid5(NS_NAMESPACE, f"undefined_{ms(at)}_Note"))
        assert status == 200 and body["isDeduplication"] is True
        assert body["identifier"] == "5f1e2d3c4b5a697887766554"
        assert body["deduplicatedIdentifier"] == "5f1e2d3c4b5a697887766554" != sent
        _, body, _ = await call(http, hub, "GET", "treatments", "p1", eventType="Note")
        assert [(d["identifier"], d["notes"]) for d in body["result"]] == [
            ("5f1e2d3c4b5a697887766554", "run!")
        ]


async def test_bad_uploads_are_nightscout_errors_and_dead_letters_never_500(hub: Hub) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    no_date = {k: v for k, v in aaps_bolus(at, 1.0).items() if k != "date"}
    cases: list[tuple[str, object, str]] = [
        ("treatments", no_date, "Bad or missing date field"),
        (
            "treatments",
            {**aaps_bolus(at, 1.0), "utcOffset": 5000},
            "Bad or missing utcOffset field",
        ),
        (
            "treatments",
            {k: v for k, v in aaps_bolus(at, 1.0).items() if k != "app"},
            "Bad or missing app field",
        ),
        ("entries", {**aaps_sgv(at, 100.0, "Flat"), "app": " "}, "Bad or missing app field"),
        ("treatments", b"{not json", "Bad or missing request body"),
        ("entries", b"[]", "Bad or missing request body"),
    ]
    async with aiohttp.ClientSession() as http:
        for collection, sent, message in cases:
            status, body, _ = await call(http, hub, "POST", collection, "p1", sent)
            assert (status, body) == (400, {"status": 400, "message": message}), sent
        # physiologically impossible: refused by the hub's validation, the others kept
        status, body, _ = await call(http, hub, "POST", "treatments", "p1", aaps_bolus(at, 500.0))
        assert status == 400 and body["status"] == 400 and "insulin" in body["message"]
        status, body, _ = await call(
            http, hub, "POST", "entries", "p1", aaps_sgv(at, 2000.0, "Flat")
        )
        assert status == 400 and body["status"] == 400
    letters = dead_letters(hub)
    bodies = [letter.payload for letter in letters]
    assert b"{not json" in bodies
    assert any(b'"utcOffset": 5000' in b for b in bodies)
    assert any(b'"insulin": 500.0' in b or b'"insulin":500.0' in b for b in bodies)
    # one dead letter per refused upload, however deep in the pipeline it was refused
    assert len([b for b in bodies if b"2000.0" in b]) == 1
    assert len(letters) == 8


async def test_another_patients_token_sees_and_changes_nothing_of_this_patient(
    hub: Hub,
) -> None:
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    async with aiohttp.ClientSession() as http:
        _, sgv, _ = await call(http, hub, "POST", "entries", "p1", aaps_sgv(at, 177.0, "Flat"))
        _, bolus, _ = await call(http, hub, "POST", "treatments", "p1", aaps_bolus(at, 7.25))
        p1_ids = (sgv["identifier"], bolus["identifier"])
        day_before = ms(at - timedelta(days=1))
        reads = [
            ("entries", {"sort$desc": "date"}),
            (f"entries/history/{day_before}", {}),
            ("treatments", {}),
            (f"treatments/history/{day_before}", {}),
            (f"entries/{p1_ids[0]}", {}),
            (f"treatments/{p1_ids[1]}", {}),
            ("lastModified", {}),
        ]
        for path, params in reads:
            status, body, _ = await call(http, hub, "GET", path, "p2", **params)
            text = json.dumps(body)
            assert status in (200, 404), path
            for marker in (*p1_ids, "177", "7.25"):
                assert marker not in text, (path, marker)
        _, body, _ = await call(http, hub, "GET", "lastModified", "p2")
        assert body["result"]["collections"] == {}
        # p2 cannot reach p1's treatment to change it: it is not there for p2
        status, body, _ = await call(
            http, hub, "PATCH", f"treatments/{p1_ids[1]}", "p2", {"insulin": 1.0}
        )
        assert (status, body) == (404, {"status": 404})
        # p1's read-only token reads, and may not write
        status, body, _ = await call(http, hub, "GET", f"treatments/{p1_ids[1]}", "p1-read")
        assert status == 200 and body["result"]["insulin"] == 7.25
        status, body, _ = await call(
            http, hub, "POST", "treatments", "p1-read", aaps_bolus(at, 1.0)
        )
        assert (status, body) == (
            403,
            {"status": 403, "message": "Missing permission api:treatments:create"},
        )
        status, body, _ = await call(
            http, hub, "PATCH", f"treatments/{p1_ids[1]}", "p1-read", {"insulin": 1.0}
        )
        assert (status, body) == (
            403,
            {"status": 403, "message": "Missing permission api:treatments:update"},
        )
        _, body, _ = await call(http, hub, "GET", f"treatments/{p1_ids[1]}", "p1")
        assert body["result"]["insulin"] == 7.25


async def test_collections_and_queries_the_hub_does_not_serve_are_answered_as_nightscout_does(
    hub: Hub,
) -> None:
    async with aiohttp.ClientSession() as http:
        status, body, _ = await call(http, hub, "GET", "nonsense", "p1")
        assert (status, body) == (404, {"status": 404, "message": "Bad operation or collection"})
        # no food or settings storage here: reads find none, writes are refused
        since = str(ms(datetime.now(UTC) - timedelta(days=1)))
        status, body, _ = await call(http, hub, "GET", f"food/history/{since}", "p1")
        assert (status, body) == (200, {"status": 200, "result": []})
        status, body, _ = await call(
            http, hub, "GET", "settings", "p1", **{"sort$desc": "date", "limit": "1"}
        )
        assert (status, body) == (200, {"status": 200, "result": []})
        status, body, _ = await call(
            http, hub, "POST", "food", "p1", {"date": ms(datetime.now(UTC)), "app": "AAPS"}
        )
        assert status == 404 and body["status"] == 404
        for params, message in (
            ({"limit": "0"}, "Parameter limit out of tolerance"),
            ({"limit": "1001"}, "Parameter limit out of tolerance"),
            (
                {"sort": "date", "sort$desc": "date"},
                "Parameters sort and sort_desc cannot be combined",
            ),
            ({"skip": "-1"}, "Parameter skip out of tolerance"),
            ({"sgv$re": "1.*"}, "Unsupported filter operator re"),
        ):
            status, body, _ = await call(http, hub, "GET", "entries", "p1", **params)
            assert (status, body) == (400, {"status": 400, "message": message}), params
        # dateTools.parseToMoment: neither a time nor one after 2000
        for bad in ("yesterday", "0"):
            status, body, _ = await call(http, hub, "GET", f"entries/history/{bad}", "p1")
            assert (status, body) == (
                400,
                {"status": 400, "message": "Bad or missing Last-Modified header/parameter"},
            )


async def test_nsclientv3_deletes_a_treatment_and_followers_see_it_go(hub: Hub) -> None:
    """updateTreatment of an invalidated record: DELETE /v3/treatments/{identifier}
    (delete/operation.js markAsDeleted: kept with isValid false, srvModified now)."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=15)
    async with aiohttp.ClientSession() as http:
        _, wrong, _ = await call(http, hub, "POST", "treatments", "p1", aaps_carbs(at, 50.0))
        _, kept, _ = await call(
            http, hub, "POST", "treatments", "p1", aaps_carbs(at + timedelta(minutes=1), 9.0)
        )
        status, body, _ = await call(http, hub, "DELETE", f"treatments/{wrong['identifier']}", "p1")
        assert (status, body) == (200, {"status": 200})
        status, body, _ = await call(http, hub, "GET", f"treatments/{wrong['identifier']}", "p1")
        assert (status, body) == (410, {"status": 410})
        # history tells followers (and AndroidAPS on other phones) it is gone
        _, body, _ = await call(
            http, hub, "GET", f"treatments/history/{kept['lastModified']}", "p1"
        )
        assert [(d["identifier"], d["isValid"]) for d in body["result"]] == [
            (wrong["identifier"], False)
        ]
        assert body["result"][0]["srvModified"] > kept["lastModified"]
        # searches and API v1 (the dashboard's chart reads the same) no longer show it
        _, body, _ = await call(http, hub, "GET", "treatments", "p1", eventType="Carb Correction")
        assert [d["carbs"] for d in body["result"]] == [9.0]
        async with http.get(
            f"{hub.url}/api/v1/treatments.json", headers={"api-secret": sha1(hub.secrets["p1"])}
        ) as response:
            assert [t.get("carbs") for t in await response.json()] == [9.0]
        status, body, _ = await call(http, hub, "DELETE", "treatments/no-such-identifier", "p1")
        assert (status, body) == (404, {"status": 404})
        # the deletion is a ledger event, sealed soon like the additions (batches: 0.2 s)
        assert await all_events_sealed(hub)
        # a record AndroidAPS invalidated before it was ever uploaded arrives deleted
        status, body, _ = await call(
            http,
            hub,
            "POST",
            "treatments",
            "p1",
            {**aaps_carbs(at + timedelta(minutes=2), 30.0), "isValid": False},
        )
        assert status == 201
        _, found, _ = await call(http, hub, "GET", f"treatments/{body['identifier']}", "p1")
        assert found == {"status": 410}


async def test_put_upserts_under_the_urls_identifier_and_history_takes_the_header(
    hub: Hub,
) -> None:
    """update/operation.js: PUT inserts (201) or replaces (200); history/operation.js: without
    a time in the URL, the Last-Modified header, floored to the second, at or after it."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    note = {"date": ms(at), "utcOffset": 0, "app": "AAPS", "eventType": "Note", "notes": "a"}
    async with aiohttp.ClientSession() as http:
        status, body, headers = await call(http, hub, "PUT", "treatments/my-note-1", "p1", note)
        assert (status, body["identifier"]) == (201, "my-note-1")
        assert headers["location"] == "/api/v3/treatments/my-note-1"
        status, body, _ = await call(
            http, hub, "PUT", "treatments/my-note-1", "p1", {**note, "notes": "b"}
        )
        assert status == 200 and set(body) == {"status", "lastModified"}
        changed = body["lastModified"]
        _, body, _ = await call(http, hub, "GET", "treatments/my-note-1", "p1")
        assert body["result"]["notes"] == "b"
        # the header's second: Last-Modified as an HTTP date
        second = datetime.fromtimestamp(changed // 1000, UTC)
        header = second.strftime("%a, %d %b %Y %H:%M:%S GMT")
        async with http.get(
            f"{hub.url}/api/v3/treatments/history",
            headers={"Authorization": f"Bearer {bearer(hub, 'p1')}", "Last-Modified": header},
        ) as response:
            assert response.status == 200
            found = (await response.json())["result"]
        assert [(d["identifier"], d["srvModified"]) for d in found] == [("my-note-1", changed)]


async def test_mangled_uploads_never_get_a_500(hub: Hub) -> None:
    """NSClientV3-shaped documents with fields dropped, retyped or out of range, and raw
    garbage: every answer is Nightscout's `{status, ...}` with a status below 500."""
    rng = random.Random(20261206)
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    oddities: list[object] = [None, "", "x", -1, 0, 1e308, True, [], {}, "2026-13-45", 10**30]
    async with aiohttp.ClientSession() as http:
        for i in range(60):
            collection = rng.choice(["entries", "treatments"])
            base = (
                aaps_sgv(at + timedelta(minutes=i), 100.0, "Flat")
                if collection == "entries"
                else aaps_bolus(at + timedelta(minutes=i), 1.0)
            )
            doc: dict[str, object] = dict(base)
            for field in rng.sample(sorted(doc), k=rng.randint(1, 3)):
                if rng.random() < 0.3:
                    del doc[field]
                else:
                    doc[field] = rng.choice(oddities)
            method, path = rng.choice([("POST", collection), ("PATCH", f"{collection}/x")])
            sent: object = doc if rng.random() < 0.9 else bytes(rng.randbytes(40))
            status, body, _ = await call(http, hub, method, path, "p1", sent)
            assert status < 500 and body["status"] == status, (method, path, sent, body)


async def test_durations_read_back_as_nsclientv3_parses_them(hub: Hub) -> None:
    """RemoteTreatment.duration is a Kotlin Long: Gson refuses 20.5 and with it the whole
    history answer. TemporaryBasalExtension sends minutes and the exact milliseconds."""
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)
    basal = {
        "date": ms(at),
        "utcOffset": 60,
        "app": "AAPS",
        "isValid": True,
        "eventType": "Temp Basal",
        "duration": 20,
        "durationInMilliseconds": 1_234_567,
        "rate": 0.8,
        "absolute": 0.8,
        "type": "NORMAL",
    }
    async with aiohttp.ClientSession() as http:
        status, body, _ = await call(http, hub, "POST", "treatments", "p1", basal)
        assert status == 201
        _, found, _ = await call(http, hub, "GET", f"treatments/{body['identifier']}", "p1")
    doc = found["result"]
    # 1,234,567 ms is 20.58 minutes: 21 whole minutes, the ms kept exactly
    assert (doc["duration"], doc["durationInMilliseconds"]) == (21, 1_234_567)
    assert isinstance(doc["duration"], int) and doc["absolute"] == 0.8


async def test_nsclientv3_trades_its_access_token_for_a_jwt_and_uploads_with_it(
    hub: Hub,
) -> None:
    from tests.dashboards.nightscout.test_authorization import make_token

    token = make_token(hub, "p1", "AndroidAPS", "admin")
    reader = make_token(hub, "p2", "Follower", "readable")
    now = datetime.now(UTC).replace(microsecond=0)
    async with aiohttp.ClientSession() as http:

        async def jwt_of(access_token: str) -> str:
            async with http.get(f"{hub.url}/api/v2/authorization/request/{access_token}") as r:
                assert r.status == 200
                return str((await r.json())["token"])

        async def v3(method: str, path: str, jwt: str, body: object = None) -> tuple[int, Any]:
            headers = {"Authorization": f"Bearer {jwt}", "Date": str(ms(now))}
            async with http.request(
                method, f"{hub.url}/api/v3/{path}", headers=headers, json=body
            ) as r:
                return r.status, await r.json()

        # NSClientV3's first call carries an empty bearer: refused, so it asks for a JWT.
        status, _ = await v3("GET", "status", "")
        assert status == 401
        signed = await jwt_of(token)
        assert signed.count(".") == 2 and token not in signed
        bolus = {
            "eventType": "Correction Bolus", "insulin": 1.25, "date": ms(now),
            "identifier": str(uuid.uuid4()), "app": "AAPS", "isValid": True,
        }  # fmt: skip
        status, answer = await v3("POST", "treatments", signed, bolus)
        assert status == 201, answer
        status, answer = await v3("GET", f"treatments/{bolus['identifier']}", signed)
        assert status == 200 and answer["result"]["insulin"] == 1.25
        # Another patient's read-only JWT: nothing of p1's, and no writing.
        other = await jwt_of(reader)
        status, answer = await v3("GET", f"treatments/{bolus['identifier']}", other)
        assert status == 404 and "1.25" not in json.dumps(answer)
        status, _ = await v3("POST", "treatments", other, {**bolus, "identifier": "x"})
        assert status == 403


async def test_nsclientv3_devicestatus_and_profile_are_kept_found_again_and_private(
    hub: Hub,
) -> None:
    from tests.dashboards.nightscout.test_devicestatus_profile import aaps_profile, aaps_status

    now = datetime.now(UTC).replace(microsecond=0)
    status_doc = {**aaps_status(now), "date": ms(now), "app": "AAPS"}
    profile_doc = {**aaps_profile(now), "app": "AAPS", "identifier": str(uuid.uuid4())}
    async with aiohttp.ClientSession() as http:
        status, body, _ = await call(http, hub, "POST", "devicestatus", "p1", status_doc)
        assert status == 201, body
        identifier = body["identifier"]
        # uuid v5 of device and date, as Nightscout makes one (no identifier was sent)
        assert uuid.UUID(identifier).version == 5
        status, body, _ = await call(http, hub, "POST", "devicestatus", "p1", status_doc)
        assert status == 200 and body["isDeduplication"] is True
        status, body, _ = await call(http, hub, "POST", "profile", "p1", profile_doc)
        assert status == 201, body

        status, body, _ = await call(http, hub, "GET", f"devicestatus/{identifier}", "p1")
        assert status == 200
        found = body["result"]
        assert found["pump"]["reservoir"] == 112.4 and found["date"] == ms(now)
        assert found["openaps"]["suggested"]["IOB"] == 1.2 and found["isValid"] is True
        status, body, _ = await call(http, hub, "GET", f"devicestatus/history/{ms(now) - 1}", "p1")
        assert [d["identifier"] for d in body["result"]] == [identifier]
        status, body, _ = await call(http, hub, "GET", "profile", "p1", **{"sort$desc": "date"})
        assert [d["identifier"] for d in body["result"]] == [profile_doc["identifier"]]
        assert body["result"][0]["store"]["Day"]["dia"] == 5
        # v1 readers see the same documents
        async with http.get(
            f"{hub.url}/api/v1/devicestatus.json", params={"token": hub.secrets["p1-read"]}
        ) as response:
            assert [d["pump"]["reservoir"] for d in await response.json()] == [112.4]

        # another patient: nothing of p1's, by search, by identifier or in history
        status, body, _ = await call(http, hub, "GET", "devicestatus", "p2")
        assert status == 200 and "112.4" not in json.dumps(body)
        status, _, _ = await call(http, hub, "GET", f"devicestatus/{identifier}", "p2")
        assert status == 404
        # a stored report is not changed; a read-only token changes nothing at all
        status, _, _ = await call(
            http, hub, "PUT", f"devicestatus/{identifier}", "p1", {**status_doc, "x": 1}
        )
        assert status == 400
        status, _, _ = await call(http, hub, "DELETE", f"devicestatus/{identifier}", "p1-read")
        assert status == 403
        status, _, _ = await call(http, hub, "DELETE", f"devicestatus/{identifier}", "p1")
        assert status == 200
        status, _, _ = await call(http, hub, "GET", f"devicestatus/{identifier}", "p1")
        assert status == 404
