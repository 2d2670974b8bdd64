"""Stored rows <-> the vocabulary, for every backend: a reading's row and its canonical JSON
(the bytes the ledger seals, so both backends must produce them identically), alerts,
patients, devices, batches and dead letters read back, and the checks on what was stored.
No driver here: rows are plain tuples."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.clock import to_rfc3339
from gateway.errors import StorageError
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    Batch,
    Device,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import DeadLetter, Origin, RejectReason
from gateway.shapes import json_number, reading_to_json
from gateway.storage.contract import (
    DEAD_LETTER_PREFIX_BYTES,
    Message,
    Unsealable,
    UnsealedEvent,
    UnsealedReading,
)
from gateway.units import Unit
from ledger.errors import LedgerError
from ledger.jcs import canonicalize

log = logging.getLogger("glucohub.store")

# Readings and ledger events that cannot be sealed carry this batch_seq: out of every
# batch and of the unsealed set, kept where they are (see `Store.quarantine`).
QUARANTINED = -1

TIME_COLUMN = 6  # index of `time` in _READING_COLUMNS rows
_READING_COLUMNS = (
    "id, patient_id, device_id, kind, value, unit, time, seq, source, "
    "original_value, original_unit, status"
)


def _time_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def status_text(reading: Reading) -> str:
    """A reading's status flags as stored; ValueError when a flag holds the "," that joins
    them (validation refuses those, so this guards other callers)."""
    for flag in reading.status:
        if "," in flag or not flag:
            raise ValueError(f"status flag {flag!r} cannot be stored: flags are joined by ','")
    return ",".join(reading.status)


def reading_to_row(reading: Reading) -> tuple[object, ...]:
    """The row of a reading; ValueError for a status flag `status_text` refuses."""
    status = status_text(reading)
    return (
        reading.patient_id,
        reading.device_id,
        reading.kind.value,
        reading.value,
        reading.unit.value,
        to_rfc3339(reading.time),
        _time_ms(reading.time),
        reading.seq,
        reading.source.value,
        reading.original_value,
        reading.original_unit.value if reading.original_unit else None,
        status,
        reading.dedupe_key(),
    )


def reading_from_row(row: tuple[Any, ...]) -> Reading:
    """A reading from a `_READING_COLUMNS` row, optionally followed by `received_at` (RFC
    3339 text, a datetime, or NULL: stored before the hub kept receive times)."""
    (_, patient_id, device_id, kind, value, unit, time, seq, source, ov, ou, status) = row[:12]
    received = row[12] if len(row) > 12 else None
    return Reading(
        patient_id=str(patient_id),
        device_id=str(device_id),
        kind=_KINDS.get(kind) or ReadingKind(str(kind)),
        value=float(value),
        unit=_UNITS.get(unit) or Unit(str(unit)),
        time=datetime.fromisoformat(str(time).replace("Z", "+00:00")),
        seq=None if seq is None else int(seq),
        source=_SOURCES.get(source) or Source(str(source)),
        original_value=None if ov is None else float(ov),
        original_unit=None if ou is None else _UNITS.get(ou) or Unit(str(ou)),
        status=tuple(s for s in str(status).split(",") if s),
        received_at=None if received is None else _when(received),
    )


# Stored text -> member by a dict: calling each enum was a fifth of a row's decoding time (a
# 30-day report reads 8,640 rows). An unknown value still gets the enum's own ValueError.
_KINDS = {k.value: k for k in ReadingKind}
_UNITS = {u.value: u for u in Unit}
_SOURCES = {s.value: s for s in Source}


def _when(value: object) -> datetime:
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def reading_json_from_row(row: tuple[Any, ...]) -> dict[str, object]:
    """`reading_to_json` straight from a stored row (the sealing and verify hot path)."""
    (_, patient_id, device_id, kind, value, unit, time, seq, source, ov, ou, status) = row
    return {
        "patient_id": patient_id,
        "device_id": device_id,
        "kind": kind,
        "time": time,
        "value": json_number(value),
        "unit": unit,
        "seq": seq,
        "source": source,
        "original_value": json_number(ov),
        "original_unit": ou,
        "status": status.split(",") if status else [],
    }


_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')
_MAX_EXACT = 2**53


@functools.lru_cache(maxsize=4096)
def _canonical_str(text: str) -> str:
    """Ids, kinds and units repeat across rows: each is escaped once."""
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    return canonicalize(text).decode("utf-8")


def _canonical_number(value: float | int | None) -> str:
    if value is None:
        return "null"
    if type(value) is float:
        magnitude = abs(value)
        if value.is_integer():
            if magnitude < _MAX_EXACT:
                return str(int(value))
        # For non-integers in this range Python's shortest repr and ECMAScript's
        # Number-to-String agree (an integral float would get repr's ".0").
        elif 1e-4 <= magnitude < 1e16:
            return repr(value)
    elif type(value) is int and -_MAX_EXACT <= value <= _MAX_EXACT:
        return str(value)
    return canonicalize(value).decode("utf-8")  # the general rules (or their error)


def reading_canonical_from_row(row: tuple[Any, ...]) -> str:
    """RFC 8785 text of `reading_json_from_row(row)`, written directly for this fixed
    schema (keys in sorted order): the sealing and verification hot path. A property test
    holds it equal to `ledger.jcs.canonicalize`."""
    (_, patient_id, device_id, kind, value, unit, time, seq, source, ov, ou, status) = row
    q = _canonical_str
    n = _canonical_number
    status_json = "[" + ",".join(q(s) for s in status.split(",")) + "]" if status else "[]"
    # `time` is always our own RFC 3339 spelling (digits, "-", ":", ".", "T", "Z").
    if seq is None:
        seq_json = "null"
    elif type(seq) is int and 0 <= seq < _MAX_EXACT:  # the usual case, without a call
        seq_json = str(seq)
    else:
        seq_json = n(seq)
    return (
        f'{{"device_id":{q(device_id)},"kind":{q(kind)},'
        f'"original_unit":{"null" if ou is None else q(ou)},'
        f'"original_value":{"null" if ov is None else n(ov)},'
        f'"patient_id":{q(patient_id)},"seq":{seq_json},'
        f'"source":{q(source)},"status":{status_json},"time":"{time}",'
        f'"unit":{q(unit)},"value":{n(value)}}}'
    )


def _text(value: str) -> str:
    """Text SQLite can bind: a lone surrogate (from a decoder's error message) escaped."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def _dead_letter_row(letter: DeadLetter) -> tuple[object, ...]:
    raw = letter.origin.raw
    return (
        to_rfc3339(letter.received_at),
        letter.origin.source.value,
        _text(letter.origin.topic),
        None if letter.origin.device_id is None else _text(letter.origin.device_id),
        letter.reason.value,
        _text(letter.detail),
        raw[:DEAD_LETTER_PREFIX_BYTES],
        len(raw),
        hashlib.sha256(raw).hexdigest(),
    )


def _refused(
    message: Message, position: int | None, received: datetime, reason: RejectReason, detail: str
) -> DeadLetter:
    """The dead letter of a message the store refused; `position` names the reading."""
    reading = message.readings[0 if position is None else position]
    if message.origin is not None:
        origin = Origin(
            source=message.origin.source,
            topic=message.origin.topic,
            raw=message.origin.raw,
            device_id=reading.device_id,
        )
    else:
        raw = json.dumps(
            reading_to_json(reading), separators=(",", ":"), ensure_ascii=False, default=str
        ).encode("utf-8", "backslashreplace")
        origin = Origin(source=reading.source, raw=raw, device_id=reading.device_id)
    if position is not None and len(message.readings) > 1:
        detail += f" (reading {position})"
    return DeadLetter(received_at=received, origin=origin, reason=reason, detail=detail)


def _tail_entries(ids: Sequence[int], rows: Sequence[tuple[object, ...]]) -> list[UnsealedReading]:
    """Unsealed-tail entries for rows just inserted (`reading_to_row` order) with `ids`:
    the same values a SELECT of those rows returns, so the same canonical text."""
    return [
        UnsealedReading(
            row_id,
            str(r[5]),
            reading_canonical_from_row(
                (row_id, r[0], r[1], r[2], r[3], r[4], r[5], r[7], r[8], r[9], r[10], r[11])
            ),
        )
        for row_id, r in zip(ids, rows, strict=True)
    ]


_ALERT_COLUMNS = (
    "alert_id",
    "patient_id",
    "kind",
    "level",
    "state",
    "raised_at",
    "updated_at",
    "message",
    "glucose_mg_dl",
    "acknowledged_by",
    "acknowledged_at",
    "resolved_at",
    "patient_acknowledged_by",
    "patient_acknowledged_at",
)


def alert_from_row(row: tuple[Any, ...]) -> Alert:
    def when(value: Any) -> datetime | None:
        return None if value is None else datetime.fromisoformat(str(value).replace("Z", "+00:00"))

    values = dict(zip(_ALERT_COLUMNS, row, strict=True))
    raised = when(values["raised_at"])
    updated = when(values["updated_at"])
    assert raised is not None and updated is not None
    return Alert(
        alert_id=str(values["alert_id"]),
        patient_id=str(values["patient_id"]),
        kind=AlertKind(values["kind"]),
        level=AlertLevel(values["level"]),
        state=AlertState(values["state"]),
        raised_at=raised,
        updated_at=updated,
        message=str(values["message"]),
        glucose_mg_dl=values["glucose_mg_dl"],
        acknowledged_by=values["acknowledged_by"],
        acknowledged_at=when(values["acknowledged_at"]),
        resolved_at=when(values["resolved_at"]),
        patient_acknowledged_by=values["patient_acknowledged_by"],
        patient_acknowledged_at=when(values["patient_acknowledged_at"]),
    )


def _patient(row: tuple[Any, ...]) -> Patient:
    return Patient(
        patient_id=str(row[0]),
        display_name=str(row[1]),
        timezone=_known_zone(str(row[0]), str(row[2])),
        simulated=bool(row[3]),
        team=None if row[4] is None else str(row[4]),
        ward=None if row[5] is None else str(row[5]),
    )


PATIENT_COLUMNS = "patient_id, display_name, timezone, simulated, team, ward"


@functools.cache
def _known_zone(patient_id: str, name: str) -> str:
    """A zone stored before `patients add` checked zones may be unknown: the patient is then
    shown in UTC, labelled UTC (warned once), rather than every page about them failing."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        log.warning(
            "patient %r: stored time zone %r is not in the IANA database; UTC is used",
            patient_id,
            name,
        )
        return "UTC"
    return name


def _device(row: tuple[Any, ...]) -> Device:
    return Device(
        device_id=str(row[0]),
        patient_id=str(row[1]),
        kind=DeviceKind(str(row[2])),
        transport=Transport(str(row[3])),
        name=str(row[4]),
        address=str(row[5]),
        simulated=bool(row[6]),
        active=bool(row[7]),
    )


def _batch(row: tuple[Any, ...]) -> Batch:
    def when(value: object) -> datetime:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))

    return Batch(
        seq=int(row[0]),
        reading_count=int(row[1]),
        first_time=when(row[2]),
        last_time=when(row[3]),
        sealed_at=when(row[4]),
        jws=_blob(row[5]),
        leaf_hash=_blob(row[6]),
    )


def _blob(value: object) -> bytes:
    """A BLOB column as bytes, also when someone stored it as TEXT (verify reports it)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace")
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise StorageError(f"a BLOB column holds {type(value).__name__}")


def _text_or_none(value: object) -> str | None:
    return None if value is None else str(value)


def _checked_time(value: object) -> str:
    """A stored reading time is our own RFC 3339 spelling; anything else cannot be sealed."""
    text = str(value)
    if not _STORED_TIME.fullmatch(text):
        raise ValueError(f"stored time {text[:40]!r} is not RFC 3339 UTC with milliseconds")
    return text


_STORED_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def sealable_readings(
    rows: Iterable[tuple[Any, ...]],
) -> tuple[list[UnsealedReading], list[Unsealable]]:
    """Stored reading rows as sealing takes them, and those with no canonical form (to be
    quarantined, never sealed)."""
    good: list[UnsealedReading] = []
    bad: list[Unsealable] = []
    for row in rows:
        try:
            good.append(
                UnsealedReading(
                    int(row[0]), _checked_time(row[TIME_COLUMN]), reading_canonical_from_row(row)
                )
            )
        except (LedgerError, ValueError, TypeError, AttributeError) as exc:
            bad.append(Unsealable("reading", int(row[0]), _text_or_none(row[1]), str(exc)))
    return good, bad


def sealable_events(
    rows: Iterable[tuple[Any, ...]],
) -> tuple[list[UnsealedEvent], list[Unsealable]]:
    """Stored (id, patient_id, body) ledger-event rows as canonical text, and those that have
    none."""
    good: list[UnsealedEvent] = []
    bad: list[Unsealable] = []
    for row_id, patient_id, body in rows:
        try:
            obj = json.loads(body)
            if not isinstance(obj, dict):
                raise ValueError("event body is not a JSON object")
            canonical = canonicalize(obj).decode("utf-8")
            good.append(UnsealedEvent(int(row_id), str(patient_id), canonical))
        except (LedgerError, ValueError, TypeError, RecursionError) as exc:
            bad.append(Unsealable("event", int(row_id), _text_or_none(patient_id), str(exc)))
    return good, bad
