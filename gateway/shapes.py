"""The one JSON shape of each record: export lines, ledger records, the API, live messages.

Pure vocabulary: the store, the dashboards and the CLI all take their shapes from here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from gateway.clock import to_rfc3339
from gateway.model import Alert, Reading

__all__ = ["alert_to_json", "json_number", "reading_to_json"]


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
