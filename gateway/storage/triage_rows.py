"""The triage summary's rows, shared by both backends: what a write changes in them, and how a
stored row becomes a `TriageSummary`.

A patient's summary keeps their latest glucose reading (CGM or meter: the one
`latest_reading(patient, GLUCOSE_KINDS)` returns, ties to the later write), each device's
latest low-battery report, a count of glucose writes, and the 14-day shares with the write
count they were computed at (`set_triage_ranges`): the shares are due again once newer
writes exist (see `ReadingQueries`/`TriageSummaries` in the contract).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import DeviceEvent, DeviceEventKind, Reading, ReadingKind
from gateway.protocols import TriageSummary
from gateway.storage.rows import _patient, reading_from_row, reading_to_row

GLUCOSE_KINDS = (ReadingKind.CGM_GLUCOSE.value, ReadingKind.GLUCOSE.value)

# The latest glucose reading's columns, in `_READING_COLUMNS` order after (id, patient_id).
LATEST_COLUMNS = (
    "glucose_device_id",
    "glucose_kind",
    "glucose_value",
    "glucose_unit",
    "glucose_time",
    "glucose_seq",
    "glucose_source",
    "glucose_original_value",
    "glucose_original_unit",
    "glucose_status",
)
# A summary row as both backends select it: patient, latest glucose, battery, shares.
SUMMARY_SELECT = (
    "p.patient_id, p.display_name, p.timezone, p.simulated, p.team, p.ward, "
    + ", ".join(f"s.{c}" for c in LATEST_COLUMNS)
    + ", s.battery_low, s.below_range_pct, s.in_range_pct, s.ranges_at, "
    "COALESCE(s.glucose_writes, 0)"
)


def latest_glucose(readings: Iterable[Reading]) -> dict[str, Reading]:
    """Each patient's latest glucose reading among `readings` (input order breaks ties)."""
    found: dict[str, Reading] = {}
    for reading in readings:
        if reading.kind.value not in GLUCOSE_KINDS:
            continue
        held = found.get(reading.patient_id)
        if held is None or reading.time >= held.time:
            found[reading.patient_id] = reading
    return found


def latest_values(reading: Reading) -> tuple[object, ...]:
    """`LATEST_COLUMNS` of `reading`, with the time as SQLite's text (RFC 3339, ms, "Z")."""
    row = reading_to_row(reading)
    # reading_to_row: patient, device, kind, value, unit, time, time_ms, seq, source, ov, ou,
    # status, dedupe key
    return (row[1], row[2], row[3], row[4], row[5], row[7], row[8], row[9], row[10], row[11])


def battery_reports(events: Iterable[DeviceEvent]) -> dict[str, dict[str, datetime]]:
    """patient -> device -> their latest low-battery report among `events`."""
    found: dict[str, dict[str, datetime]] = {}
    for event in events:
        if event.kind is not DeviceEventKind.BATTERY_LOW:
            continue
        devices = found.setdefault(event.patient_id, {})
        held = devices.get(event.device_id)
        devices[event.device_id] = event.time if held is None else max(held, event.time)
    return found


def merge_battery(stored: str | None, new: Mapping[str, datetime]) -> tuple[str, datetime]:
    """The stored battery JSON ({device: RFC 3339}) with `new` reports, keeping each
    device's latest; and the newest report of all (`battery_low_at`), to the millisecond."""
    merged = {k: parse_rfc3339(v) for k, v in json.loads(stored or "{}").items()}
    for device_id, when in new.items():
        held = merged.get(device_id)
        merged[device_id] = when if held is None else max(held, when)
    text = {k: to_rfc3339(v) for k, v in sorted(merged.items())}
    return json.dumps(text), parse_rfc3339(max(text.values()))


def ascii_prefilter(search: str) -> str | None:
    """A LIKE pattern that narrows the rows in SQL before `matching`, for a search in ASCII
    (whose casefold is its lower case), its own % and _ taken literally (ESCAPE '!'); None
    otherwise. Names with other characters are passed on to `matching` whatever the
    pattern says: SQL's lower() does not casefold them."""
    wanted = search.casefold()
    if not wanted or not wanted.isascii():
        return None
    return "%" + wanted.replace("!", "!!").replace("%", "!%").replace("_", "!_") + "%"


def matching(summaries: list[TriageSummary], search: str) -> list[TriageSummary]:
    """Those whose display name or id contains `search`, any case (Unicode casefolding, which
    neither SQLite's nor a C-locale PostgreSQL's lower() does; 5,000 names take ~1 ms)."""
    wanted = search.casefold()
    if not wanted:
        return summaries
    return [
        s
        for s in summaries
        if wanted in s.patient.display_name.casefold() or wanted in s.patient.patient_id.casefold()
    ]


def care_unit_names(rows: Sequence[Sequence[object]]) -> tuple[list[str], list[str]]:
    """(team, ward) rows -> the distinct teams and the distinct wards among them."""
    teams = {str(t) for t, _ in rows if t is not None}
    wards = {str(w) for _, w in rows if w is not None}
    return sorted(teams), sorted(wards)


def summary_from_row(row: Sequence[Any]) -> TriageSummary:
    patient = _patient(tuple(row[:6]))
    latest_cols = row[6:16]
    battery, below, in_range, ranges_at, writes = row[16:21]
    latest = (
        None if latest_cols[0] is None else reading_from_row((0, patient.patient_id, *latest_cols))
    )
    return TriageSummary(
        patient=patient,
        latest=latest,
        battery_low=_battery(battery),
        below_range_pct=None if below is None else float(below),
        in_range_pct=None if in_range is None else float(in_range),
        ranges_at=None if ranges_at is None else _as_time(ranges_at),
        writes=int(writes),
    )


_NO_BATTERY: Mapping[str, datetime] = MappingProxyType({})


def _battery(stored: str | None) -> Mapping[str, datetime]:
    if not stored or stored == "{}":  # most patients: no report to parse
        return _NO_BATTERY
    return {k: parse_rfc3339(v) for k, v in json.loads(stored).items()}


def _as_time(value: object) -> datetime:
    """UTC, to the millisecond, as both backends keep times."""
    if isinstance(value, datetime):
        utc = value.astimezone(UTC)
        return utc.replace(microsecond=utc.microsecond // 1000 * 1000)
    return parse_rfc3339(str(value))
