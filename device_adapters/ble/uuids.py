"""Bluetooth SIG assigned numbers for the services and characteristics we speak, as full UUIDs."""

from __future__ import annotations

from enum import StrEnum

_BASE = "0000{:04x}-0000-1000-8000-00805f9b34fb"


def full_uuid(short: int) -> str:
    return _BASE.format(short)


class Service(StrEnum):
    GLUCOSE = full_uuid(0x1808)
    HEALTH_THERMOMETER = full_uuid(0x1809)
    HEART_RATE = full_uuid(0x180D)
    BLOOD_PRESSURE = full_uuid(0x1810)
    WEIGHT_SCALE = full_uuid(0x181D)
    CONTINUOUS_GLUCOSE_MONITORING = full_uuid(0x181F)


class Char(StrEnum):
    GLUCOSE_MEASUREMENT = full_uuid(0x2A18)
    GLUCOSE_MEASUREMENT_CONTEXT = full_uuid(0x2A34)
    GLUCOSE_FEATURE = full_uuid(0x2A51)
    RECORD_ACCESS_CONTROL_POINT = full_uuid(0x2A52)
    CGM_MEASUREMENT = full_uuid(0x2AA7)
    CGM_FEATURE = full_uuid(0x2AA8)
    CGM_STATUS = full_uuid(0x2AA9)
    CGM_SESSION_START_TIME = full_uuid(0x2AAA)
    CGM_SESSION_RUN_TIME = full_uuid(0x2AAB)
    CGM_SPECIFIC_OPS_CONTROL_POINT = full_uuid(0x2AAC)
    HEART_RATE_MEASUREMENT = full_uuid(0x2A37)
    BLOOD_PRESSURE_MEASUREMENT = full_uuid(0x2A35)
    WEIGHT_MEASUREMENT = full_uuid(0x2A9D)
    TEMPERATURE_MEASUREMENT = full_uuid(0x2A1C)


ALIASES: dict[str, Char] = {
    "glucose_measurement": Char.GLUCOSE_MEASUREMENT,
    "glucose_context": Char.GLUCOSE_MEASUREMENT_CONTEXT,
    "glucose_measurement_context": Char.GLUCOSE_MEASUREMENT_CONTEXT,
    "glucose_feature": Char.GLUCOSE_FEATURE,
    "racp": Char.RECORD_ACCESS_CONTROL_POINT,
    "record_access_control_point": Char.RECORD_ACCESS_CONTROL_POINT,
    "cgm_measurement": Char.CGM_MEASUREMENT,
    "cgm_feature": Char.CGM_FEATURE,
    "cgm_status": Char.CGM_STATUS,
    "cgm_session_start_time": Char.CGM_SESSION_START_TIME,
    "cgm_session_run_time": Char.CGM_SESSION_RUN_TIME,
    "cgm_socp": Char.CGM_SPECIFIC_OPS_CONTROL_POINT,
    "cgm_specific_ops_control_point": Char.CGM_SPECIFIC_OPS_CONTROL_POINT,
    "heart_rate_measurement": Char.HEART_RATE_MEASUREMENT,
    "heart_rate": Char.HEART_RATE_MEASUREMENT,
    "blood_pressure_measurement": Char.BLOOD_PRESSURE_MEASUREMENT,
    "blood_pressure": Char.BLOOD_PRESSURE_MEASUREMENT,
    "weight_measurement": Char.WEIGHT_MEASUREMENT,
    "weight": Char.WEIGHT_MEASUREMENT,
    "temperature_measurement": Char.TEMPERATURE_MEASUREMENT,
    "temperature": Char.TEMPERATURE_MEASUREMENT,
}


def normalize_uuid(text: str) -> str | None:
    """Accept "2A18", "0x2a18", a full 128-bit UUID or an alias; return the full UUID or None."""
    cleaned = text.strip().lower()
    if cleaned in ALIASES:
        return str(ALIASES[cleaned])
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    if len(cleaned) == 4:
        try:
            return full_uuid(int(cleaned, 16))
        except ValueError:
            return None
    if len(cleaned) == 36 and cleaned.count("-") == 4:
        return cleaned
    return None
