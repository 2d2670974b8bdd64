"""The one JSON shape of each record: export lines, ledger records, the API, live messages.

Pure vocabulary: the store, the dashboards and the CLI all take their shapes from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Alert, AlertKind, AlertLevel, AlertState, Reading, ReadingKind, Source
from gateway.units import Unit

__all__ = [
    "alert_from_json",
    "alert_to_json",
    "json_number",
    "reading_from_json",
    "reading_to_json",
]


def json_number(value: float | None) -> float | int | None:
    """Integral floats as ints: the JSON text is the same in every canonical form."""
    if value is not None and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def reading_to_json(reading: Reading) -> dict[str, object]:
    return {
        "patient_id": reading.patient_id,
        "device_id": reading.device_id,
        "kind": reading.kind.value,
        "time": to_rfc3339(reading.time),
        "value": json_number(reading.value),
        "unit": reading.unit.value,
        "seq": reading.seq,
        "source": reading.source.value,
        "original_value": json_number(reading.original_value),
        "original_unit": reading.original_unit.value if reading.original_unit else None,
        "status": list(reading.status),
    }


def reading_from_json(obj: Mapping[str, Any]) -> Reading:
    """The inverse of `reading_to_json` (a sealed reading record, as a clinic receives it);
    KeyError, TypeError or ValueError when `obj` is not one."""
    original_unit = obj.get("original_unit")
    original_value = obj.get("original_value")
    seq = obj.get("seq")
    status = obj.get("status", [])
    if not isinstance(status, list) or not all(isinstance(s, str) for s in status):
        raise ValueError("status must be a list of strings")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ValueError("seq must be an integer")
    return Reading(
        patient_id=str(obj["patient_id"]),
        device_id=str(obj["device_id"]),
        kind=_KINDS[obj["kind"]],
        value=float(obj["value"]),
        unit=_UNITS[obj["unit"]],
        time=parse_rfc3339(str(obj["time"])),
        source=_SOURCES[obj["source"]],
        seq=seq,
        original_value=None if original_value is None else float(original_value),
        original_unit=None if original_unit is None else _UNITS[original_unit],
        status=tuple(status),
    )


# The members by value: what `ReadingKind(text)` finds, at a tenth of its cost (a clinic
# worker reads every reading of every hub); KeyError for any other value.
_KINDS = {kind.value: kind for kind in ReadingKind}
_UNITS = {unit.value: unit for unit in Unit}
_SOURCES = {source.value: source for source in Source}


def alert_to_json(alert: Alert) -> dict[str, Any]:
    def ts(value: datetime | None) -> str | None:
        return None if value is None else to_rfc3339(value)

    return {
        "alert_id": alert.alert_id,
        "patient_id": alert.patient_id,
        "kind": alert.kind.value,
        "level": alert.level.value,
        "state": alert.state.value,
        "raised_at": ts(alert.raised_at),
        "updated_at": ts(alert.updated_at),
        "message": alert.message,
        "glucose_mg_dl": alert.glucose_mg_dl,
        "acknowledged_by": alert.acknowledged_by,
        "acknowledged_at": ts(alert.acknowledged_at),
        "resolved_at": ts(alert.resolved_at),
        # Who acknowledged: the care team (above, ends escalation) or the patient (silences
        # only the patient's alarm).
        "patient_acknowledged_by": alert.patient_acknowledged_by,
        "patient_acknowledged_at": ts(alert.patient_acknowledged_at),
    }


def alert_from_json(obj: Mapping[str, Any]) -> Alert:
    """The inverse of `alert_to_json`; KeyError or ValueError when `obj` is not one."""

    def when(name: str) -> datetime | None:
        value = obj.get(name)
        return None if value is None else parse_rfc3339(str(value))

    raised, updated = when("raised_at"), when("updated_at")
    if raised is None or updated is None:
        raise ValueError("an alert has raised_at and updated_at")
    glucose = obj.get("glucose_mg_dl")
    return Alert(
        alert_id=str(obj["alert_id"]),
        patient_id=str(obj["patient_id"]),
        kind=AlertKind(obj["kind"]),
        level=AlertLevel(obj["level"]),
        state=AlertState(obj["state"]),
        raised_at=raised,
        updated_at=updated,
        message=str(obj["message"]),
        glucose_mg_dl=None if glucose is None else float(glucose),
        acknowledged_by=obj.get("acknowledged_by"),
        acknowledged_at=when("acknowledged_at"),
        resolved_at=when("resolved_at"),
        patient_acknowledged_by=obj.get("patient_acknowledged_by"),
        patient_acknowledged_at=when("patient_acknowledged_at"),
    )


def json_line(obj: Mapping[str, object]) -> str:
    """One record as one line of compact JSON (JSON Lines), non-ASCII kept as it is."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# The columns of a readings export (`glucohub export`, a patient's "download my data"): values
# as stored (glucose in mg/dL), times RFC 3339 UTC, so a file from either opens the same way.
# `time` is the device's, `received_at` the hub's clock when it received the reading (empty
# for readings stored before the hub kept it).
EXPORT_FIELDS = (
    "patient_id",
    "device_id",
    "kind",
    "time",
    "value",
    "unit",
    "seq",
    "source",
    "received_at",
)


def export_record(reading: Reading) -> dict[str, object]:
    """One reading as an export row, keyed by `EXPORT_FIELDS` (None where absent)."""
    row = reading_to_json(reading)
    received = reading.received_at
    row["received_at"] = None if received is None else to_rfc3339(received)
    return {field: row[field] for field in EXPORT_FIELDS}
