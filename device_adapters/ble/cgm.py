"""Continuous Glucose Monitoring Service 1.0.1 (CGMS) characteristics, pure codecs.

CGM Measurement (0x2AA7) carries one or more records per notification, each starting with its
own size byte; CGM Feature (0x2AA8), CGM Status (0x2AA9), Session Start Time (0x2AAA), Session
Run Time (0x2AAB) and the CGM Specific Ops Control Point (0x2AAC). When the CGM Feature says
E2E-CRC is supported every value ends with a CRC-16/MCRF4XX over the bytes before it (§3.11).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, IntFlag

from device_adapters.ble import codec
from device_adapters.ble.codec import DateTime, Reader
from device_adapters.ble.crc import crc16_mcrf4xx
from device_adapters.ble.errors import CrcMismatch
from device_adapters.ble.glucose import GlucoseType
from device_adapters.ble.ieee11073 import MedFloat
from device_adapters.ble.uuids import Char

MEAS = str(Char.CGM_MEASUREMENT)
FEATURE = str(Char.CGM_FEATURE)
STATUS = str(Char.CGM_STATUS)
START = str(Char.CGM_SESSION_START_TIME)
RUN = str(Char.CGM_SESSION_RUN_TIME)
SOCP = str(Char.CGM_SPECIFIC_OPS_CONTROL_POINT)

NO_CRC = 0xFFFF  # CGM Feature's E2E-CRC field when E2E-CRC is not supported


class CgmMeasurementFlags(IntFlag):
    TREND_INFORMATION_PRESENT = 0x01
    QUALITY_PRESENT = 0x02
    WARNING_OCTET_PRESENT = 0x20
    CAL_TEMP_OCTET_PRESENT = 0x40
    STATUS_OCTET_PRESENT = 0x80


class CgmStatusOctet(IntFlag):
    """Sensor Status Annunciation bits 0-7."""

    SESSION_STOPPED = 1 << 0
    DEVICE_BATTERY_LOW = 1 << 1
    SENSOR_TYPE_INCORRECT = 1 << 2
    SENSOR_MALFUNCTION = 1 << 3
    DEVICE_SPECIFIC_ALERT = 1 << 4
    GENERAL_DEVICE_FAULT = 1 << 5


class CgmCalTempOctet(IntFlag):
    """Sensor Status Annunciation bits 8-15 (shifted down by 8)."""

    TIME_SYNCHRONIZATION_REQUIRED = 1 << 0
    CALIBRATION_NOT_ALLOWED = 1 << 1
    CALIBRATION_RECOMMENDED = 1 << 2
    CALIBRATION_REQUIRED = 1 << 3
    SENSOR_TEMPERATURE_TOO_HIGH = 1 << 4
    SENSOR_TEMPERATURE_TOO_LOW = 1 << 5


class CgmWarningOctet(IntFlag):
    """Sensor Status Annunciation bits 16-23 (shifted down by 16)."""

    RESULT_LOWER_THAN_PATIENT_LOW_LEVEL = 1 << 0
    RESULT_HIGHER_THAN_PATIENT_HIGH_LEVEL = 1 << 1
    RESULT_LOWER_THAN_HYPO_LEVEL = 1 << 2
    RESULT_HIGHER_THAN_HYPER_LEVEL = 1 << 3
    RATE_OF_DECREASE_EXCEEDED = 1 << 4
    RATE_OF_INCREASE_EXCEEDED = 1 << 5
    RESULT_LOWER_THAN_DEVICE_CAN_PROCESS = 1 << 6
    RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS = 1 << 7


def _check_crc(r: Reader, body: bytes, start: int) -> None:
    """The last two bytes of `body` are the CRC of everything before them."""
    expected = crc16_mcrf4xx(body[:-2])
    actual = int.from_bytes(body[-2:], "little")
    if expected != actual:
        raise CrcMismatch(r.uuid, start + len(body) - 2, expected, actual)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmMeasurement:
    glucose_mg_dl: MedFloat
    time_offset_min: int  # minutes since the session start
    warning: CgmWarningOctet | None = None
    cal_temp: CgmCalTempOctet | None = None
    status: CgmStatusOctet | None = None
    trend_mg_dl_min: MedFloat | None = None
    quality_pct: MedFloat | None = None


def split_cgm_records(data: bytes) -> list[bytes]:
    """Cut one CGM Measurement notification into its records (each begins with its size)."""
    r = Reader(MEAS, data)
    records = []
    if not data:
        raise r.fail("empty notification")
    while r.remaining:
        start = r.offset
        size = r.u8("record size")
        if size < 6:
            raise r.fail(f"record size {size} is below the 6-byte minimum", start)
        r.offset = start
        records.append(r.take(size, f"record of {size} bytes"))
    return records


def parse_cgm_record(
    record: bytes, *, crc_required: bool | None = None, offset: int = 0
) -> CgmMeasurement:
    """Parse one record. `crc_required`: True/False from the CGM Feature, None if unknown
    (then the size byte decides whether a CRC is there). A bad CRC raises `CrcMismatch`."""
    r = Reader(MEAS, record)
    size = r.u8("record size")
    if size != len(record):
        raise r.fail(f"size byte says {size}, record has {len(record)} bytes", offset)
    flags = CgmMeasurementFlags(r.u8("flags") & 0xE3)
    expected = 6 + sum(
        1
        for bit in (
            CgmMeasurementFlags.WARNING_OCTET_PRESENT,
            CgmMeasurementFlags.CAL_TEMP_OCTET_PRESENT,
            CgmMeasurementFlags.STATUS_OCTET_PRESENT,
        )
        if flags & bit
    )
    expected += 2 * bool(flags & CgmMeasurementFlags.TREND_INFORMATION_PRESENT)
    expected += 2 * bool(flags & CgmMeasurementFlags.QUALITY_PRESENT)
    if size == expected + 2:
        has_crc = True
    elif size == expected:
        has_crc = False
    else:
        raise r.fail(f"size {size} fits neither {expected} nor {expected + 2} (with E2E-CRC)", 0)
    if crc_required is True and not has_crc:
        raise r.fail("E2E-CRC is supported by the sensor but missing from the record", 0)
    if crc_required is False and has_crc:
        raise r.fail("record carries 2 bytes more than its flags allow", 0)
    if has_crc:
        _check_crc(r, record, offset)
    glucose = r.sfloat("glucose concentration")
    time_offset = r.u16("time offset")
    warning = cal_temp = status = None
    # Transmission order in the record: Warning, Cal/Temp, Status (CGMS 1.0.1 §3.2.1.4).
    if flags & CgmMeasurementFlags.WARNING_OCTET_PRESENT:
        warning = CgmWarningOctet(r.u8("warning octet"))
    if flags & CgmMeasurementFlags.CAL_TEMP_OCTET_PRESENT:
        cal_temp = CgmCalTempOctet(r.u8("cal/temp octet"))
    if flags & CgmMeasurementFlags.STATUS_OCTET_PRESENT:
        status = CgmStatusOctet(r.u8("status octet"))
    trend = r.sfloat("trend") if flags & CgmMeasurementFlags.TREND_INFORMATION_PRESENT else None
    quality = r.sfloat("quality") if flags & CgmMeasurementFlags.QUALITY_PRESENT else None
    return CgmMeasurement(
        glucose_mg_dl=glucose,
        time_offset_min=time_offset,
        warning=warning,
        cal_temp=cal_temp,
        status=status,
        trend_mg_dl_min=trend,
        quality_pct=quality,
    )


def parse_cgm_measurements(
    data: bytes, *, crc_required: bool | None = None
) -> list[CgmMeasurement]:
    """All records of one notification; the first bad record raises."""
    out = []
    offset = 0
    for record in split_cgm_records(data):
        out.append(parse_cgm_record(record, crc_required=crc_required, offset=offset))
        offset += len(record)
    return out


def encode_cgm_record(m: CgmMeasurement, *, with_crc: bool) -> bytes:
    flags = CgmMeasurementFlags(0)
    body = codec.sfloat(m.glucose_mg_dl) + codec.u16(m.time_offset_min)
    if m.warning is not None:
        flags |= CgmMeasurementFlags.WARNING_OCTET_PRESENT
        body += codec.u8(int(m.warning))
    if m.cal_temp is not None:
        flags |= CgmMeasurementFlags.CAL_TEMP_OCTET_PRESENT
        body += codec.u8(int(m.cal_temp))
    if m.status is not None:
        flags |= CgmMeasurementFlags.STATUS_OCTET_PRESENT
        body += codec.u8(int(m.status))
    if m.trend_mg_dl_min is not None:
        flags |= CgmMeasurementFlags.TREND_INFORMATION_PRESENT
        body += codec.sfloat(m.trend_mg_dl_min)
    if m.quality_pct is not None:
        flags |= CgmMeasurementFlags.QUALITY_PRESENT
        body += codec.sfloat(m.quality_pct)
    size = 2 + len(body) + (2 if with_crc else 0)
    record = codec.u8(size) + codec.u8(int(flags)) + body
    return record + codec.u16(crc16_mcrf4xx(record)) if with_crc else record


def encode_cgm_measurements(records: list[CgmMeasurement], *, with_crc: bool) -> bytes:
    return b"".join(encode_cgm_record(m, with_crc=with_crc) for m in records)


class CgmFeatureFlags(IntFlag):
    CALIBRATION_SUPPORTED = 1 << 0
    PATIENT_HIGH_LOW_ALERTS_SUPPORTED = 1 << 1
    HYPO_ALERTS_SUPPORTED = 1 << 2
    HYPER_ALERTS_SUPPORTED = 1 << 3
    RATE_OF_INCREASE_DECREASE_ALERTS_SUPPORTED = 1 << 4
    DEVICE_SPECIFIC_ALERT_SUPPORTED = 1 << 5
    SENSOR_MALFUNCTION_DETECTION_SUPPORTED = 1 << 6
    SENSOR_TEMPERATURE_HIGH_LOW_DETECTION_SUPPORTED = 1 << 7
    SENSOR_RESULT_HIGH_LOW_DETECTION_SUPPORTED = 1 << 8
    LOW_BATTERY_DETECTION_SUPPORTED = 1 << 9
    SENSOR_TYPE_ERROR_DETECTION_SUPPORTED = 1 << 10
    GENERAL_DEVICE_FAULT_SUPPORTED = 1 << 11
    E2E_CRC_SUPPORTED = 1 << 12
    MULTIPLE_BOND_SUPPORTED = 1 << 13
    MULTIPLE_SESSIONS_SUPPORTED = 1 << 14
    CGM_TREND_INFORMATION_SUPPORTED = 1 << 15
    CGM_QUALITY_SUPPORTED = 1 << 16


class CgmSampleLocation(IntEnum):
    FINGER = 1
    ALTERNATE_SITE_TEST = 2
    EARLOBE = 3
    CONTROL_SOLUTION = 4
    SUBCUTANEOUS_TISSUE = 5
    NOT_AVAILABLE = 15


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmFeature:
    features: CgmFeatureFlags
    sample_type: int = GlucoseType.INTERSTITIAL_FLUID  # CGMS 1.0.1: the Glucose Service's table
    sample_location: int = CgmSampleLocation.SUBCUTANEOUS_TISSUE

    @property
    def e2e_crc(self) -> bool:
        return bool(self.features & CgmFeatureFlags.E2E_CRC_SUPPORTED)


def parse_cgm_feature(data: bytes) -> CgmFeature:
    r = Reader(FEATURE, data)
    features = CgmFeatureFlags(r.u24("features"))
    type_location = r.u8("type-sample location")
    crc = r.u16("E2E-CRC")
    r.end()
    if features & CgmFeatureFlags.E2E_CRC_SUPPORTED:
        _check_crc(r, r.data, 0)
    elif crc != NO_CRC:
        raise r.fail(f"E2E-CRC not supported, so the CRC field must be 0xFFFF, got 0x{crc:04X}", 4)
    return CgmFeature(
        features=features,
        sample_type=type_location & 0x0F,
        sample_location=type_location >> 4,
    )


def encode_cgm_feature(f: CgmFeature) -> bytes:
    body = codec.u24(int(f.features)) + codec.u8((f.sample_location << 4) | f.sample_type)
    return body + codec.u16(crc16_mcrf4xx(body) if f.e2e_crc else NO_CRC)


def _split_crc(r: Reader, plain_len: int, crc_required: bool | None) -> None:
    """For fixed-size values: decide from the length whether an E2E-CRC ends it, and check it."""
    n = len(r.data)
    if n == plain_len + 2 and crc_required is not False:
        _check_crc(r, r.data, 0)
        r.data = r.data[:-2]
    elif n == plain_len and crc_required is not True:
        return
    else:
        want = {None: f"{plain_len} or {plain_len + 2}", True: plain_len + 2, False: plain_len}
        raise r.fail(f"length {n}, expected {want[crc_required]}", 0)


def _with_crc(body: bytes, with_crc: bool) -> bytes:
    return body + codec.u16(crc16_mcrf4xx(body)) if with_crc else body


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmStatus:
    time_offset_min: int  # the sensor's current time since session start
    status: CgmStatusOctet
    cal_temp: CgmCalTempOctet
    warning: CgmWarningOctet


def parse_cgm_status(data: bytes, *, crc_required: bool | None = None) -> CgmStatus:
    r = Reader(STATUS, data)
    _split_crc(r, 5, crc_required)
    offset = r.u16("time offset")
    status = CgmStatusOctet(r.u8("status octet"))
    cal_temp = CgmCalTempOctet(r.u8("cal/temp octet"))
    warning = CgmWarningOctet(r.u8("warning octet"))
    r.end()
    return CgmStatus(time_offset_min=offset, status=status, cal_temp=cal_temp, warning=warning)


def encode_cgm_status(s: CgmStatus, *, with_crc: bool) -> bytes:
    body = codec.u16(s.time_offset_min) + bytes([s.status, s.cal_temp, s.warning])
    return _with_crc(body, with_crc)


class DstOffset(IntEnum):
    STANDARD_TIME = 0
    HALF_AN_HOUR_DAYLIGHT_TIME = 2
    DAYLIGHT_TIME = 4
    DOUBLE_DAYLIGHT_TIME = 8
    UNKNOWN = 255


_DST_MINUTES = {0: 0, 2: 30, 4: 60, 8: 120, 255: 0}
TIME_ZONE_UNKNOWN = -128


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSessionStartTime:
    """Wall-clock start time plus zone: `time_zone_15min` counts 15-minute units (8 = UTC+2)."""

    start: DateTime
    time_zone_15min: int = 0
    dst: DstOffset = DstOffset.STANDARD_TIME

    def to_utc(self) -> datetime | None:
        """UTC = local − zone − DST; None when the sensor does not know the date yet."""
        zone = 0 if self.time_zone_15min == TIME_ZONE_UNKNOWN else self.time_zone_15min * 15
        return self.start.to_utc(UTC, plus_min=-(zone + _DST_MINUTES[self.dst]), uuid=START)

    @classmethod
    def from_utc(cls, start: datetime) -> CgmSessionStartTime:
        return cls(start=DateTime.from_datetime(start, UTC))


def parse_cgm_session_start_time(
    data: bytes, *, crc_required: bool | None = None
) -> CgmSessionStartTime:
    r = Reader(START, data)
    _split_crc(r, 9, crc_required)
    start = r.date_time("session start time")
    tz = r.s8("time zone")
    if not (-48 <= tz <= 56 or tz == TIME_ZONE_UNKNOWN):
        raise r.fail(f"time zone {tz} outside -48..+56 (15-minute units)", 7)
    raw_dst = r.u8("DST offset")
    try:
        dst = DstOffset(raw_dst)
    except ValueError:
        raise r.fail(f"DST offset code {raw_dst} is reserved", 8) from None
    r.end()
    value = CgmSessionStartTime(start=start, time_zone_15min=tz, dst=dst)
    value.to_utc()  # TimeOutOfRange here, not later, when the zone pushes it past year 9999
    return value


def encode_cgm_session_start_time(s: CgmSessionStartTime, *, with_crc: bool) -> bytes:
    body = s.start.encode() + codec.s8(s.time_zone_15min) + codec.u8(s.dst)
    return _with_crc(body, with_crc)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgmSessionRunTime:
    run_time_h: int  # expected sensor run time of the session, in hours


def parse_cgm_session_run_time(
    data: bytes, *, crc_required: bool | None = None
) -> CgmSessionRunTime:
    r = Reader(RUN, data)
    _split_crc(r, 2, crc_required)
    hours = r.u16("session run time")
    r.end()
    return CgmSessionRunTime(run_time_h=hours)


def encode_cgm_session_run_time(s: CgmSessionRunTime, *, with_crc: bool) -> bytes:
    return _with_crc(codec.u16(s.run_time_h), with_crc)


class SocpOpCode(IntEnum):
    SET_CGM_COMMUNICATION_INTERVAL = 1
    GET_CGM_COMMUNICATION_INTERVAL = 2
    CGM_COMMUNICATION_INTERVAL_RESPONSE = 3
    SET_GLUCOSE_CALIBRATION_VALUE = 4
    GET_GLUCOSE_CALIBRATION_VALUE = 5
    GLUCOSE_CALIBRATION_VALUE_RESPONSE = 6
    SET_PATIENT_HIGH_ALERT_LEVEL = 7
    GET_PATIENT_HIGH_ALERT_LEVEL = 8
    PATIENT_HIGH_ALERT_LEVEL_RESPONSE = 9
    SET_PATIENT_LOW_ALERT_LEVEL = 10
    GET_PATIENT_LOW_ALERT_LEVEL = 11
    PATIENT_LOW_ALERT_LEVEL_RESPONSE = 12
    SET_HYPO_ALERT_LEVEL = 13
    GET_HYPO_ALERT_LEVEL = 14
    HYPO_ALERT_LEVEL_RESPONSE = 15
    SET_HYPER_ALERT_LEVEL = 16
    GET_HYPER_ALERT_LEVEL = 17
    HYPER_ALERT_LEVEL_RESPONSE = 18
    SET_RATE_OF_DECREASE_ALERT_LEVEL = 19
    GET_RATE_OF_DECREASE_ALERT_LEVEL = 20
    RATE_OF_DECREASE_ALERT_LEVEL_RESPONSE = 21
    SET_RATE_OF_INCREASE_ALERT_LEVEL = 22
    GET_RATE_OF_INCREASE_ALERT_LEVEL = 23
    RATE_OF_INCREASE_ALERT_LEVEL_RESPONSE = 24
    RESET_DEVICE_SPECIFIC_ALERT = 25
    START_THE_SESSION = 26
    STOP_THE_SESSION = 27
    RESPONSE_CODE = 28


class SocpResponseCode(IntEnum):
    SUCCESS = 1
    OP_CODE_NOT_SUPPORTED = 2
    INVALID_OPERAND = 3
    PROCEDURE_NOT_COMPLETED = 4
    PARAMETER_OUT_OF_RANGE = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class CalibrationRecord:
    glucose_mg_dl: MedFloat
    time_min: int  # calibration time, as a time offset
    sample_type: int
    sample_location: int
    next_calibration_min: int
    record_number: int
    status: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SocpResponse:
    request_op_code: SocpOpCode | int
    response_code: SocpResponseCode | int


SocpOperand = int | float | str | CalibrationRecord | SocpResponse | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SocpMessage:
    """`operand` by op code: interval (int minutes), record number (int), alert level (MedFloat),
    a CalibrationRecord, a SocpResponse, or None."""

    op_code: SocpOpCode
    operand: SocpOperand = None


_UINT8_OPS = {
    SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL,
    SocpOpCode.CGM_COMMUNICATION_INTERVAL_RESPONSE,
}
_CAL_OPS = {
    SocpOpCode.SET_GLUCOSE_CALIBRATION_VALUE,
    SocpOpCode.GLUCOSE_CALIBRATION_VALUE_RESPONSE,
}
_LEVEL_OPS = {SocpOpCode(n) for n in (7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24)}


def parse_socp(data: bytes, *, crc_required: bool | None = None) -> SocpMessage:
    r = Reader(SOCP, data)
    raw = r.u8("op code")
    try:
        op = SocpOpCode(raw)
    except ValueError:
        raise r.fail(f"unknown op code {raw}", 0) from None
    if op in _UINT8_OPS:
        plain = 2
    elif op in _CAL_OPS:
        plain = 11
    elif op in _LEVEL_OPS or op in (
        SocpOpCode.GET_GLUCOSE_CALIBRATION_VALUE,
        SocpOpCode.RESPONSE_CODE,
    ):
        plain = 3
    else:
        plain = 1
    _split_crc(r, plain, crc_required)
    operand: SocpOperand = None
    if op in _UINT8_OPS:
        operand = r.u8("communication interval")
    elif op in _CAL_OPS:
        glucose = r.sfloat("calibration glucose")
        time_min = r.u16("calibration time")
        tl = r.u8("type-sample location")
        operand = CalibrationRecord(
            glucose_mg_dl=glucose,
            time_min=time_min,
            sample_type=tl & 0x0F,
            sample_location=tl >> 4,
            next_calibration_min=r.u16("next calibration time"),
            record_number=r.u16("calibration data record number"),
            status=r.u8("calibration status"),
        )
    elif op is SocpOpCode.GET_GLUCOSE_CALIBRATION_VALUE:
        operand = r.u16("calibration data record number")
    elif op in _LEVEL_OPS:
        operand = r.sfloat("alert level")
    elif op is SocpOpCode.RESPONSE_CODE:
        request = r.u8("request op code")
        code = r.u8("response code")
        operand = SocpResponse(
            request_op_code=_maybe_enum(SocpOpCode, request),
            response_code=_maybe_enum(SocpResponseCode, code),
        )
    r.end()
    return SocpMessage(op_code=op, operand=operand)


def _maybe_enum(enum: type[SocpOpCode] | type[SocpResponseCode], value: int) -> int:
    try:
        return enum(value)
    except ValueError:
        return value


def encode_socp(m: SocpMessage, *, with_crc: bool) -> bytes:
    body = codec.u8(m.op_code)
    o = m.operand
    if isinstance(o, CalibrationRecord):
        body += (
            codec.sfloat(o.glucose_mg_dl)
            + codec.u16(o.time_min)
            + codec.u8((o.sample_location << 4) | o.sample_type)
            + codec.u16(o.next_calibration_min)
            + codec.u16(o.record_number)
            + codec.u8(o.status)
        )
    elif isinstance(o, SocpResponse):
        body += codec.u8(o.request_op_code) + codec.u8(o.response_code)
    elif m.op_code in _UINT8_OPS and isinstance(o, int):
        body += codec.u8(o)
    elif m.op_code is SocpOpCode.GET_GLUCOSE_CALIBRATION_VALUE and isinstance(o, int):
        body += codec.u16(o)
    elif m.op_code in _LEVEL_OPS and o is not None:
        body += codec.sfloat(o)  # type: ignore[arg-type]
    return _with_crc(body, with_crc)
