"""The triage list ranked and paged in SQL, for both backends, from the rules of
`gateway.clinical.urgency`.

The order is the one `dashboards.triage.urgency_key` specifies (tests/storage/
test_triage_order.py checks the two agree on generated patients at arbitrary times). It
depends on `now` only through comparisons of stored times with it (is the latest reading
stale, is a battery report recent, how long has an alert been open, how long the silence),
so it is an ORDER BY over each patient's summary row and the open alerts, evaluated in the
database; only the page's rows are read back. Times are compared to the microsecond, as
Python compares datetimes (PostgreSQL's timestamptz and interval; SQLite's text times as
whole microseconds since the epoch).

Each row gets, in this order (ascending is urgent):
1. its priority: the most urgent of its open alerts' (`ALERT_PRIORITY`) and of its own data:
   a data problem when the latest glucose is missing or older than `STALE_AFTER` or a battery
   report is newer than `BATTERY_WARNING`, otherwise the latest value's band;
2. within a data problem the longest silence first (never a reading last); within the alert
   priorities the open alert of that priority raised earliest (ties by alert id) first, a
   priority without such an alert counting as raised now;
3. within the alert priorities the evidence further out of range (the latest value when fresh
   and in the priority's band, else that alert's glucose); in range the worst time below;
4. then the latest value (none last), the casefolded name, the patient id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.clinical.urgency import (
    ABOVE_BANDS,
    ALERT_PRIORITY,
    BAND_STEPS,
    BATTERY_WARNING,
    HIGHER_IS_WORSE,
    STALE_AFTER,
    Priority,
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Dialect:
    param: Callable[[str], str]  # a named parameter's placeholder
    time: Callable[[str], str]  # a stored time, as this dialect compares and subtracts it
    moment: Callable[[datetime], object]  # a time given as a parameter, the same way
    span: Callable[[timedelta], object]  # a duration given as a parameter
    zero: str  # a duration of nothing; `time - time` gives durations
    tiny: str  # a positive duration (ranks "never" after every silence)
    # "column IN the set given as parameter `name`", a JSON array of text: a few thousand
    # ids cross as one string (psycopg dumps a text[] element by element, in Python).
    in_set: Callable[[str], str]
    contains: Callable[[str, str], str]  # (column, parameter name) -> substring test
    binary: str  # appended to text columns to order them by code point


def micros(at: datetime) -> int:
    """Whole microseconds since the epoch, exactly (no float on the way)."""
    return (at - _EPOCH) // _US


SQLITE = Dialect(
    param=lambda name: f":{name}",
    # SQLite keeps a time as RFC 3339 text to the millisecond; julianday() holds whole
    # milliseconds (2.1e14 of them since -4713, exact in a double after rounding).
    # Compared as whole microseconds since the epoch, as Python compares datetimes.
    time=lambda col: (
        f"((CAST(round(julianday({col}) * 86400000.0) AS INTEGER) - 210866760000000) * 1000)"
    ),
    moment=micros,
    span=lambda span: span // _US,
    zero="0",
    tiny="1",
    in_set=lambda name: f"IN (SELECT value FROM json_each(:{name}))",
    contains=lambda col, name: f"instr({col}, :{name}) > 0",
    binary="",  # BINARY, SQLite's default: memcmp of UTF-8, i.e. code point order
)

# timestamptz and interval: microseconds, compared exactly (an interval by its total length).
POSTGRES = Dialect(
    param=lambda name: f"%({name})s",
    time=lambda col: col,
    moment=lambda at: at,
    span=lambda span: span,
    zero="interval '0'",
    tiny="interval '1 microsecond'",
    in_set=lambda name: f"IN (SELECT json_array_elements_text(%({name})s::json))",
    contains=lambda col, name: f"strpos({col}, %({name})s) > 0",
    binary=' COLLATE "C"',
)


def _alert_priority_case(column: str) -> str:
    whens = " ".join(f"WHEN '{kind.value}' THEN {int(p)}" for kind, p in ALERT_PRIORITY.items())
    return f"CASE {column} {whens} END"


def _band_case(column: str) -> str:
    whens = " ".join(
        f"WHEN {column} {'<=' if inclusive else '<'} {limit!r} THEN {int(p)}"
        for limit, inclusive, p in BAND_STEPS
    )
    return f"CASE {whens} ELSE {int(ABOVE_BANDS)} END"


@dataclass(frozen=True, slots=True, kw_only=True)
class Wanted:
    """The list's filters: a team, a ward, a search (name or id, casefolded, anywhere)."""

    team: str | None = None
    ward: str | None = None
    search: str = ""


def _filters(d: Dialect, wanted: Wanted) -> str:
    """The WHERE clause over `patients AS p`: the allowed set and the filters given."""
    clauses = [f"p.patient_id {d.in_set('allowed')}"]
    if wanted.team is not None:
        clauses.append(f"p.team = {d.param('team')}")
    if wanted.ward is not None:
        clauses.append(f"p.ward = {d.param('ward')}")
    if wanted.search.casefold():
        clauses.append(
            f"({d.contains('p.name_fold', 'search')} OR {d.contains('p.id_fold', 'search')})"
        )
    return " AND ".join(clauses)


def _count_query(d: Dialect, wanted: Wanted) -> str:
    return f"SELECT count(*) FROM patients AS p WHERE {_filters(d, wanted)}"


def page_query(d: Dialect, select: str, wanted: Wanted) -> str:
    """`select` (columns of `patients AS p` and `triage_summary AS s`) of one page, then the
    number of patients on every page. The ranking reads a few columns of every patient the
    filters keep; the page's whole rows are read for its patients only."""
    now, zero = d.param("now"), d.zero
    data, in_range = int(Priority.DATA), int(Priority.IN_RANGE)
    highs = ", ".join(str(int(p)) for p in sorted(HIGHER_IS_WORSE))
    kinds = ", ".join(f"'{kind.value}'" for kind in ALERT_PRIORITY)
    keys = ", ".join(f"k.{k}" for k in ("k1", "k2", "k3", "k4", "k5"))
    b = d.binary
    # Open alerts that place a patient, in the `ALERT_PRIORITY` of their kind.
    open_alerts = f"FROM alerts AS a WHERE a.state <> 'resolved' AND a.kind IN ({kinds})"
    prio = _alert_priority_case("a.kind")
    # Of a patient in an alert priority: that priority's open alert raised first (ties by
    # id), when and at what glucose. Per patient, through the index of open alerts, and
    # only for the few in an alert priority (a join would meet every open alert with every
    # patient when the planner misjudges the rows, as it does those of a CTE).
    first = (
        f"{open_alerts} AND a.patient_id = r.patient_id AND {prio} = r.prio "
        f"ORDER BY {d.time('a.raised_at')}, a.alert_id{b} LIMIT 1"
    )
    by_alert = f"r.prio NOT IN ({data}, {in_range})"
    return f"""
WITH alerted AS (
    SELECT a.patient_id, min({prio}) AS prio {open_alerts} GROUP BY a.patient_id
), mine AS (
    SELECT p.patient_id, p.name_fold, s.glucose_value AS v, s.below_range_pct AS below,
        {d.time("s.glucose_time")} AS t, {d.time("s.battery_low_at")} AS battery,
        al.prio AS alerted
    FROM patients AS p LEFT JOIN triage_summary AS s ON s.patient_id = p.patient_id
    LEFT JOIN alerted AS al ON al.patient_id = p.patient_id
    WHERE {_filters(d, wanted)}
), placed AS (
    SELECT m.*,
        CASE WHEN m.t IS NULL OR {now} - m.t > {d.param("stale")} THEN 1 ELSE 0 END AS stale,
        {_band_case("m.v")} AS band
    FROM mine AS m
), own AS (
    SELECT pl.*,
        CASE WHEN pl.stale = 1 OR pl.battery >= {d.param("battery_since")} THEN {data}
            ELSE pl.band END AS own
    FROM placed AS pl
), ranked AS (
    SELECT o.*,
        CASE WHEN o.alerted IS NOT NULL AND o.alerted < o.own THEN o.alerted ELSE o.own END
            AS prio
    FROM own AS o
), evidence AS (
    SELECT r.*,
        CASE WHEN {by_alert} THEN (SELECT {d.time("a.raised_at")} {first}) END AS raised,
        CASE WHEN {by_alert} THEN (SELECT a.glucose_mg_dl {first}) END AS glucose
    FROM ranked AS r
), keyed AS (
    SELECT r.patient_id, r.prio AS k1,
        CASE WHEN r.prio = {data} THEN
                CASE WHEN r.t IS NULL THEN {d.tiny} WHEN {now} > r.t THEN r.t - {now}
                    ELSE {zero} END
            WHEN r.prio = {in_range} THEN {zero}
            ELSE COALESCE(r.raised - {now}, {zero}) END AS k2,
        CASE WHEN r.prio = {data} THEN 0
            WHEN r.prio = {in_range} THEN -COALESCE(r.below, 0)
            ELSE (CASE WHEN r.prio IN ({highs}) THEN -1 ELSE 1 END) * (
                CASE WHEN r.stale = 0 AND r.band = r.prio THEN r.v
                    WHEN r.raised IS NOT NULL THEN COALESCE(r.glucose, 0)
                    ELSE COALESCE(r.v, 0) END) END AS k3,
        r.v IS NULL AS k4, r.v AS k5, r.name_fold AS k6
    FROM evidence AS r
), page AS (
    SELECT k.*, count(*) OVER () AS total FROM keyed AS k
    ORDER BY {keys}, k.k6{b}, k.patient_id{b}
    LIMIT {d.param("limit")} OFFSET {d.param("offset")}
)
SELECT {select}, k.total
FROM page AS k
JOIN patients AS p ON p.patient_id = k.patient_id
LEFT JOIN triage_summary AS s ON s.patient_id = k.patient_id
ORDER BY {keys}, k.k6{b}, k.patient_id{b}"""


def _params(
    d: Dialect, allowed: str, wanted: Wanted, *, now: datetime, offset: int, limit: int
) -> dict[str, object]:
    params: dict[str, object] = {
        "allowed": allowed,
        "now": d.moment(now),
        "stale": d.span(STALE_AFTER),
        "battery_since": d.moment(now - BATTERY_WARNING),
        "offset": offset,
        "limit": limit,
    }
    optional: Mapping[str, object] = {"team": wanted.team, "ward": wanted.ward}
    params.update({k: v for k, v in optional.items() if v is not None})
    if wanted.search.casefold():
        params["search"] = wanted.search.casefold()
    return params


Rows = Sequence[Sequence[Any]]


def fetch_page(
    d: Dialect,
    execute: Callable[[str, Mapping[str, object]], Rows],
    select: str,
    wanted: Wanted,
    *,
    allowed: AbstractSet[str],
    now: datetime,
    offset: int,
    limit: int,
) -> tuple[Rows, int, int]:
    """(the page's rows of `select`, the total matching, the page's offset): one query,
    or three when `offset` is at or past the end (count, then the last page)."""
    params = _params(d, json.dumps(list(allowed)), wanted, now=now, offset=offset, limit=limit)
    query = page_query(d, select, wanted)
    rows = execute(query, params)
    if rows:
        return [r[:-1] for r in rows], int(rows[0][-1]), offset
    counted = {k: v for k, v in params.items() if k in ("allowed", "team", "ward", "search")}
    total = int(execute(_count_query(d, wanted), counted)[0][0])
    if not total:
        return [], 0, 0
    params["offset"] = last = max(0, (total - 1) // limit * limit)
    return [r[:-1] for r in execute(query, params)], total, last
