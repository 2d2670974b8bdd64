from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from device_adapters.ble import cgm, glucose, heart_rate
from device_adapters.ble.blood_pressure import parse_blood_pressure
from device_adapters.ble.errors import MalformedPayload
from device_adapters.ble.mapping import (
    Who,
    map_blood_pressure,
    map_cgm,
    map_glucose,
    map_heart_rate,
    map_temperature,
    map_weight,
)
from device_adapters.ble.thermometer import parse_temperature
from device_adapters.ble.weight_scale import parse_weight
from gateway.model import DeviceEventKind, ReadingKind
from gateway.units import Unit

WHO = Who(patient_id="p1", device_id="meter-1")
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)


def test_kg_per_l_record_maps_to_mg_dl_with_seq_time_and_high_event() -> None:
    m = glucose.parse_glucose_measurement(bytes.fromhex("0B0201E807030F081E0005000CC0122000"))
    out = map_glucose(m, WHO)
    (r,) = out.readings
    # 0.0012 kg/L x 100,000 = 120 mg/dL; 08:30 + 5 min offset
    assert r.kind is ReadingKind.GLUCOSE
    assert r.value == pytest.approx(120.0)
    assert r.unit is Unit.MG_DL
    assert r.seq == 258
    assert r.time == datetime(2024, 3, 15, 8, 35, tzinfo=UTC)
    assert r.dedupe_key() == "seq:glucose:258"
    assert [e.kind for e in out.events] == [DeviceEventKind.RESULT_TOO_HIGH]


def test_mol_per_l_keeps_original_mmol() -> None:
    m = glucose.parse_glucose_measurement(bytes.fromhex("060100E807030F081E0041C021"))
    (r,) = map_glucose(m, WHO).readings
    # 0.0065 mol/L x 1000 = 6.5 mmol/L; 6.5 x 18.01559 = 117.101335 mg/dL
    assert r.original_value == pytest.approx(6.5)
    assert r.original_unit is Unit.MMOL_L
    assert r.value == pytest.approx(117.1013, abs=1e-4)


def test_base_time_read_in_the_meter_zone() -> None:
    m = glucose.parse_glucose_measurement(bytes.fromhex("060100E807030F081E0041C021"))
    (r,) = map_glucose(m, WHO, tz=ZoneInfo("Europe/Berlin")).readings
    # 08:30 CET (UTC+1 on 15 March) = 07:30 UTC
    assert r.time == datetime(2024, 3, 15, 7, 30, tzinfo=UTC)


def test_negative_time_offset() -> None:
    # flags 0x03 (offset + concentration), seq 3, offset 0xFFC4 = -60 min
    m = glucose.parse_glucose_measurement(bytes.fromhex("030300E807030F081E00C4FF0CC012"))
    (r,) = map_glucose(m, WHO).readings
    assert r.time == datetime(2024, 3, 15, 7, 30, tzinfo=UTC)


def test_special_value_becomes_event_never_number() -> None:
    # flags 0x02, seq 3, SFLOAT 0x07FF = NaN
    m = glucose.parse_glucose_measurement(bytes.fromhex("020300E807030F081E00FF0712"))
    out = map_glucose(m, WHO)
    assert out.readings == ()
    (event,) = out.events
    assert event.kind is DeviceEventKind.SPECIAL_VALUE
    assert event.seq == 3
    assert "NaN" in event.detail


def test_control_solution_is_not_a_patient_reading() -> None:
    # type/location 0x4A: location 4 control solution, type 10 control solution
    m = glucose.parse_glucose_measurement(bytes.fromhex("020300E807030F081E000CC04A"))
    assert map_glucose(m, WHO).readings == ()


def test_unknown_base_time_is_malformed() -> None:
    m = glucose.parse_glucose_measurement(bytes.fromhex("02030000000000000000" + "0CC012"))
    with pytest.raises(MalformedPayload):
        map_glucose(m, WHO)


def test_lower_than_device_can_process_is_bit_6() -> None:
    # status 0x0040 = bit 6: result LOWER than the device can process (GLS, not the
    # swapped naming of some libraries)
    m = glucose.parse_glucose_measurement(bytes.fromhex("0A0300E807030F081E000CC0124000"))
    assert [e.kind for e in map_glucose(m, WHO).events] == [DeviceEventKind.RESULT_TOO_LOW]


def test_cgm_time_is_session_start_plus_offset_and_status_events() -> None:
    records = cgm.parse_cgm_measurements(bytes.fromhex("0A0378000F00F1FF5F0009E02D002C01400802"))
    start = datetime(2024, 3, 15, 8, 0, tzinfo=UTC)
    first = map_cgm(records[0], WHO, session_start=start)
    assert first.readings[0].time == start + timedelta(minutes=15)
    assert first.readings[0].kind is ReadingKind.CGM_GLUCOSE
    assert first.readings[0].value == 120.0
    assert first.readings[0].seq is None
    second = map_cgm(records[1], WHO, session_start=start)
    assert second.readings[0].time == start + timedelta(minutes=300)
    assert {e.kind for e in second.events} == {
        DeviceEventKind.RESULT_TOO_LOW,
        DeviceEventKind.CALIBRATION_REQUIRED,
        DeviceEventKind.BATTERY_LOW,
    }


def test_session_start_time_zone_and_dst() -> None:
    s = cgm.parse_cgm_session_start_time(bytes.fromhex("E807030F0A00000800"))
    assert s.to_utc() == datetime(2024, 3, 15, 8, 0, tzinfo=UTC)  # 10:00 at UTC+2
    s = cgm.parse_cgm_session_start_time(bytes.fromhex("E807030F0A00000804"))
    assert s.to_utc() == datetime(2024, 3, 15, 7, 0, tzinfo=UTC)  # + 1 h DST


def test_heart_rate_rr_intervals_are_distinct_beats_in_ms() -> None:
    # 72 bpm, RR 820/1024 s = 800.78125 ms, 1024/1024 s = 1000 ms, 1000 ms
    m = heart_rate.parse_heart_rate(bytes.fromhex("16483403000400 04".replace(" ", "")))
    out = map_heart_rate(m, WHO, now=NOW)
    hr = [r for r in out.readings if r.kind is ReadingKind.HEART_RATE]
    rr = [r for r in out.readings if r.kind is ReadingKind.RR_INTERVAL]
    assert [r.value for r in hr] == [72.0]
    assert [r.value for r in rr] == [800.781, 1000.0, 1000.0]
    assert all(r.seq is None for r in out.readings)
    # the last beat ends now, each earlier one 1000 ms before the next
    assert [r.time for r in rr] == [NOW - timedelta(seconds=2), NOW - timedelta(seconds=1), NOW]
    assert len({r.dedupe_key() for r in rr}) == 3


def test_blood_pressure_kpa_to_mmhg() -> None:
    # flags 0x01 kPa; 0xF0A0 = 16.0, 0xF06B = 10.7, 0xF07D = 12.5 kPa
    m = parse_blood_pressure(bytes.fromhex("01A0F06BF07DF0"))
    out = map_blood_pressure(m, WHO, now=NOW)
    systolic = next(r for r in out.readings if r.kind is ReadingKind.BLOOD_PRESSURE_SYSTOLIC)
    assert systolic.value == pytest.approx(16.0 * 7.500617, abs=1e-4)  # 120.0099 mmHg
    assert systolic.time == NOW


def test_fahrenheit_and_special_temperature() -> None:
    # FLOAT 0xFF0003DA = 986 x 10^-1 = 98.6 degF -> (98.6 - 32) x 5/9 = 37.0 degC
    out = map_temperature(parse_temperature(bytes.fromhex("01DA0300FF")), WHO, now=NOW)
    assert out.readings[0].value == pytest.approx(37.0)
    out = map_temperature(parse_temperature(bytes.fromhex("00FFFF7F00")), WHO, now=NOW)
    assert out.readings == () and out.events[0].kind is DeviceEventKind.SPECIAL_VALUE


def test_weight_imperial_and_unsuccessful() -> None:
    # 0x3C48 = 15432 x 0.01 lb = 154.32 lb = 154.32 x 0.45359237 kg
    out = map_weight(parse_weight(bytes.fromhex("01483C")), WHO, now=NOW)
    assert out.readings[0].value == pytest.approx(154.32 * 0.45359237, abs=1e-4)
    out = map_weight(parse_weight(bytes.fromhex("00FFFF")), WHO, now=NOW)
    assert out.readings == () and out.events[0].kind is DeviceEventKind.SENSOR_ERROR
