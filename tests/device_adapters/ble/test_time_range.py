"""Device clocks at the edges of the calendar: a date-time whose offset or zone arithmetic leaves
datetime's range (years 1-9999) is the device's fault and raises `TimeOutOfRange` (a
`MalformedPayload`), never `OverflowError`; sessions turn it into a dead letter and go on."""

from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_adapters.ble import cgm, glucose
from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.blood_pressure import parse_blood_pressure
from device_adapters.ble.codec import DateTime
from device_adapters.ble.errors import MalformedPayload, TimeOutOfRange
from device_adapters.ble.mapping import (
    Who,
    map_blood_pressure,
    map_cgm,
    map_glucose,
    map_temperature,
    map_weight,
)
from device_adapters.ble.session import CgmSession, HeartRateSession, MeterSession
from device_adapters.ble.thermometer import parse_temperature
from device_adapters.ble.uuids import Char
from device_adapters.ble.virtual import VirtualMeter
from device_adapters.ble.virtual.meter import meter_record
from device_adapters.ble.weight_scale import parse_weight
from gateway.model import Device, DeviceKind, Transport
from gateway.protocols import RejectReason

from .fakes import FakeSink, no_sleep

WHO = Who(patient_id="p1", device_id="meter-1")
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")  # UTC-05:00 in December

# Glucose Measurement: flags 0x03 (time offset + concentration), seq 0x0001,
# base time 9999-12-31 23:30:00 (year 0x270F = 0F 27, month 0C, day 1F, 17 h, 1E min, 00 s),
# time offset 0x003C = +60 min, SFLOAT 0xC00C = 12 x 10^-4 kg/L = 120 mg/dL, type/location 0x12.
# 23:30 + 60 min = 10000-01-01 00:30: past datetime's last day.
YEAR_9999_PLUS_OFFSET = bytes.fromhex("03 0100 0F27 0C 1F 17 1E 00 3C00 0CC0 12")
# Same base time, flags 0x02 (no offset): 23:30 New York time = 04:30 UTC on 10000-01-01.
YEAR_9999_NO_OFFSET = bytes.fromhex("02 0200 0F27 0C 1F 17 1E 00 0CC0 12")
# Offset +29 min: 23:59 on 9999-12-31, the last minute that exists, still maps.
YEAR_9999_LAST_MINUTE = bytes.fromhex("03 0300 0F27 0C 1F 17 1E 00 1D00 0CC0 12")


def test_year_9999_plus_time_offset_is_the_devices_error() -> None:
    m = glucose.parse_glucose_measurement(YEAR_9999_PLUS_OFFSET)
    assert m.base_time.year == 9999 and m.time_offset_min == 60
    with pytest.raises(TimeOutOfRange) as caught:
        map_glucose(m, WHO)
    assert isinstance(caught.value, MalformedPayload)
    assert caught.value.uuid == Char.GLUCOSE_MEASUREMENT
    assert "9999-12-31" in str(caught.value) and "+60 min" in str(caught.value)


def test_year_9999_in_a_zone_west_of_utc_is_the_devices_error() -> None:
    m = glucose.parse_glucose_measurement(YEAR_9999_NO_OFFSET)
    assert map_glucose(m, WHO).readings[0].time == datetime(9999, 12, 31, 23, 30, tzinfo=UTC)
    with pytest.raises(TimeOutOfRange):
        map_glucose(m, WHO, tz=NEW_YORK)


def test_last_representable_minute_still_maps() -> None:
    m = glucose.parse_glucose_measurement(YEAR_9999_LAST_MINUTE)
    (reading,) = map_glucose(m, WHO).readings
    assert reading.time == datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    assert reading.value == pytest.approx(120.0)


def test_meter_session_dead_letters_the_record_and_keeps_going() -> None:
    session = MeterSession(WHO)
    bad = session.on_notification(Char.GLUCOSE_MEASUREMENT, YEAR_9999_PLUS_OFFSET, NOW)
    assert bad.mapped.readings == ()
    (rejected,) = bad.rejected
    assert rejected.reason is RejectReason.MALFORMED
    assert rejected.raw == YEAR_9999_PLUS_OFFSET
    # the next record (seq 3, 9999-12-31 23:59 UTC) still maps
    good = session.on_notification(Char.GLUCOSE_MEASUREMENT, YEAR_9999_LAST_MINUTE, NOW)
    assert [r.seq for r in good.mapped.readings] == [3]


# CGM Session Start Time: 9999-12-31 23:00:00, time zone 0xD0 = -48 (x 15 min = UTC-12:00),
# DST 0. UTC = local - zone = 23:00 + 12 h = 10000-01-01 11:00.
START_9999_WEST = bytes.fromhex("0F27 0C 1F 17 00 00 D0 00")
# 9999-12-31 22:00:00 at UTC+00:00: representable, but a record 120 min later is not.
START_9999_UTC = bytes.fromhex("0F27 0C 1F 16 00 00 00 00")


def test_session_start_time_beyond_year_9999_is_rejected_by_the_parser() -> None:
    with pytest.raises(TimeOutOfRange) as caught:
        cgm.parse_cgm_session_start_time(START_9999_WEST, crc_required=False)
    assert caught.value.uuid == Char.CGM_SESSION_START_TIME


def test_cgm_record_past_year_9999_is_the_devices_error() -> None:
    start = cgm.parse_cgm_session_start_time(START_9999_UTC, crc_required=False).to_utc()
    assert start == datetime(9999, 12, 31, 22, 0, tzinfo=UTC)
    inside = cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=119)
    assert map_cgm(inside, WHO, session_start=start).readings[0].time == datetime(
        9999, 12, 31, 23, 59, tzinfo=UTC
    )
    with pytest.raises(TimeOutOfRange):
        map_cgm(
            cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=120), WHO, session_start=start
        )


def test_cgm_session_falls_back_on_status_when_the_start_time_is_out_of_range() -> None:
    session = CgmSession(WHO)
    session.on_read(
        Char.CGM_FEATURE,
        cgm.encode_cgm_feature(cgm.CgmFeature(features=cgm.CgmFeatureFlags(0))),
        NOW,
    )
    status = cgm.CgmStatus(
        time_offset_min=30,
        status=cgm.CgmStatusOctet(0),
        cal_temp=cgm.CgmCalTempOctet(0),
        warning=cgm.CgmWarningOctet(0),
    )
    session.on_read(Char.CGM_STATUS, cgm.encode_cgm_status(status, with_crc=False), NOW)
    out = session.on_read(Char.CGM_SESSION_START_TIME, START_9999_WEST, NOW)
    (rejected,) = out.rejected
    assert rejected.reason is RejectReason.MALFORMED
    assert session.session_start == NOW - timedelta(minutes=30)  # from the status time offset
    record = cgm.encode_cgm_record(
        cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=35), with_crc=False
    )
    (reading,) = session.on_notification(Char.CGM_MEASUREMENT, record, NOW).mapped.readings
    assert reading.time == NOW + timedelta(minutes=5)


def test_cgm_session_dead_letters_a_record_past_year_9999() -> None:
    session = CgmSession(WHO)
    session.on_read(
        Char.CGM_FEATURE,
        cgm.encode_cgm_feature(cgm.CgmFeature(features=cgm.CgmFeatureFlags(0))),
        NOW,
    )
    session.on_read(Char.CGM_SESSION_START_TIME, START_9999_UTC, NOW)
    records = cgm.encode_cgm_measurements(
        [
            cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=120),
            cgm.CgmMeasurement(glucose_mg_dl=101.0, time_offset_min=119),
        ],
        with_crc=False,
    )
    out = session.on_notification(Char.CGM_MEASUREMENT, records, NOW)
    assert [r.value for r in out.mapped.readings] == [101.0]
    (rejected,) = out.rejected
    assert rejected.reason is RejectReason.MALFORMED


# Time stamps 9999-12-31 23:00:00 read in New York time (UTC-5) are 10000-01-01 04:00 UTC.
# Blood pressure: flags 0x02, SFLOAT 120/80/93 mmHg (0x0078, 0x0050, 0x005D), then the stamp.
BP_9999 = bytes.fromhex("02 7800 5000 5D00 0F27 0C 1F 17 00 00")
# Thermometer: flags 0x02, FLOAT 0xFF000173 = 371 x 10^-1 = 37.1 degC, then the stamp.
TEMP_9999 = bytes.fromhex("02 730100FF 0F27 0C 1F 17 00 00")
# Weight: flags 0x02, 0x3A98 = 15000 x 0.005 kg = 75 kg, then the stamp.
WEIGHT_9999 = bytes.fromhex("02 983A 0F27 0C 1F 17 00 00")


def test_time_stamps_past_year_9999_are_the_devices_error() -> None:
    bp = parse_blood_pressure(BP_9999)
    temp = parse_temperature(TEMP_9999)
    weight = parse_weight(WEIGHT_9999)
    assert map_weight(weight, WHO, now=NOW).readings[0].value == pytest.approx(75.0)
    with pytest.raises(TimeOutOfRange):
        map_blood_pressure(bp, WHO, now=NOW, tz=NEW_YORK)
    with pytest.raises(TimeOutOfRange):
        map_temperature(temp, WHO, now=NOW, tz=NEW_YORK)
    with pytest.raises(TimeOutOfRange):
        map_weight(weight, WHO, now=NOW, tz=NEW_YORK)


async def test_adapter_with_a_year_9999_meter_stores_the_others_and_dead_letters_it() -> None:
    t0 = datetime(2024, 3, 1, tzinfo=UTC)
    records = [meter_record(seq, t0 + timedelta(hours=seq), 100 + seq) for seq in (1, 2, 4)]
    # seq 3: the meter's clock says 9999-12-31 23:30 New York time (10000-01-01 04:30 UTC)
    records.append(meter_record(3, datetime(9999, 12, 31, 23, 30, tzinfo=UTC), 120))
    meter = VirtualMeter(records, requires_bonding=False)
    sink = FakeSink()
    device = Device(
        device_id="meter-9", patient_id="p1", kind=DeviceKind.METER, transport=Transport.BLE
    )
    adapter = BleAdapter(
        device=device, transport=meter, sink=sink, resume=sink, sleep=no_sleep, tz=NEW_YORK
    )
    stats = await adapter.run(until_synced=True, max_attempts=1)
    assert sorted(r.seq for r in sink.readings if r.seq is not None) == [1, 2, 4]
    (letter,) = sink.dead_letters
    assert letter.reason is RejectReason.MALFORMED and letter.origin.device_id == "meter-9"
    assert "out of range" in letter.detail
    assert stats.dead_letters == 1


# -- properties: structurally valid records with extreme fields ---------------------------------

ZONES: list[tzinfo] = [
    UTC,
    timezone(timedelta(hours=-12)),
    timezone(timedelta(hours=14)),
    NEW_YORK,
    ZoneInfo("Pacific/Kiritimati"),  # UTC+14
    ZoneInfo("Pacific/Pago_Pago"),  # UTC-11
]
FIRST_SECOND = 1 * 86400  # datetime.min as seconds since day 0 of the proleptic calendar
LAST_SECOND = date(9999, 12, 31).toordinal() * 86400 + 86399

edge_datetimes = st.one_of(
    st.datetimes(min_value=datetime(9999, 12, 30), max_value=datetime(9999, 12, 31, 23, 59, 59)),
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(1582, 1, 2)),
    st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59)),
)
edge_dates = edge_datetimes.map(lambda d: DateTime.from_datetime(d.replace(tzinfo=UTC)))


def _seconds(d: DateTime, tz: tzinfo, plus_min: int) -> int:
    """The instant as whole seconds since day 0, in integers that never overflow."""
    naive = datetime(d.year, d.month, d.day, d.hours, d.minutes, d.seconds)
    utc_offset = tz.utcoffset(naive)
    assert utc_offset is not None
    local = date(d.year, d.month, d.day).toordinal() * 86400 + d.hours * 3600
    local += d.minutes * 60 + d.seconds
    return local - int(utc_offset.total_seconds()) + plus_min * 60


def _as_seconds(t: datetime) -> int:
    return t.toordinal() * 86400 + t.hour * 3600 + t.minute * 60 + t.second


@settings(max_examples=300, deadline=None)
@given(
    base=edge_dates,
    offset=st.sampled_from([-32768, -1, 0, 1, 32767]) | st.integers(-32768, 32767),
    tz=st.sampled_from(ZONES),
)
def test_glucose_record_maps_exactly_when_its_instant_exists(
    base: DateTime, offset: int, tz: tzinfo
) -> None:
    m = glucose.GlucoseMeasurement(
        sequence_number=1,
        base_time=base,
        time_offset_min=offset,
        concentration=0.0012,
        sample_type=glucose.GlucoseType.CAPILLARY_PLASMA,
    )
    parsed = glucose.parse_glucose_measurement(glucose.encode_glucose_measurement(m))
    expected = _seconds(base, tz, offset)
    try:
        out = map_glucose(parsed, WHO, tz=tz)
    except TimeOutOfRange:
        assert not FIRST_SECOND <= expected <= LAST_SECOND
        return
    assert FIRST_SECOND <= expected <= LAST_SECOND
    assert _as_seconds(out.readings[0].time) == expected


@settings(max_examples=300, deadline=None)
@given(
    start=edge_dates,
    zone=st.sampled_from([-48, -1, 0, 56, cgm.TIME_ZONE_UNKNOWN]) | st.integers(-48, 56),
    dst=st.sampled_from(cgm.DstOffset),
    offset=st.sampled_from([0, 0xFFFF]) | st.integers(0, 0xFFFF),
    crc=st.booleans(),
)
def test_cgm_session_start_and_records_map_exactly_when_their_instants_exist(
    start: DateTime, zone: int, dst: cgm.DstOffset, offset: int, crc: bool
) -> None:
    value = cgm.CgmSessionStartTime(start=start, time_zone_15min=zone, dst=dst)
    zone_min = 0 if zone == cgm.TIME_ZONE_UNKNOWN else zone * 15
    dst_min = {0: 0, 2: 30, 4: 60, 8: 120, 255: 0}[dst]  # CGMS DST offset codes
    expected_start = _seconds(start, UTC, -(zone_min + dst_min))
    data = cgm.encode_cgm_session_start_time(value, with_crc=crc)
    try:
        session_start = cgm.parse_cgm_session_start_time(data, crc_required=crc).to_utc()
    except TimeOutOfRange:
        assert not FIRST_SECOND <= expected_start <= LAST_SECOND
        return
    assert session_start is not None and _as_seconds(session_start) == expected_start
    record = cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=offset)
    try:
        out = map_cgm(record, WHO, session_start=session_start)
    except TimeOutOfRange:
        assert expected_start + offset * 60 > LAST_SECOND
        return
    assert _as_seconds(out.readings[0].time) == expected_start + offset * 60


@settings(max_examples=200, deadline=None)
@given(stamp=edge_dates, tz=st.sampled_from(ZONES))
def test_time_stamped_measurements_map_or_raise_their_own_error(
    stamp: DateTime, tz: tzinfo
) -> None:
    bp = parse_blood_pressure(BP_9999[:7] + stamp.encode())
    temp = parse_temperature(TEMP_9999[:5] + stamp.encode())
    weight = parse_weight(WEIGHT_9999[:3] + stamp.encode())
    expected = _seconds(stamp, tz, 0)
    exists = FIRST_SECOND <= expected <= LAST_SECOND
    for mapped in (
        lambda: map_blood_pressure(bp, WHO, now=NOW, tz=tz),
        lambda: map_temperature(temp, WHO, now=NOW, tz=tz),
        lambda: map_weight(weight, WHO, now=NOW, tz=tz),
    ):
        try:
            out = mapped()
        except TimeOutOfRange:
            assert not exists
            continue
        assert exists and _as_seconds(out.readings[0].time) == expected


REJECT_REASONS = {RejectReason.MALFORMED, RejectReason.CRC_MISMATCH, RejectReason.SCHEMA}


# -- properties: any bytes through a whole session never raise ---------------------------------

SESSION_UUIDS = [
    Char.GLUCOSE_MEASUREMENT,
    Char.GLUCOSE_MEASUREMENT_CONTEXT,
    Char.GLUCOSE_FEATURE,
    Char.RECORD_ACCESS_CONTROL_POINT,
    Char.CGM_MEASUREMENT,
    Char.CGM_FEATURE,
    Char.CGM_STATUS,
    Char.CGM_SESSION_START_TIME,
    Char.CGM_SESSION_RUN_TIME,
    Char.CGM_SPECIFIC_OPS_CONTROL_POINT,
    Char.HEART_RATE_MEASUREMENT,
]


def _nasty_values() -> st.SearchStrategy[bytes]:
    """Random bytes, and valid values whose date-time bytes are replaced by extreme ones."""
    year_9999 = st.sampled_from(
        [
            b"\x0f\x27\x0c\x1f\x17\x3b\x3b",
            b"\x0f\x27\x0c\x1f\x17\x00\x00",
            b"\x00\x00\x0d\x1f\x00\x00\x00",
        ]
    )
    glucose_values = st.builds(
        lambda when, tail: b"\x1b\x01\x00" + when + tail, year_9999, st.binary(max_size=8)
    )
    start_values = st.builds(
        lambda when, zone: when + zone + b"\x00", year_9999, st.binary(min_size=1, max_size=1)
    )
    return st.one_of(st.binary(max_size=24), glucose_values, start_values)


@settings(max_examples=400, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(SESSION_UUIDS), _nasty_values(), st.booleans()), max_size=12
    ),
    tz=st.sampled_from(ZONES),
)
def test_sessions_never_raise_on_any_bytes(
    steps: list[tuple[str, bytes, bool]], tz: tzinfo
) -> None:
    sessions = [MeterSession(WHO, tz=tz), CgmSession(WHO), HeartRateSession(WHO)]
    for session in sessions:
        session.connect_actions()
        for uuid, data, is_read in steps:
            out = (session.on_read if is_read else session.on_notification)(uuid, data, NOW)
            assert all(r.reason in REJECT_REASONS for r in out.rejected)
        session.on_disconnect()
