"""Random bytes give a value or MalformedPayload, never another exception; encoders round-trip."""

import contextlib
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.ble import blood_pressure as bp
from device_adapters.ble import cgm, glucose, heart_rate, racp, thermometer, weight_scale
from device_adapters.ble.codec import DateTime
from device_adapters.ble.errors import MalformedPayload
from device_adapters.ble.ieee11073 import MedFloat, float_from_raw, sfloat_from_raw
from device_adapters.ble.registry import PARSERS, decode


@pytest.mark.parametrize("uuid", sorted(PARSERS))
@given(data=st.binary(max_size=40))
def test_random_bytes_value_or_own_error(uuid: str, data: bytes) -> None:
    with contextlib.suppress(MalformedPayload):
        decode(uuid, data)


@given(data=st.binary(max_size=40), required=st.sampled_from([None, True, False]))
def test_random_cgm_bytes_with_crc_policy(data: bytes, required: bool | None) -> None:
    for parse in (cgm.parse_cgm_measurements, cgm.parse_cgm_status, cgm.parse_socp):
        with contextlib.suppress(MalformedPayload):
            parse(data, crc_required=required)


sfloats: st.SearchStrategy[MedFloat] = st.integers(0, 0xFFFF).map(sfloat_from_raw)
floats32: st.SearchStrategy[MedFloat] = st.integers(0, 0xFFFFFFFF).map(float_from_raw)
u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
dates = st.datetimes(min_value=datetime(1582, 1, 1), max_value=datetime(9999, 12, 31)).map(
    lambda d: DateTime(
        year=d.year, month=d.month, day=d.day, hours=d.hour, minutes=d.minute, seconds=d.second
    )
)

glucose_measurements = st.builds(
    glucose.GlucoseMeasurement,
    sequence_number=u16,
    base_time=dates,
    time_offset_min=st.none() | st.integers(-32768, 32767),
    concentration=st.none() | sfloats,
    unit=st.sampled_from(glucose.ConcentrationUnit),
    sensor_status=st.none() | u16.map(glucose.SensorStatus),
    context_follows=st.booleans(),
).flatmap(
    lambda m: (
        st.just(m)
        if m.concentration is None
        else st.builds(
            lambda t, loc: glucose.GlucoseMeasurement(
                sequence_number=m.sequence_number,
                base_time=m.base_time,
                time_offset_min=m.time_offset_min,
                concentration=m.concentration,
                unit=m.unit,
                sample_type=glucose._enum_or_int(glucose.GlucoseType, t),
                sample_location=glucose._enum_or_int(glucose.SampleLocation, loc),
                sensor_status=m.sensor_status,
                context_follows=m.context_follows,
            ),
            st.integers(0, 15),
            st.integers(0, 15),
        )
    )
)


@given(glucose_measurements)
def test_glucose_measurement_round_trip(m: glucose.GlucoseMeasurement) -> None:
    assert glucose.parse_glucose_measurement(glucose.encode_glucose_measurement(m)) == m


@given(
    st.builds(
        glucose.GlucoseMeasurementContext,
        sequence_number=u16,
        extended_flags=st.none() | u8,
        meal=st.none() | st.sampled_from(glucose.Meal),
        hba1c_pct=st.none() | sfloats,
        medication_unit=st.sampled_from(glucose.MedicationUnit),
    )
)
def test_glucose_context_round_trip(c: glucose.GlucoseMeasurementContext) -> None:
    assert glucose.parse_glucose_context(glucose.encode_glucose_context(c)) == c


cgm_records = st.builds(
    cgm.CgmMeasurement,
    glucose_mg_dl=sfloats,
    time_offset_min=u16,
    warning=st.none() | u8.map(cgm.CgmWarningOctet),
    cal_temp=st.none() | u8.map(cgm.CgmCalTempOctet),
    status=st.none() | u8.map(cgm.CgmStatusOctet),
    trend_mg_dl_min=st.none() | sfloats,
    quality_pct=st.none() | sfloats,
)


@given(st.lists(cgm_records, min_size=1, max_size=5), st.booleans())
def test_cgm_measurements_round_trip(records: list[cgm.CgmMeasurement], crc: bool) -> None:
    data = cgm.encode_cgm_measurements(records, with_crc=crc)
    assert cgm.parse_cgm_measurements(data, crc_required=crc) == records


@given(cgm_records, st.integers(0, 100), st.integers(0, 7))
def test_any_flipped_bit_in_a_crc_record_is_detected(
    record: cgm.CgmMeasurement, where: int, bit: int
) -> None:
    data = bytearray(cgm.encode_cgm_record(record, with_crc=True))
    data[where % len(data)] ^= 1 << bit
    with pytest.raises(MalformedPayload):
        cgm.parse_cgm_measurements(bytes(data), crc_required=True)


@given(
    st.builds(
        cgm.CgmSessionStartTime,
        start=dates,
        time_zone_15min=st.integers(-48, 56) | st.just(-128),
        dst=st.sampled_from(cgm.DstOffset),
    ),
    st.booleans(),
)
def test_session_start_round_trip(s: cgm.CgmSessionStartTime, crc: bool) -> None:
    encoded = cgm.encode_cgm_session_start_time(s, with_crc=crc)
    assert cgm.parse_cgm_session_start_time(encoded, crc_required=crc) == s


@given(
    st.builds(
        cgm.CgmFeature,
        features=st.integers(0, 0xFFFFFF).map(cgm.CgmFeatureFlags),
        sample_type=st.integers(0, 15),
        sample_location=st.integers(0, 15),
    )
)
def test_cgm_feature_round_trip(f: cgm.CgmFeature) -> None:
    assert cgm.parse_cgm_feature(cgm.encode_cgm_feature(f)) == f


socp_messages = st.one_of(
    st.builds(
        cgm.SocpMessage, op_code=st.just(cgm.SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL), operand=u8
    ),
    st.builds(cgm.SocpMessage, op_code=st.just(cgm.SocpOpCode.START_THE_SESSION)),
    st.builds(
        cgm.SocpMessage, op_code=st.just(cgm.SocpOpCode.SET_HYPO_ALERT_LEVEL), operand=sfloats
    ),
    st.builds(
        cgm.SocpMessage,
        op_code=st.just(cgm.SocpOpCode.RESPONSE_CODE),
        operand=st.builds(
            cgm.SocpResponse,
            request_op_code=st.sampled_from(cgm.SocpOpCode),
            response_code=st.sampled_from(cgm.SocpResponseCode),
        ),
    ),
    st.builds(
        cgm.SocpMessage,
        op_code=st.just(cgm.SocpOpCode.SET_GLUCOSE_CALIBRATION_VALUE),
        operand=st.builds(
            cgm.CalibrationRecord,
            glucose_mg_dl=sfloats,
            time_min=u16,
            sample_type=st.integers(0, 15),
            sample_location=st.integers(0, 15),
            next_calibration_min=u16,
            record_number=u16,
            status=u8,
        ),
    ),
)


@given(socp_messages, st.booleans())
def test_socp_round_trip(m: cgm.SocpMessage, crc: bool) -> None:
    assert cgm.parse_socp(cgm.encode_socp(m, with_crc=crc), crc_required=crc) == m


racp_requests = st.one_of(
    st.just(racp.report_all()),
    u16.map(racp.report_from),
    st.just(racp.abort()),
    st.just(racp.delete_all()),
    st.just(racp.report_number()),
    u16.map(lambda n: racp.report_number(racp.RacpOperator.GREATER_THAN_OR_EQUAL_TO, n)),
    st.builds(racp.RacpNumberOfRecords, count=u16),
    st.builds(
        racp.RacpResponse,
        request_op_code=st.sampled_from(racp.RacpOpCode),
        response_code=st.sampled_from(racp.RacpResponseCode),
    ),
)


@given(racp_requests)
def test_racp_round_trip(m: racp.RacpMessage) -> None:
    assert racp.parse_racp(racp.encode_racp(m)) == m


@given(
    st.builds(
        heart_rate.HeartRateMeasurement,
        heart_rate_bpm=u16,
        sensor_contact=st.sampled_from(heart_rate.SensorContact),
        energy_expended_kj=st.none() | u16,
        rr_intervals_1024=st.lists(u16, max_size=9).map(tuple),
    )
)
def test_heart_rate_round_trip(m: heart_rate.HeartRateMeasurement) -> None:
    assert heart_rate.parse_heart_rate(heart_rate.encode_heart_rate(m)) == m


@given(
    st.builds(
        bp.BloodPressureMeasurement,
        systolic=sfloats,
        diastolic=sfloats,
        mean_arterial=sfloats,
        unit=st.sampled_from(bp.PressureUnit),
        timestamp=st.none() | dates,
        pulse_rate_bpm=st.none() | sfloats,
        user_id=st.none() | u8,
        status=st.none() | u16.map(bp.MeasurementStatus),
    )
)
def test_blood_pressure_round_trip(m: bp.BloodPressureMeasurement) -> None:
    assert bp.parse_blood_pressure(bp.encode_blood_pressure(m)) == m


@given(
    st.builds(
        thermometer.TemperatureMeasurement,
        temperature=floats32,
        unit=st.sampled_from(thermometer.TemperatureUnit),
        timestamp=st.none() | dates,
        temperature_type=st.none() | u8,
    )
)
def test_temperature_round_trip(m: thermometer.TemperatureMeasurement) -> None:
    assert thermometer.parse_temperature(thermometer.encode_temperature(m)) == m


@given(
    st.builds(
        weight_scale.WeightMeasurement,
        weight_raw=u16,
        unit=st.sampled_from(weight_scale.WeightUnit),
        timestamp=st.none() | dates,
        user_id=st.none() | u8,
    ).flatmap(
        lambda m: st.one_of(
            st.just(m),
            st.builds(
                lambda b, h: weight_scale.WeightMeasurement(
                    weight_raw=m.weight_raw,
                    unit=m.unit,
                    timestamp=m.timestamp,
                    user_id=m.user_id,
                    bmi_raw=b,
                    height_raw=h,
                ),
                u16,
                u16,
            ),
        )
    )
)
def test_weight_round_trip(m: weight_scale.WeightMeasurement) -> None:
    assert weight_scale.parse_weight(weight_scale.encode_weight(m)) == m


def test_feature_round_trip() -> None:
    f = glucose.parse_glucose_feature(bytes.fromhex("0304"))
    assert glucose.encode_glucose_feature(f) == bytes.fromhex("0304")
