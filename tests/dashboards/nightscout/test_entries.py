"""The Nightscout entries protocol, pure: upload bodies as xDrip+ and Juggluco build them,
follower query strings, and entries as followers read them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from dashboards.nightscout.entries import (
    EntriesRejected,
    EntryType,
    parse_query,
    parse_upload,
    select,
    to_entries,
)
from gateway.model import DeviceEventKind, Reading, ReadingKind, Source
from gateway.protocols import RejectReason
from gateway.units import Unit

T0_MS = 1_765_000_000_000  # 2025-12-06T05:46:40Z
T0 = datetime(2025, 12, 6, 5, 46, 40, tzinfo=UTC)
ALL = frozenset({EntryType.SGV, EntryType.MBG})


def parse(body: object) -> list:  # type: ignore[type-arg]
    return parse_upload(json.dumps(body).encode(), patient_id="p1", device_id="ns-p1")


def test_an_xdrip_batch_becomes_cgm_and_meter_readings_and_skips_calibrations() -> None:
    # populateV1APIBGEntry, populateV1APIMeterReadingEntry, populateV1APICalibrationEntry
    body = [
        {
            "device": "xDrip-DexcomG6",
            "date": T0_MS,
            "dateString": "2025-12-06T06:46:40.000+0100",
            "sgv": 142,
            "delta": -1.993,
            "direction": "FortyFiveDown",
            "type": "sgv",
            "filtered": 142000,
            "unfiltered": 142000,
            "rssi": 100,
            "noise": 1,
            "sysTime": "2025-12-06T06:46:40.000+0100",
        },
        {"device": "xDrip-DexcomG6", "type": "mbg", "date": T0_MS, "mbg": 131.0},
        {"device": "xDrip-DexcomG6", "type": "cal", "date": T0_MS, "slope": 850.0},
    ]
    sgv, mbg, cal = parse(body)
    assert sgv.reading is not None and mbg.reading is not None
    assert (sgv.reading.kind, sgv.reading.value, sgv.reading.time) == (
        ReadingKind.CGM_GLUCOSE,
        142.0,
        T0,
    )
    assert (sgv.reading.patient_id, sgv.reading.device_id) == ("p1", "ns-p1")
    assert set(sgv.reading.status) == {"direction=FortyFiveDown", "noise=1"}
    assert (mbg.reading.kind, mbg.reading.value) == (ReadingKind.GLUCOSE, 131.0)
    assert cal.reading is None and cal.event is None and cal.error is None
    assert json.loads(sgv.raw) == body[0]


def test_the_body_never_names_the_patient() -> None:
    (entry,) = parse([{"type": "sgv", "date": T0_MS, "sgv": 100, "patient_id": "p2"}])
    assert entry.reading is not None and entry.reading.patient_id == "p1"


def test_one_entry_object_and_a_date_string_with_an_offset() -> None:
    (entry,) = parse({"type": "sgv", "dateString": "2025-12-06T06:46:40.000+0100", "sgv": 90})
    assert entry.reading is not None and entry.reading.time == T0


def test_a_date_string_with_a_space_before_the_time() -> None:
    (entry,) = parse([{"type": "sgv", "dateString": "2025-12-06 06:46:40+01:00", "sgv": 90}])
    assert entry.reading is not None and entry.reading.time == T0


def test_an_sgv_below_39_is_a_cgm_error_code_not_glucose() -> None:
    (entry,) = parse([{"type": "sgv", "date": T0_MS, "sgv": 5}])
    assert entry.reading is None and entry.event is not None
    assert entry.event.kind is DeviceEventKind.SENSOR_ERROR
    assert "SENSOR_NOT_CALIBRATED" in entry.event.detail


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"type": "sgv", "date": T0_MS, "sgv": "high"}, RejectReason.SCHEMA),
        ({"type": "sgv", "date": T0_MS}, RejectReason.SCHEMA),
        ({"type": "sgv", "sgv": 100}, RejectReason.SCHEMA),
        ({"type": "sgv", "date": True, "sgv": 100}, RejectReason.SCHEMA),
        ({"type": "sgv", "dateString": "yesterday", "sgv": 100}, RejectReason.SCHEMA),
        ({"type": "sgv", "dateString": "2025-12-06T05:00:00", "sgv": 100}, RejectReason.SCHEMA),
        ({"type": "sgv", "date": 1e300, "sgv": 100}, RejectReason.FUTURE_TIME),
        ({"type": "sgv", "date": 5, "sgv": 100}, RejectReason.TOO_OLD),
        ({"type": "food", "date": T0_MS}, RejectReason.UNKNOWN_KIND),
        ("sgv", RejectReason.SCHEMA),
    ],
)
def test_a_bad_entry_is_refused_alone(entry: object, reason: RejectReason) -> None:
    good, bad = parse([{"type": "sgv", "date": T0_MS, "sgv": 100}, entry])
    assert good.reading is not None
    assert bad.error is not None and bad.error.reason is reason and bad.error.index == 1
    assert bad.reading is None


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"[{", RejectReason.MALFORMED),
        (b"\xff\xfe", RejectReason.MALFORMED),
        (b'"sgv"', RejectReason.SCHEMA),
        (b'{"sgv": 100}', RejectReason.SCHEMA),
        (json.dumps([{}] * 12_001).encode(), RejectReason.OVERSIZED),
    ],
)
def test_a_body_that_is_no_entries_at_all(body: bytes, reason: RejectReason) -> None:
    with pytest.raises(EntriesRejected) as caught:
        parse_upload(body, patient_id="p1", device_id="ns-p1")
    assert caught.value.reason is reason


# -- queries ---------------------------------------------------------------------------------


def test_without_a_date_filter_a_query_covers_four_days_and_ten_entries() -> None:
    query = parse_query([("rr", "12345")], now=T0, types=ALL)
    assert (query.count, query.since) == (10, T0 - timedelta(days=4))


def test_date_filters_in_ms_and_iso_8601() -> None:
    query = parse_query(
        [
            ("count", "288"),
            ("find[date][$gte]", str(T0_MS - 3_600_000)),
            ("find[dateString][$lte]", "2025-12-06T06:46:40.000+01:00"),
        ],
        now=T0 + timedelta(days=1),
        types=ALL,
    )
    assert (query.count, query.since, query.until) == (288, T0 - timedelta(hours=1), T0)


def test_strict_bounds_move_by_one_millisecond() -> None:
    query = parse_query(
        [("find[date][$gt]", str(T0_MS)), ("find[date][$lt]", str(T0_MS + 10))],
        now=T0,
        types=ALL,
    )
    assert query.since == T0 + timedelta(milliseconds=1)
    assert query.until == T0 + timedelta(milliseconds=9)


def test_a_plus_sent_unescaped_arrives_as_a_space() -> None:
    query = parse_query(
        [("find[dateString][$gte]", "2025-12-06T06:46:40 01:00")], now=T0, types=ALL
    )
    assert query.since == T0


@pytest.mark.parametrize(
    "param",
    [("find[date][$gte]", "soon"), ("count", "ten"), ("find[_id]", "x"), ("find[date][$ne]", "1")],
)
def test_a_filter_that_cannot_be_applied_is_refused(param: tuple[str, str]) -> None:
    with pytest.raises(EntriesRejected):
        parse_query([param], now=T0, types=ALL)


def cgm(minutes: float, value: float, *status: str) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="ns-p1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=T0 + timedelta(minutes=minutes),
        source=Source.HTTP,
        status=status,
    )


def test_entries_newest_first_with_computed_and_uploaded_arrows() -> None:
    history = [cgm(0, 120), cgm(5, 110), cgm(10, 100), cgm(15, 90, "direction=DoubleUp")]
    query = parse_query([("count", "3")], now=T0 + timedelta(minutes=20), types=ALL)
    chosen = select(history, query)
    entries = to_entries(chosen, history, {"ns-p1": "Nightscout uploader"})
    assert [e["sgv"] for e in entries] == [90, 100, 110]
    # The uploader's own arrow wins; the 10-minute reading has three readings over 10
    # minutes falling 2 mg/dL/min: SingleDown, delta -10 per 5 minutes.
    assert [e["direction"] for e in entries] == ["DoubleUp", "SingleDown", "NOT COMPUTABLE"]
    assert entries[1]["delta"] == -10.0 and "delta" not in entries[2]
    first = entries[0]
    assert first["type"] == "sgv" and first["device"] == "Nightscout uploader"
    assert first["date"] == T0_MS + 15 * 60_000
    assert first["dateString"] == "2025-12-06T06:01:40.000Z"
    assert isinstance(first["_id"], str) and len(first["_id"]) == 24
