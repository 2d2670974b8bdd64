"""Decoder for Glucohub MQTT payload v1 (pure): bytes on a readings topic -> `Reading`s.

A payload is one JSON object or a non-empty array of them (the shape is published as
``reading.schema.json``, JSON Schema draft 2020-12)::

    {"kind": "cgm_glucose", "value": 6.1, "unit": "mmol/L",
     "time": "2024-05-01T08:00:00Z", "seq": 1234, "status": ["calibrated"]}

``time`` (RFC 3339 with an offset) or ``time_offset_s`` (seconds relative to receipt, so a
device without a wall clock can say "-30") — exactly one of the two. ``seq`` is the
device's record number: with the device id it is the hub's de-duplication key, which is what
makes an MQTT redelivery harmless. Values are converted to the kind's canonical unit with
`gateway.units`; the device's own value and unit are kept.

An array is all-or-nothing: one bad element rejects the message, so a dead letter always
holds one whole message. Physiological ranges, clocks in the future and unknown devices are
the hub's validation stage's business, not the decoder's.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, NamedTuple

from device_adapters.mqtt.errors import PayloadRejected
from device_adapters.mqtt.topics import parse_readings_topic
from gateway.errors import UnknownUnit
from gateway.model import (
    CANONICAL_UNIT,
    MAX_SEQ,  # 2^53-1: beyond it a seq could be stored but never sealed (and in the schema)
    STATUS_FLAG_PATTERN,
    Reading,
    ReadingKind,
    Source,
)
from gateway.protocols import RejectReason
from gateway.units import Unit, parse_unit, to_canonical

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_ABS_VALUE = 1e15  # any real measurement is far inside; keeps conversions finite
MAX_ABS_TIME_OFFSET_S = 1e9  # about 31.7 years either way

FIELDS = frozenset({"kind", "value", "unit", "time", "time_offset_s", "seq", "status"})
REQUIRED = ("kind", "value", "unit", "seq")

# The units a sender may use for each kind (any spelling `gateway.units.parse_unit` knows).
ALLOWED_UNITS: Mapping[ReadingKind, frozenset[Unit]] = {
    ReadingKind.GLUCOSE: frozenset({Unit.MG_DL, Unit.MMOL_L}),
    ReadingKind.CGM_GLUCOSE: frozenset({Unit.MG_DL, Unit.MMOL_L}),
    ReadingKind.HEART_RATE: frozenset({Unit.BPM}),
    ReadingKind.RR_INTERVAL: frozenset({Unit.MS}),
    ReadingKind.ENERGY_EXPENDED: frozenset({Unit.KJ}),
    ReadingKind.BLOOD_PRESSURE_SYSTOLIC: frozenset({Unit.MMHG, Unit.KPA}),
    ReadingKind.BLOOD_PRESSURE_DIASTOLIC: frozenset({Unit.MMHG, Unit.KPA}),
    ReadingKind.BLOOD_PRESSURE_MEAN: frozenset({Unit.MMHG, Unit.KPA}),
    ReadingKind.PULSE_RATE: frozenset({Unit.BPM}),
    ReadingKind.BODY_WEIGHT: frozenset({Unit.KG, Unit.LB}),
    ReadingKind.BODY_TEMPERATURE: frozenset({Unit.DEG_C, Unit.DEG_F}),
}

# RFC 3339 §5.6 date-time, restricted to years 1000-2999 and no leap second (Python's
# datetime has none). The same pattern is in reading.schema.json; "(?![\s\S])" is
# end-of-string in both ECMA-262 and Python ("$" would let a trailing newline through).
TIME_PATTERN = (
    r"^([12][0-9]{3})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]"
    r"([01][0-9]|2[0-3]):([0-5][0-9]):([0-5][0-9])(\.[0-9]+)?"
    r"([Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])(?![\s\S])"
)
_TIME = re.compile(TIME_PATTERN)
_STATUS_FLAG = re.compile(STATUS_FLAG_PATTERN)


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedMessage:
    patient_id: str
    device_id: str
    readings: tuple[Reading, ...]


def decode_readings(topic: str, payload: bytes, *, received_at: datetime) -> DecodedMessage:
    """Decode one MQTT message; raise `PayloadRejected` (and nothing else) when it is bad.

    Checks run cheapest first: size, topic, UTF-8 and JSON, then the shape of every element
    (SCHEMA / UNKNOWN_KIND), and only then units (UNKNOWN_UNIT) — so a payload that breaks
    the schema is always reported as a schema problem.
    """
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadRejected(
            RejectReason.OVERSIZED,
            f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}",
            topic=topic,
        )
    address = parse_readings_topic(topic)
    document = _parse_json(topic, payload)
    if not isinstance(document, list):  # one reading: what nearly every device sends
        reading = _to_reading(
            _check_shape(document, topic, None),
            patient_id=address.patient_id,
            device_id=address.device_id,
            received_at=received_at,
            topic=topic,
            index=None,
        )
        return DecodedMessage(
            patient_id=address.patient_id, device_id=address.device_id, readings=(reading,)
        )
    if not document:
        raise PayloadRejected(RejectReason.SCHEMA, "empty array", topic=topic)
    indexed = [
        (_check_shape(element, topic, position), position)
        for position, element in enumerate(document)
    ]
    readings = tuple(
        _to_reading(
            shape,
            patient_id=address.patient_id,
            device_id=address.device_id,
            received_at=received_at,
            topic=topic,
            index=index,
        )
        for shape, index in indexed
    )
    return DecodedMessage(
        patient_id=address.patient_id, device_id=address.device_id, readings=readings
    )


class _NotJson(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON (RFC 8259 §6)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _NotJson(f"duplicate key {key!r}")
            seen.add(key)
    return result


# One decoder for every message (`json.loads` with options would build one per call).
_JSON = json.JSONDecoder(parse_constant=_reject_constant, object_pairs_hook=_unique_keys)


def _parse_json(topic: str, payload: bytes) -> Any:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadRejected(
            RejectReason.MALFORMED, f"not UTF-8 at byte {exc.start}", topic=topic
        ) from None
    try:
        document = _JSON.decode(text)
    except (_NotJson, ValueError, RecursionError) as exc:
        # ValueError covers JSONDecodeError and Python's int-digits limit.
        raise PayloadRejected(RejectReason.MALFORMED, f"not JSON: {exc}", topic=topic) from None
    return document


class _Shape(NamedTuple):
    kind: ReadingKind
    value: float | int
    unit: str
    time: datetime | None
    time_offset_s: float | int | None
    seq: int
    status: tuple[str, ...]


_REQUIRED_SET = frozenset(REQUIRED)
_KINDS: Mapping[str, ReadingKind] = {kind.value: kind for kind in ReadingKind}


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _bad(
    detail: str, topic: str, index: int | None, reason: RejectReason = RejectReason.SCHEMA
) -> PayloadRejected:
    return PayloadRejected(reason, detail, topic=topic, index=index)


def _check_shape(element: object, topic: str, index: int | None) -> _Shape:
    if not isinstance(element, dict):
        raise _bad(f"a reading must be a JSON object, got {type(element).__name__}", topic, index)
    keys = element.keys()
    if not keys <= FIELDS:
        extra = sorted(keys - FIELDS)
        raise _bad(f"unknown field(s) {', '.join(map(repr, extra))}", topic, index)
    if not keys >= _REQUIRED_SET:
        missing = [name for name in REQUIRED if name not in element]
        raise _bad(f"missing field(s) {', '.join(map(repr, missing))}", topic, index)
    has_time = "time" in element
    if has_time == ("time_offset_s" in element):
        raise _bad("exactly one of 'time' and 'time_offset_s' is required", topic, index)

    raw_kind = element["kind"]
    if not isinstance(raw_kind, str):
        raise _bad("'kind' must be a string", topic, index)
    kind = _KINDS.get(raw_kind)
    if kind is None:
        raise _bad(f"unknown kind {raw_kind!r}", topic, index, RejectReason.UNKNOWN_KIND)

    value = element["value"]
    if not _is_number(value) or not -MAX_ABS_VALUE <= value <= MAX_ABS_VALUE:
        raise _bad(
            f"'value' must be a number within ±{MAX_ABS_VALUE:g}, got {value!r}", topic, index
        )
    # Integers compare exactly above, so float() below cannot overflow.
    if isinstance(value, float) and not math.isfinite(value):  # pragma: no cover - bounded
        raise _bad("'value' must be finite", topic, index)

    unit = element["unit"]
    if not isinstance(unit, str):
        raise _bad("'unit' must be a string", topic, index)

    seq = element["seq"]
    if isinstance(seq, float) and seq.is_integer():
        seq = int(seq)  # JSON Schema: 3.0 is an integer
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
        raise _bad(f"'seq' must be an integer 0..{MAX_SEQ}, got {element['seq']!r}", topic, index)

    time: datetime | None = None
    offset: float | int | None = None
    if has_time:
        time = _parse_time(element["time"], topic, index)
    else:
        offset = element["time_offset_s"]
        if not _is_number(offset) or not -MAX_ABS_TIME_OFFSET_S <= offset <= MAX_ABS_TIME_OFFSET_S:
            raise _bad(
                f"'time_offset_s' must be a number within ±{MAX_ABS_TIME_OFFSET_S:g}", topic, index
            )

    status: tuple[str, ...] = ()
    if "status" in element:
        flags = element["status"]
        if not isinstance(flags, list) or not all(isinstance(flag, str) for flag in flags):
            raise _bad("'status' must be an array of strings", topic, index)
        status = tuple(flags)
    for text in (unit, *status):
        if not _encodable(text):
            raise _bad(
                "string holds a lone surrogate (not UTF-8)", topic, index, RejectReason.MALFORMED
            )
    for flag in status:
        if _STATUS_FLAG.match(flag) is None:
            raise _bad(
                f"status flag {flag!r} is not a token (1-64 of A-Z a-z 0-9 _ . : = + -)",
                topic,
                index,
            )

    return _Shape(kind, value, unit, time, offset, seq, status)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _parse_time(raw: object, topic: str, index: int | None) -> datetime:
    if not isinstance(raw, str):
        raise _bad("'time' must be an RFC 3339 string", topic, index)
    match = _TIME.match(raw)
    if match is None:
        raise _bad(f"'time' {raw!r} is not RFC 3339 with an offset", topic, index)
    # The pattern admits only RFC 3339; for it, `fromisoformat` (C) gives what the fields
    # say (tests compare it with `_time_from_fields` on generated strings). It does not
    # take a lower-case "z" and may refuse a very long fraction: the fields handle those.
    try:
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        parsed = _time_from_fields(match, raw, topic, index)
    return parsed if parsed.tzinfo is UTC else parsed.astimezone(UTC)


def _time_from_fields(match: re.Match[str], raw: str, topic: str, index: int | None) -> datetime:
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7)
    micro = int((fraction[1:] + "000000")[:6]) if fraction else 0
    zone = match.group(8)
    if zone in ("Z", "z"):
        tz = UTC
    else:
        sign = 1 if zone[0] == "+" else -1
        tz = timezone(sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6])))
    try:
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=tz)
    except ValueError as exc:  # 2024-02-30: the pattern cannot know month lengths
        raise _bad(f"'time' {raw!r}: {exc}", topic, index) from None


def _to_reading(
    shape: _Shape,
    *,
    patient_id: str,
    device_id: str,
    received_at: datetime,
    topic: str,
    index: int | None,
) -> Reading:
    try:
        unit = parse_unit(shape.unit)
    except UnknownUnit:
        raise PayloadRejected(
            RejectReason.UNKNOWN_UNIT, f"unknown unit {shape.unit!r}", topic=topic, index=index
        ) from None
    if unit not in ALLOWED_UNITS[shape.kind]:
        raise PayloadRejected(
            RejectReason.UNKNOWN_UNIT,
            f"{unit} is not a unit of {shape.kind} "
            f"(use {', '.join(sorted(ALLOWED_UNITS[shape.kind]))})",
            topic=topic,
            index=index,
        )
    original = float(shape.value)
    value, canonical = to_canonical(original, unit)
    assert canonical is CANONICAL_UNIT[shape.kind]
    if shape.time is not None:
        time = shape.time
    else:
        assert shape.time_offset_s is not None
        time = received_at + timedelta(seconds=float(shape.time_offset_s))
    try:
        return Reading(
            patient_id=patient_id,
            device_id=device_id,
            kind=shape.kind,
            value=value,
            unit=canonical,
            time=time,
            source=Source.MQTT,
            seq=shape.seq,
            original_value=original,
            original_unit=unit,
            status=shape.status,
        )
    except ValueError as exc:  # pragma: no cover - every field was checked above
        raise PayloadRejected(RejectReason.SCHEMA, str(exc), topic=topic, index=index) from None
