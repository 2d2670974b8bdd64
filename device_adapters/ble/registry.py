"""`decode(uuid_or_alias, data)`: any supported characteristic value -> a JSON-ready dict."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from enum import IntEnum, IntFlag
from typing import Any

from device_adapters.ble import (
    blood_pressure,
    cgm,
    glucose,
    heart_rate,
    racp,
    thermometer,
    weight_scale,
)
from device_adapters.ble.codec import DateTime
from device_adapters.ble.errors import UnknownCharacteristic
from device_adapters.ble.ieee11073 import SpecialValue
from device_adapters.ble.uuids import Char, normalize_uuid


def _cgm_records(data: bytes) -> object:
    return {"records": cgm.parse_cgm_measurements(data)}


PARSERS: dict[str, Callable[[bytes], object]] = {
    Char.GLUCOSE_MEASUREMENT: glucose.parse_glucose_measurement,
    Char.GLUCOSE_MEASUREMENT_CONTEXT: glucose.parse_glucose_context,
    Char.GLUCOSE_FEATURE: glucose.parse_glucose_feature,
    Char.RECORD_ACCESS_CONTROL_POINT: racp.parse_racp,
    Char.CGM_MEASUREMENT: _cgm_records,
    Char.CGM_FEATURE: cgm.parse_cgm_feature,
    Char.CGM_STATUS: cgm.parse_cgm_status,
    Char.CGM_SESSION_START_TIME: cgm.parse_cgm_session_start_time,
    Char.CGM_SESSION_RUN_TIME: cgm.parse_cgm_session_run_time,
    Char.CGM_SPECIFIC_OPS_CONTROL_POINT: cgm.parse_socp,
    Char.HEART_RATE_MEASUREMENT: heart_rate.parse_heart_rate,
    Char.BLOOD_PRESSURE_MEASUREMENT: blood_pressure.parse_blood_pressure,
    Char.WEIGHT_MEASUREMENT: weight_scale.parse_weight,
    Char.TEMPERATURE_MEASUREMENT: thermometer.parse_temperature,
}

_PROPERTIES = ("rr_intervals_s", "weight", "bmi", "height")


def to_jsonable(value: object) -> Any:
    """Enums by spec name, flags as name lists, special floats by name, dataclasses as dicts."""
    if isinstance(value, SpecialValue):
        return value.value
    if isinstance(value, IntFlag):
        return [str(m.name) for m in type(value) if m in value]
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, DateTime):
        return dataclasses.asdict(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
        for name in _PROPERTIES:
            if hasattr(value, name):
                out[name] = to_jsonable(getattr(value, name))
        return out
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    return value


def decode(uuid_or_alias: str, data: bytes) -> dict[str, Any]:
    """Parse `data` as the characteristic named by a UUID (16-bit or 128-bit) or alias.

    Raises UnknownCharacteristic or the parser's MalformedPayload."""
    uuid = normalize_uuid(uuid_or_alias)
    if uuid is None or uuid not in PARSERS:
        raise UnknownCharacteristic(uuid_or_alias)
    parsed = PARSERS[uuid](data)
    body = to_jsonable(parsed)
    result: dict[str, Any] = {"characteristic": Char(uuid).name.lower(), "uuid": uuid}
    result.update(body if isinstance(body, dict) else {"value": body})
    return result
