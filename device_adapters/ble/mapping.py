"""Parsed GATT values -> `gateway.model` Readings and DeviceEvents. Pure.

Times: a meter's base time (its wall clock, read in `tz`) plus the time offset; a CGM record's
session start plus its time offset in minutes; a heart-rate strap has no clock, so the
notification's arrival time `now`. A special SFLOAT/FLOAT value becomes a SPECIAL_VALUE event,
never a number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import IntFlag

from device_adapters.ble.blood_pressure import BPM, BloodPressureMeasurement, PressureUnit
from device_adapters.ble.cgm import (
    MEAS,
    CgmCalTempOctet,
    CgmMeasurement,
    CgmStatusOctet,
    CgmWarningOctet,
)
from device_adapters.ble.codec import DateTime
from device_adapters.ble.errors import MalformedPayload, TimeOutOfRange
from device_adapters.ble.glucose import (
    GM,
    ConcentrationUnit,
    GlucoseMeasurement,
    GlucoseMeasurementContext,
    GlucoseType,
    SensorStatus,
)
from device_adapters.ble.heart_rate import HeartRateMeasurement, SensorContact
from device_adapters.ble.ieee11073 import MedFloat, SpecialValue
from device_adapters.ble.thermometer import TEMP, TemperatureMeasurement, TemperatureUnit
from device_adapters.ble.weight_scale import WEIGHT, WeightMeasurement, WeightUnit
from gateway.model import DeviceEvent, DeviceEventKind, Reading, ReadingKind, Source
from gateway.units import Unit, to_canonical

# GLS: concentration in kg/L; 1 kg/L = 10^6 mg / 10 dL = 100,000 mg/dL.
MG_DL_PER_KG_L = 100_000.0
# GLS: concentration in mol/L; × 1000 gives mmol/L.
MMOL_PER_MOL = 1000.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Mapped:
    readings: tuple[Reading, ...] = ()
    events: tuple[DeviceEvent, ...] = ()

    def __add__(self, other: Mapped) -> Mapped:
        return Mapped(readings=self.readings + other.readings, events=self.events + other.events)


@dataclass(frozen=True, slots=True, kw_only=True)
class Who:
    """The patient and device a value is attributed to."""

    patient_id: str
    device_id: str
    source: Source = Source.BLE
    extra_status: tuple[str, ...] = field(default=())


def _flag_names(flags: IntFlag | None) -> tuple[str, ...]:
    if flags is None:
        return ()
    return tuple(str(member.name).lower() for member in type(flags) if member in flags)


def _special(
    who: Who, what: str, value: SpecialValue, time: datetime, seq: int | None
) -> DeviceEvent:
    return DeviceEvent(
        patient_id=who.patient_id,
        device_id=who.device_id,
        kind=DeviceEventKind.SPECIAL_VALUE,
        time=time,
        detail=f"{what}: {value.value}",
        seq=seq,
    )


def _event(
    who: Who, kind: DeviceEventKind, time: datetime, detail: str, seq: int | None
) -> DeviceEvent:
    return DeviceEvent(
        patient_id=who.patient_id,
        device_id=who.device_id,
        kind=kind,
        time=time,
        detail=detail,
        seq=seq,
    )


def _reading(
    who: Who,
    kind: ReadingKind,
    value: float,
    unit: Unit,
    time: datetime,
    *,
    seq: int | None = None,
    status: tuple[str, ...] = (),
    precision: int = 4,
) -> Reading:
    canonical, canonical_unit = to_canonical(value, unit)
    return Reading(
        patient_id=who.patient_id,
        device_id=who.device_id,
        kind=kind,
        value=round(canonical, precision),
        unit=canonical_unit,
        time=time,
        source=who.source,
        seq=seq,
        original_value=round(value, precision),
        original_unit=unit,
        status=status + who.extra_status,
    )


def glucose_time(m: GlucoseMeasurement, tz: tzinfo = UTC) -> datetime:
    """Base time (the meter's wall clock in `tz`) + time offset (minutes)."""
    # GLS: the base time is bytes 3-9 of the value.
    time = m.base_time.to_utc(tz, plus_min=m.time_offset_min or 0, uuid=GM, offset=3)
    if time is None:
        raise MalformedPayload(GM, 3, "base time is not known (year, month or day is 0)")
    return time


_GLS_EVENTS: tuple[tuple[SensorStatus, DeviceEventKind], ...] = (
    (SensorStatus.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS, DeviceEventKind.RESULT_TOO_HIGH),
    (SensorStatus.RESULT_LOWER_THAN_DEVICE_CAN_PROCESS, DeviceEventKind.RESULT_TOO_LOW),
    (SensorStatus.DEVICE_BATTERY_LOW, DeviceEventKind.BATTERY_LOW),
    (SensorStatus.SENSOR_MALFUNCTION, DeviceEventKind.SENSOR_ERROR),
    (SensorStatus.GENERAL_DEVICE_FAULT, DeviceEventKind.SENSOR_ERROR),
)


def map_glucose(
    m: GlucoseMeasurement,
    who: Who,
    *,
    tz: tzinfo = UTC,
    context: GlucoseMeasurementContext | None = None,
) -> Mapped:
    """A meter record -> one GLUCOSE reading (seq = the meter's sequence number) and events.

    Control-solution tests are quality checks of the meter, not the patient: no reading."""
    time = glucose_time(m, tz)
    seq = m.sequence_number
    events = [
        _event(who, kind, time, f"sensor status: {flag.name}", seq)
        for flag, kind in _GLS_EVENTS
        if m.sensor_status is not None and flag in m.sensor_status
    ]
    status = _flag_names(m.sensor_status)
    if context is not None and context.meal is not None:
        meal = getattr(context.meal, "name", str(context.meal))
        status += (f"meal_{str(meal).lower()}",)
    readings: list[Reading] = []
    c = m.concentration
    if isinstance(c, SpecialValue):
        events.append(_special(who, "glucose concentration", c, time, seq))
    elif c is not None and m.sample_type != GlucoseType.CONTROL_SOLUTION:
        if m.unit is ConcentrationUnit.KG_PER_L:
            value, unit = c * MG_DL_PER_KG_L, Unit.MG_DL
        else:
            value, unit = c * MMOL_PER_MOL, Unit.MMOL_L
        readings.append(
            _reading(who, ReadingKind.GLUCOSE, value, unit, time, seq=seq, status=status)
        )
    return Mapped(readings=tuple(readings), events=tuple(events))


_CGM_EVENTS: tuple[tuple[IntFlag, DeviceEventKind], ...] = (
    (CgmWarningOctet.RESULT_HIGHER_THAN_DEVICE_CAN_PROCESS, DeviceEventKind.RESULT_TOO_HIGH),
    (CgmWarningOctet.RESULT_LOWER_THAN_DEVICE_CAN_PROCESS, DeviceEventKind.RESULT_TOO_LOW),
    (CgmCalTempOctet.CALIBRATION_REQUIRED, DeviceEventKind.CALIBRATION_REQUIRED),
    (CgmStatusOctet.DEVICE_BATTERY_LOW, DeviceEventKind.BATTERY_LOW),
    (CgmStatusOctet.SENSOR_MALFUNCTION, DeviceEventKind.SENSOR_ERROR),
    (CgmStatusOctet.SENSOR_TYPE_INCORRECT, DeviceEventKind.SENSOR_ERROR),
    (CgmStatusOctet.GENERAL_DEVICE_FAULT, DeviceEventKind.SENSOR_ERROR),
    (CgmStatusOctet.SESSION_STOPPED, DeviceEventKind.SESSION_STOPPED),
)


def map_cgm(m: CgmMeasurement, who: Who, *, session_start: datetime) -> Mapped:
    """A CGM record -> one CGM_GLUCOSE reading at session start + offset, plus status events.

    CGMS records carry no sequence number, so `seq` stays None and the hub de-duplicates on
    (time, kind, value); the session start is fixed for a session, so a re-sent record maps
    to the same time."""
    try:
        time = session_start + timedelta(minutes=m.time_offset_min)
    except OverflowError:
        raise TimeOutOfRange(
            MEAS,
            0,
            f"session start {session_start:%Y-%m-%d %H:%M} UTC {m.time_offset_min:+} min "
            "is out of range (years 1-9999)",
        ) from None
    events: list[DeviceEvent] = []
    status: tuple[str, ...] = ()
    for octet in (m.warning, m.cal_temp, m.status):
        status += _flag_names(octet)
        if octet is None:
            continue
        for flag, kind in _CGM_EVENTS:
            if type(flag) is type(octet) and flag in octet:
                events.append(_event(who, kind, time, f"sensor status: {flag.name}", None))
    if m.trend_mg_dl_min is not None and not isinstance(m.trend_mg_dl_min, SpecialValue):
        status += (f"trend_mg_dl_min={m.trend_mg_dl_min:g}",)
    readings = []
    if isinstance(m.glucose_mg_dl, SpecialValue):
        events.append(_special(who, "CGM glucose concentration", m.glucose_mg_dl, time, None))
    else:
        readings.append(
            _reading(who, ReadingKind.CGM_GLUCOSE, m.glucose_mg_dl, Unit.MG_DL, time, status=status)
        )
    return Mapped(readings=tuple(readings), events=tuple(events))


def map_heart_rate(m: HeartRateMeasurement, who: Who, *, now: datetime) -> Mapped:
    """HR at `now`; each RR interval ends at its beat: the last at `now`, earlier ones before it
    (so equal intervals in one notification stay distinct under (time, kind, value) de-dup)."""
    readings: list[Reading] = []
    status = (
        ("sensor_contact_not_detected",) if m.sensor_contact is SensorContact.NOT_DETECTED else ()
    )
    if m.heart_rate_bpm > 0:
        readings.append(
            _reading(
                who, ReadingKind.HEART_RATE, float(m.heart_rate_bpm), Unit.BPM, now, status=status
            )
        )
    if m.energy_expended_kj is not None:
        readings.append(
            _reading(who, ReadingKind.ENERGY_EXPENDED, float(m.energy_expended_kj), Unit.KJ, now)
        )
    beats: list[Reading] = []
    end = now
    for raw in reversed(m.rr_intervals_1024):
        ms = raw * 1000 / 1024  # 1/1024 s units -> milliseconds
        beats.append(_reading(who, ReadingKind.RR_INTERVAL, ms, Unit.MS, end, precision=3))
        end -= timedelta(milliseconds=ms)
    readings.extend(reversed(beats))  # oldest beat first
    return Mapped(readings=tuple(readings))


def _values(
    who: Who, time: datetime, items: list[tuple[ReadingKind, MedFloat | None, Unit, str]]
) -> Mapped:
    readings: list[Reading] = []
    events: list[DeviceEvent] = []
    for kind, value, unit, what in items:
        if value is None:
            continue
        if isinstance(value, SpecialValue):
            events.append(_special(who, what, value, time, None))
        else:
            readings.append(_reading(who, kind, value, unit, time))
    return Mapped(readings=tuple(readings), events=tuple(events))


def _stamp(stamp: DateTime | None, tz: tzinfo, now: datetime, uuid: str, offset: int) -> datetime:
    """The device's time stamp read in `tz`, or `now` when it has none or does not know it."""
    time = stamp.to_utc(tz, uuid=uuid, offset=offset) if stamp is not None else None
    return now if time is None else time


def map_blood_pressure(
    m: BloodPressureMeasurement, who: Who, *, now: datetime, tz: tzinfo = UTC
) -> Mapped:
    time = _stamp(m.timestamp, tz, now, BPM, 7)  # after flags and three SFLOATs
    unit = Unit.KPA if m.unit is PressureUnit.KPA else Unit.MMHG
    return _values(
        who,
        time,
        [
            (ReadingKind.BLOOD_PRESSURE_SYSTOLIC, m.systolic, unit, "systolic"),
            (ReadingKind.BLOOD_PRESSURE_DIASTOLIC, m.diastolic, unit, "diastolic"),
            (ReadingKind.BLOOD_PRESSURE_MEAN, m.mean_arterial, unit, "mean arterial pressure"),
            (ReadingKind.PULSE_RATE, m.pulse_rate_bpm, Unit.BPM, "pulse rate"),
        ],
    )


def map_temperature(
    m: TemperatureMeasurement, who: Who, *, now: datetime, tz: tzinfo = UTC
) -> Mapped:
    time = _stamp(m.timestamp, tz, now, TEMP, 5)  # after flags and the FLOAT
    unit = Unit.DEG_F if m.unit is TemperatureUnit.FAHRENHEIT else Unit.DEG_C
    return _values(who, time, [(ReadingKind.BODY_TEMPERATURE, m.temperature, unit, "temperature")])


def map_weight(m: WeightMeasurement, who: Who, *, now: datetime, tz: tzinfo = UTC) -> Mapped:
    time = _stamp(m.timestamp, tz, now, WEIGHT, 3)  # after flags and the uint16 weight
    if m.weight is None:
        return Mapped(
            events=(_event(who, DeviceEventKind.SENSOR_ERROR, time, "weighing unsuccessful", None),)
        )
    unit = Unit.LB if m.unit is WeightUnit.IMPERIAL else Unit.KG
    return _values(who, time, [(ReadingKind.BODY_WEIGHT, m.weight, unit, "weight")])
