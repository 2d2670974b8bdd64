"""dashboards/nightscout/treatments.py, sans I/O: Nightscout treatment JSON in, `Treatment`s
out, and follower queries. Expected values from Nightscout's lib/server/treatments.js
(prepareData, upsertQueryFor) and lib/api/treatments/index.js, worked out by hand."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dashboards.nightscout.entries import EntriesRejected
from dashboards.nightscout.treatments import (
    parse_query,
    parse_treatments,
    select,
    to_nightscout,
    treatment_id,
)
from gateway.model import Treatment, TreatmentKind
from gateway.protocols import RejectReason

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def one(item: object) -> Treatment:
    [parsed] = parse_treatments(json.dumps(item).encode(), patient_id="p1", now=NOW)
    assert parsed.treatment is not None, parsed.error
    return parsed.treatment


@pytest.mark.parametrize(
    ("item", "kind", "insulin", "carbs"),
    [
        ({"eventType": "Meal Bolus", "insulin": 6.5, "carbs": 45}, "insulin_bolus", 6.5, 45.0),
        ({"eventType": "Meal Bolus", "carbs": 45}, "carbs", None, 45.0),  # AndroidAPS >= 12 g
        ({"eventType": "Correction Bolus", "insulin": "0.3"}, "insulin_bolus", 0.3, None),
        ({"eventType": "Carb Correction", "carbs": 8}, "carbs", None, 8.0),
        ({"eventType": "<none>", "insulin": 4, "carbs": 0}, "insulin_bolus", 4.0, None),  # xDrip+
        ({"eventType": "<none>", "insulin": 0, "carbs": 20}, "carbs", None, 20.0),
        ({"eventType": "Note", "notes": "sick"}, "note", None, None),
        ({"eventType": "Exercise", "duration": 45}, "exercise", None, None),
        ({"eventType": "Sensor Start"}, "sensor_start", None, None),
        ({"eventType": "Sensor Change"}, "sensor_change", None, None),
        ({"eventType": "Site Change"}, "site_change", None, None),
        ({"eventType": "Profile Switch", "profile": "Work"}, "other", None, None),
        ({"eventType": "Temp Basal", "percent": -50, "duration": 30}, "other", None, None),
    ],
)
def test_event_types_become_kinds(
    item: dict[str, object], kind: str, insulin: float | None, carbs: float | None
) -> None:
    t = one({**item, "created_at": "2026-12-01T11:00:00.000Z"})
    assert (t.kind.value, t.insulin_units, t.carbs_grams) == (kind, insulin, carbs)


def test_a_temp_basal_keeps_rate_and_the_unrounded_duration() -> None:
    t = one(
        {
            "eventType": "Temp Basal",
            "created_at": "2026-12-01T11:00:00.000Z",
            "duration": 31,  # AndroidAPS rounds to minutes here ...
            "durationInMilliseconds": 1_830_000,  # ... and sends the exact 30.5 min
            "absolute": 0.8,
            "rate": 0.8,
        }
    )
    assert (t.kind, t.rate_u_h, t.duration_min) == (TreatmentKind.TEMP_BASAL, 0.8, 30.5)


def test_times_as_nightscout_takes_them() -> None:
    base = {"eventType": "Note", "notes": "x"}
    # eventTime wins over created_at (prepareData); an offset is honoured
    t = one(
        {**base, "created_at": "2026-12-01T11:00:00Z", "eventTime": "2026-12-01T11:30:00+01:00"}
    )
    assert t.time == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    # xDrip+'s timestamp (ms) when there is no created_at; nothing at all: now
    assert one({**base, "timestamp": 1_796_122_800_000}).time == datetime(
        2026, 12, 1, 11, 0, tzinfo=UTC
    )
    assert one(base).time == NOW


def test_resends_are_recognised_as_nightscout_does() -> None:
    at = {"created_at": "2026-12-01T11:00:00.000Z", "eventType": "Correction Bolus", "insulin": 2}
    assert one({**at, "identifier": "aaps-7"}).dedupe_key == "identifier:aaps-7"
    assert (
        one({**at, "_id": "5f0c2a9e7b4d4e219a6b0c5d"}).dedupe_key == "_id:5f0c2a9e7b4d4e219a6b0c5d"
    )
    assert one({**at, "uuid": "u-1"}).dedupe_key == "uuid:u-1"
    # no id at all: the time (20788 days + 11 h after 1970 = 1796122800000 ms), type, amounts
    assert one(at).dedupe_key == "at:1796122800000|Correction Bolus|2.0|None"


def test_bad_treatments_are_refused_one_by_one_and_bad_bodies_whole() -> None:
    parsed = parse_treatments(
        b'[{"eventType": "Meal Bolus", "insulin": "lots"}, 7, {"eventType": "Note"}]',
        patient_id="p1",
        now=NOW,
    )
    assert [p.error.reason if p.error else None for p in parsed] == [
        RejectReason.SCHEMA,
        RejectReason.SCHEMA,
        None,
    ]
    with pytest.raises(EntriesRejected):
        parse_treatments(b"{nope", patient_id="p1", now=NOW)
    with pytest.raises(EntriesRejected):
        parse_treatments(b'"a string"', patient_id="p1", now=NOW)


def test_queries_as_followers_send_them() -> None:
    q = parse_query([], now=NOW)
    assert (q.count, q.since, q.event_type) == (100, NOW - timedelta(days=4), None)
    q = parse_query([("find[created_at][$gte]", "2026-11-30T00:00:00.000Z")], now=NOW)
    assert (q.count, q.since) == (1000, datetime(2026, 11, 30, tzinfo=UTC))  # with a find: 1000
    q = parse_query([("count", "5"), ("find[eventType]", "Site Change")], now=NOW)
    assert (q.count, q.event_type) == (5, "Site Change")
    with pytest.raises(EntriesRejected):
        parse_query([("find[glucose][$gte]", "100")], now=NOW)


def test_reads_back_in_nightscouts_shape_and_filters() -> None:
    items = [
        {
            "eventType": "Meal Bolus",
            "insulin": 6,
            "carbs": 50,
            "created_at": "2026-12-01T11:00:00.000Z",
            "identifier": "a",
        },
        {"eventType": "Correction Bolus", "insulin": 1, "created_at": "2026-12-01T10:00:00.000Z"},
        {"eventType": "Carb Correction", "carbs": 10, "created_at": "2026-12-01T09:00:00.000Z"},
    ]
    parsed = parse_treatments(json.dumps(items).encode(), patient_id="p1", now=NOW)
    stored = [p.treatment for p in parsed if p.treatment]  # newest first, as storage gives
    meal = to_nightscout(stored[0])
    assert meal == {
        "_id": treatment_id(stored[0]),
        "eventType": "Meal Bolus",
        "created_at": "2026-12-01T11:00:00.000Z",
        "mills": 1_796_122_800_000,
        "utcOffset": 0,
        "identifier": "a",
        "insulin": 6.0,
        "carbs": 50.0,
    }
    # an uploader's own ObjectId is answered as the _id (xDrip+ finds its treatments by it)
    [x] = parse_treatments(
        b'{"_id": "5f0c2a9e7b4d4e219a6b0c5d", "insulin": 1}', patient_id="p1", now=NOW
    )
    assert x.treatment and treatment_id(x.treatment) == "5f0c2a9e7b4d4e219a6b0c5d"
    carbs_only = select(stored, parse_query([("find[carbs][$gt]", "0")], now=NOW))
    assert [t.carbs_grams for t in carbs_only] == [50.0, 10.0]
    boluses = select(stored, parse_query([("find[insulin][$gte]", "2")], now=NOW))
    assert [t.insulin_units for t in boluses] == [6.0]
