"""The domain vocabulary, defined once: Reading, DeviceEvent, Batch, Alert, Patient, Device.

Every record is a frozen, slotted, keyword-only dataclass that validates itself.
Times are timezone-aware UTC; field names carry units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.clock import require_utc
from gateway.units import Unit


class ReadingKind(StrEnum):
    GLUCOSE = "glucose"  # capillary/meter glucose (fingerstick)
    CGM_GLUCOSE = "cgm_glucose"  # interstitial glucose from a continuous monitor
    HEART_RATE = "heart_rate"
    RR_INTERVAL = "rr_interval"
    ENERGY_EXPENDED = "energy_expended"
    BLOOD_PRESSURE_SYSTOLIC = "blood_pressure_systolic"
    BLOOD_PRESSURE_DIASTOLIC = "blood_pressure_diastolic"
    BLOOD_PRESSURE_MEAN = "blood_pressure_mean"
    PULSE_RATE = "pulse_rate"
    BODY_WEIGHT = "body_weight"
    BODY_TEMPERATURE = "body_temperature"

    @property
    def is_glucose(self) -> bool:
        return self in (ReadingKind.GLUCOSE, ReadingKind.CGM_GLUCOSE)


# The canonical unit each kind is stored in (after `gateway.units.to_canonical`).
CANONICAL_UNIT: dict[ReadingKind, Unit] = {
    ReadingKind.GLUCOSE: Unit.MG_DL,
    ReadingKind.CGM_GLUCOSE: Unit.MG_DL,
    ReadingKind.HEART_RATE: Unit.BPM,
    ReadingKind.RR_INTERVAL: Unit.MS,
    ReadingKind.ENERGY_EXPENDED: Unit.KJ,
    ReadingKind.BLOOD_PRESSURE_SYSTOLIC: Unit.MMHG,
    ReadingKind.BLOOD_PRESSURE_DIASTOLIC: Unit.MMHG,
    ReadingKind.BLOOD_PRESSURE_MEAN: Unit.MMHG,
    ReadingKind.PULSE_RATE: Unit.BPM,
    ReadingKind.BODY_WEIGHT: Unit.KG,
    ReadingKind.BODY_TEMPERATURE: Unit.DEG_C,
}


# A reading's seq is sealed as an RFC 8785 number, an IEEE 754 double (I-JSON, RFC 7493
# §2.2): beyond 2^53-1 it would be stored but could never be sealed exactly.
MAX_SEQ = 2**53 - 1

# A status flag is an identifier (e.g. "calibration_required", "trend_mg_dl_min=-1.5"):
# 1-64 ASCII letters, digits and "_.:=+-". Stored flags are joined with ",", so no flag may
# hold one. "(?![\s\S])" is end-of-string in both Python and ECMA-262 (reading.schema.json).
STATUS_FLAG_PATTERN = r"^[A-Za-z0-9_.:=+-]{1,64}(?![\s\S])"


class Source(StrEnum):
    """How a reading reached the hub."""

    BLE = "ble"
    MQTT = "mqtt"
    HTTP = "http"
    VIRTUAL = "virtual"
    IMPORT = "import"


class DeviceKind(StrEnum):
    CGM = "cgm"
    METER = "meter"
    HEART_RATE = "heart_rate"
    BLOOD_PRESSURE = "blood_pressure"
    SCALE = "scale"
    THERMOMETER = "thermometer"
    UPLOADER = "uploader"  # a phone app or home sensor publishing several kinds


class Transport(StrEnum):
    BLE = "ble"
    MQTT = "mqtt"
    HTTP = "http"
    VIRTUAL = "virtual"


# The kinds each kind of device may send (validation refuses others as `kind_mismatch`):
# what its Bluetooth SIG profile carries; an uploader (a phone app, a home sensor) relays any.
DEVICE_READING_KINDS: dict[DeviceKind, frozenset[ReadingKind]] = {
    DeviceKind.CGM: frozenset({ReadingKind.CGM_GLUCOSE}),
    DeviceKind.METER: frozenset({ReadingKind.GLUCOSE}),
    DeviceKind.HEART_RATE: frozenset(
        {ReadingKind.HEART_RATE, ReadingKind.RR_INTERVAL, ReadingKind.ENERGY_EXPENDED}
    ),
    DeviceKind.BLOOD_PRESSURE: frozenset(
        {
            ReadingKind.BLOOD_PRESSURE_SYSTOLIC,
            ReadingKind.BLOOD_PRESSURE_DIASTOLIC,
            ReadingKind.BLOOD_PRESSURE_MEAN,
            ReadingKind.PULSE_RATE,
        }
    ),
    DeviceKind.SCALE: frozenset({ReadingKind.BODY_WEIGHT}),
    DeviceKind.THERMOMETER: frozenset({ReadingKind.BODY_TEMPERATURE}),
    DeviceKind.UPLOADER: frozenset(ReadingKind),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """One measurement, in its canonical unit, attributed to a patient and a device.

    `value` is canonical (glucose in mg/dL); `original_value`/`original_unit` keep what
    the device said. `seq` is the device's own sequence number when it has one: it is
    the de-duplication key together with `device_id`. `time` is the device's; `received_at`
    the hub's own clock when the hub received the input (None: not yet received, or stored
    before the hub kept it). It is provenance, not identity: equality ignores it, and the
    sealed ledger record leaves it out (the hub's clock may be wrong; see README "The clock").
    """

    patient_id: str
    device_id: str
    kind: ReadingKind
    value: float
    unit: Unit
    time: datetime
    source: Source
    seq: int | None = None
    original_value: float | None = None
    original_unit: Unit | None = None
    status: tuple[str, ...] = ()
    received_at: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.patient_id or not self.device_id:
            raise ValueError("patient_id and device_id must be non-empty")
        if not math.isfinite(self.value):
            raise ValueError(f"reading value must be finite, got {self.value!r}")
        if self.unit is not CANONICAL_UNIT[self.kind]:
            raise ValueError(
                f"{self.kind} is stored in {CANONICAL_UNIT[self.kind]}, got {self.unit}"
            )
        if self.seq is not None and self.seq < 0:
            raise ValueError(f"seq must be >= 0, got {self.seq}")
        object.__setattr__(self, "time", require_utc(self.time))
        if self.received_at is not None:
            object.__setattr__(self, "received_at", require_utc(self.received_at, "received_at"))
        if self.original_value is None:
            object.__setattr__(self, "original_value", self.value)
            object.__setattr__(self, "original_unit", self.unit)

    @property
    def glucose_mg_dl(self) -> float:
        if not self.kind.is_glucose:
            raise ValueError(f"{self.kind} is not a glucose reading")
        return self.value

    def dedupe_key(self) -> str:
        """(device, seq) when the device numbers its records, else (device, time, kind, value)."""
        if self.seq is not None:
            return f"seq:{self.kind}:{self.seq}"
        return f"tkv:{self.time.isoformat()}|{self.kind}|{self.value!r}"


class DeviceEventKind(StrEnum):
    """Things a device reports that are not a number to chart."""

    SPECIAL_VALUE = "special_value"  # SFLOAT/FLOAT NaN, NRes, +/-INF
    SENSOR_WARMUP = "sensor_warmup"
    SENSOR_ERROR = "sensor_error"
    CALIBRATION_REQUIRED = "calibration_required"
    BATTERY_LOW = "battery_low"
    SESSION_STARTED = "session_started"
    SESSION_STOPPED = "session_stopped"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    RESULT_TOO_HIGH = "result_too_high"
    RESULT_TOO_LOW = "result_too_low"
    SEQ_CONFLICT = "seq_conflict"  # a different reading under a seq already stored


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceEvent:
    patient_id: str
    device_id: str
    kind: DeviceEventKind
    time: datetime
    detail: str = ""
    seq: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "time", require_utc(self.time))


@dataclass(frozen=True, slots=True, kw_only=True)
class Patient:
    patient_id: str
    display_name: str
    timezone: str = "UTC"  # IANA name; day boundaries in metrics use it
    simulated: bool = False
    team: str | None = None  # the care team that looks after the patient (triage filter)
    ward: str | None = None  # the ward or clinic the patient belongs to (triage filter)


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    device_id: str
    patient_id: str
    kind: DeviceKind
    transport: Transport
    name: str = ""
    address: str = ""  # BLE address, when the transport is BLE
    simulated: bool = False
    active: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Batch:
    """A sealed ledger batch as the hub stores it: the JWS is the signed record."""

    seq: int
    reading_count: int
    first_time: datetime
    last_time: datetime
    sealed_at: datetime
    jws: bytes = field(repr=False)
    leaf_hash: bytes

    def __post_init__(self) -> None:
        for name in ("first_time", "last_time", "sealed_at"):
            object.__setattr__(self, name, require_utc(getattr(self, name), name))
        if self.reading_count < 0 or self.seq < 0:
            raise ValueError("batch seq and reading_count must be >= 0")


class AlertKind(StrEnum):
    URGENT_LOW = "urgent_low"
    LOW = "low"
    HIGH = "high"
    URGENT_HIGH = "urgent_high"
    FALLING_FAST = "falling_fast"
    FALLING_VERY_FAST = "falling_very_fast"
    RISING_FAST = "rising_fast"
    RISING_VERY_FAST = "rising_very_fast"
    PREDICTED_LOW = "predicted_low"
    SUSTAINED_HIGH = "sustained_high"
    SUSTAINED_LOW = "sustained_low"
    STALE_DATA = "stale_data"
    SENSOR_WARMUP = "sensor_warmup"
    SENSOR_ERROR = "sensor_error"
    CALIBRATION_REQUIRED = "calibration_required"
    BATTERY_LOW = "battery_low"
    DEVICE_DISCONNECTED = "device_disconnected"


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    URGENT = "urgent"
    ESCALATED = "escalated"


class AlertState(StrEnum):
    RAISED = "raised"
    ACKNOWLEDGED = "acknowledged"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """One alert's current state; every change is a new `Alert` value with the same id."""

    alert_id: str
    patient_id: str
    kind: AlertKind
    level: AlertLevel
    state: AlertState
    raised_at: datetime
    updated_at: datetime
    message: str
    glucose_mg_dl: float | None = None
    acknowledged_by: str | None = None  # the care team's acknowledgement: ends escalation
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None
    # The patient's own acknowledgement or snooze: silences only the patient's alarm.
    patient_acknowledged_by: str | None = None
    patient_acknowledged_at: datetime | None = None

    def __post_init__(self) -> None:
        for name in (
            "raised_at",
            "updated_at",
            "acknowledged_at",
            "resolved_at",
            "patient_acknowledged_at",
        ):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, require_utc(value, name))


class TreatmentKind(StrEnum):
    """What a patient or their pump did, as clinicians chart it (Nightscout's `eventType`s
    map onto these: dashboards/nightscout/treatments.py)."""

    INSULIN_BOLUS = "insulin_bolus"
    TEMP_BASAL = "temp_basal"  # a temporary basal rate (U/h) for a duration
    CARBS = "carbs"
    NOTE = "note"
    EXERCISE = "exercise"
    SENSOR_START = "sensor_start"
    SENSOR_CHANGE = "sensor_change"
    SITE_CHANGE = "site_change"  # an insulin pump's infusion set
    OTHER = "other"  # an event type kept as sent (e.g. "Profile Switch"), not charted


@dataclass(frozen=True, slots=True, kw_only=True)
class Treatment:
    """One treatment of one patient: insulin, carbohydrates, a note, an event.

    Amounts carry their units; absent ones are None (a "Meal Bolus" may carry both insulin
    and carbohydrates). `dedupe_key` identifies the treatment across resends: uploaders send
    the same treatments again and again. `event_type` is the uploader's own name for it
    (Nightscout's `eventType`), kept for reads back. Times are kept to the millisecond, as
    stored. Physiological plausibility is `gateway.validation.validate_treatment`'s job;
    this only refuses what is not a number or not a treatment at all.
    """

    patient_id: str
    time: datetime
    kind: TreatmentKind
    dedupe_key: str
    source: Source
    insulin_units: float | None = None
    carbs_grams: float | None = None
    duration_min: float | None = None
    rate_u_h: float | None = None
    notes: str = ""
    event_type: str = ""
    entered_by: str = ""

    def __post_init__(self) -> None:
        if not self.patient_id or not self.dedupe_key:
            raise ValueError("patient_id and dedupe_key must be non-empty")
        for name in ("insulin_units", "carbs_grams", "duration_min", "rate_u_h"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value!r}")
        time = require_utc(self.time)
        object.__setattr__(self, "time", time.replace(microsecond=time.microsecond // 1000 * 1000))
