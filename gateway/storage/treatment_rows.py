"""Stored treatment rows <-> `Treatment`, and a treatment's ledger event, for every backend.
No driver here: rows are plain tuples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Source, Treatment, TreatmentKind

# Every column but the id and the time, in this order (the backends spell the time apart).
VALUE_COLUMNS = (
    "patient_id",
    "dedupe_key",
    "kind",
    "event_type",
    "insulin_units",
    "carbs_grams",
    "duration_min",
    "rate_u_h",
    "notes",
    "entered_by",
    "source",
)


def treatment_values(treatment: Treatment) -> tuple[object, ...]:
    """The VALUE_COLUMNS of `treatment`."""
    return (
        treatment.patient_id,
        treatment.dedupe_key,
        treatment.kind.value,
        treatment.event_type,
        treatment.insulin_units,
        treatment.carbs_grams,
        treatment.duration_min,
        treatment.rate_u_h,
        treatment.notes,
        treatment.entered_by,
        treatment.source.value,
    )


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def treatment_from_row(values: Sequence[Any], time_text: str) -> Treatment:
    """A `Treatment` from its VALUE_COLUMNS and its time as RFC 3339 text."""
    return Treatment(
        patient_id=str(values[0]),
        dedupe_key=str(values[1]),
        kind=TreatmentKind(str(values[2])),
        event_type=str(values[3]),
        insulin_units=_number(values[4]),
        carbs_grams=_number(values[5]),
        duration_min=_number(values[6]),
        rate_u_h=_number(values[7]),
        notes=str(values[8]),
        entered_by=str(values[9]),
        source=Source(str(values[10])),
        time=parse_rfc3339(time_text),
    )


def treatment_event(treatment: Treatment, event: str) -> dict[str, object]:
    """The ledger event of an added or replaced treatment: everything stored of it."""
    body: dict[str, object] = {"type": "treatment", "event": event}
    body.update(zip(VALUE_COLUMNS, treatment_values(treatment), strict=True))
    body["time"] = to_rfc3339(treatment.time)
    return body
