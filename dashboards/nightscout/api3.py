"""Nightscout API v3, sans I/O: the response envelope, the documents' common fields, the
identifier, and the SEARCH and HISTORY query strings, applied to documents (plain dicts).

The reference is Nightscout 15's server (nightscout/cgm-remote-monitor, lib/api3/):
`const.json` (messages, limits), `shared/operationTools.js` (`sendJSON`: `{status, result}`
plus top-level fields; `sendJSONStatus`: `{status, message}`; `validateCommon`;
`calculateIdentifier`), `generic/collection.js` (`parseDate`, `parseLimit`),
`generic/search/input.js` (filters `field$op=value`, `sort`/`sort$desc`, `skip`),
`generic/history/operation.js` (`srvModified` after the URL's time, or at or after the
`Last-Modified` header's whole second; ETag `W/"<max srvModified>"`) and
`shared/dateTools.js` (`parseToMoment`: ms, seconds or ISO 8601).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Literal

from dashboards.nightscout.entries import EntriesRejected, epoch_ms, iso_time, parse_time
from gateway.protocols import RejectReason

API3_VERSION = "3.0.3-alpha"  # const.json API3_VERSION of Nightscout 15
MAX_LIMIT = 1000  # const.json API3_MAX_LIMIT: also the default limit
MIN_TIMESTAMP_MS = 946_684_800_000  # const.json MIN_TIMESTAMP: 2000-01-01
MIN_UTC_OFFSET, MAX_UTC_OFFSET = -1440, 1440  # minutes
# operationTools.js: uuid v5 in the namespace of the 16 ASCII bytes "NightscoutRocks!"
IDENTIFIER_NAMESPACE = uuid.UUID(bytes=b"NightscoutRocks!")

BAD_LAST_MODIFIED = "Bad or missing Last-Modified header/parameter"
BAD_LIMIT = "Parameter limit out of tolerance"
BAD_BODY = "Bad or missing request body"
BAD_IDENTIFIER = "Bad or missing identifier field"
BAD_DATE = "Bad or missing date field"
BAD_UTC = "Bad or missing utcOffset field"
BAD_APP = "Bad or missing app field"
BAD_SKIP = "Parameter skip out of tolerance"
SORT_AND_SORT_DESC = "Parameters sort and sort_desc cannot be combined"
MISSING_TOKEN = "Missing or bad access token or JWT"
BAD_TOKEN = "Bad access token or JWT"
BAD_OPERATION = "Bad operation or collection"
READ_ONLY = "Trying to modify read-only document"

# Fields a client may not change once a document is stored (generic/update/validate.js)
IMMUTABLE_FIELDS = (
    "identifier",
    "date",
    "utcOffset",
    "eventType",
    "device",
    "app",
    "srvCreated",
    "subject",
    "srvModified",
    "modifiedBy",
    "isValid",
)
_RESERVED = frozenset({"token", "sort", "sort$desc", "limit", "skip", "fields", "now"})
_OPERATORS = frozenset({"eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"})
_FILTER = re.compile(r"(.*)\$([a-zA-Z]+)")
_NUMBER = re.compile(r"\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*")

Doc = dict[str, object]


class Api3Error(Exception):
    """A request Nightscout answers with `{status, message}` (sendJSONStatus). A 400 to an
    upload is kept as a dead letter with `reason`, unless the pipeline `dead_lettered` it."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        reason: RejectReason = RejectReason.SCHEMA,
        *,
        dead_lettered: bool = False,
    ) -> None:
        super().__init__(message or str(status))
        self.status = status
        self.message = message
        self.reason = reason
        self.dead_lettered = dead_lettered


def envelope(result: object, status: int = 200) -> Doc:
    """renderer.js renderJson and sendJSON: `{"status": 200, "result": ...}`."""
    return {"status": status, "result": result}


def status_body(status: int, message: str | None = None) -> Doc:
    body: Doc = {"status": status}
    if message:
        body["message"] = message
    return body


def missing_permission(permission: str) -> Api3Error:
    return Api3Error(403, f"Missing permission {permission}")


# -- dates and identifiers ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Moment:
    ms: int
    utc_offset_min: int


def parse_moment(value: object) -> Moment | None:
    """dateTools.parseToMoment: a number (or numeric string) is ms since the epoch, or
    seconds when that is before 2000; a string is ISO 8601 keeping its offset. Anything before
    2000 is no time. Numbers are read in UTC (the hub's zone for Nightscout's `moment()`)."""
    if isinstance(value, str) and _NUMBER.fullmatch(value):
        value = float(value)
    if isinstance(value, bool) or not value:
        return None
    if isinstance(value, int | float):
        if not math.isfinite(value):
            return None
        ms = value if value >= MIN_TIMESTAMP_MS else value * 1000
        if not MIN_TIMESTAMP_MS <= ms < 253_402_300_800_000:  # before year 10000
            return None
        return Moment(ms=int(ms), utc_offset_min=0)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)  # moment.parseZone: no offset is UTC
        offset = parsed.utcoffset()
        ms = epoch_ms(parsed)
        if ms < MIN_TIMESTAMP_MS or offset is None:
            return None
        return Moment(ms=ms, utc_offset_min=int(offset.total_seconds() // 60))
    return None


def parse_dates(doc: Doc) -> None:
    """collection.js parseDate: `date` (else `created_at`) becomes ms, `utcOffset` defaults
    to its offset, `created_at` to its ISO 8601 UTC form."""
    found = parse_moment(doc.get("date")) or parse_moment(doc.get("created_at"))
    if found is None:
        return
    doc["date"] = found.ms
    doc.setdefault("utcOffset", found.utc_offset_min)
    doc["created_at"] = iso_time(from_ms(found.ms))


def _js_text(value: object) -> str:
    """How JavaScript writes a value into a string (`'' + value`)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def calculate_identifier(doc: Mapping[str, object]) -> str:
    """operationTools.calculateIdentifier: uuid v5 of `device_date[_eventType]` (a missing
    device is JavaScript's "undefined")."""
    device = _js_text(doc["device"]) if "device" in doc else "undefined"
    date = _js_text(doc["date"]) if "date" in doc else "undefined"
    key = f"{device}_{date}"
    event_type = doc.get("eventType")
    if event_type:
        key += f"_{_js_text(event_type)}"
    return str(uuid.uuid5(IDENTIFIER_NAMESPACE, key))


def resolve_identifier(doc: Doc) -> None:
    """operationTools.resolveIdentifier: a document without one gets the calculated one."""
    if not doc.get("identifier"):
        doc["identifier"] = calculate_identifier(doc)


def validate_common(doc: Mapping[str, object], *, patching: bool = False) -> None:
    """operationTools.validateCommon (when patching, only the fields the patch holds)."""
    date = doc.get("date")
    if (not patching or "date" in doc) and (
        isinstance(date, bool) or not isinstance(date, int | float) or date <= MIN_TIMESTAMP_MS
    ):
        raise Api3Error(400, BAD_DATE)
    offset = doc.get("utcOffset")
    if (not patching or "utcOffset" in doc) and (
        isinstance(offset, bool)
        or not isinstance(offset, int | float)
        or not MIN_UTC_OFFSET <= offset <= MAX_UTC_OFFSET
    ):
        raise Api3Error(400, BAD_UTC)
    app = doc.get("app")
    if (not patching or "app" in doc) and (not isinstance(app, str) or not app.strip()):
        raise Api3Error(400, BAD_APP)


def validate_create(doc: Mapping[str, object]) -> None:
    """create/validate.js."""
    identifier = doc.get("identifier")
    if not isinstance(identifier, str) or not identifier.strip():
        raise Api3Error(400, BAD_IDENTIFIER)
    validate_common(doc)


def check_immutable(change: Mapping[str, object], stored: Mapping[str, object]) -> None:
    """update/validate.js: a field the change holds must equal the stored one. Fields the hub
    does not keep (the stored document lacks them) cannot be compared and are let through."""
    for field in IMMUTABLE_FIELDS:
        if field in change and field in stored and change[field] != stored[field]:
            raise Api3Error(400, f"Field {field} cannot be modified by the client")


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def etag(ms: int) -> str:
    return f'W/"{ms}"'


def http_date(ms: int) -> str:
    return format_datetime(from_ms(ms), usegmt=True)


# -- HISTORY -----------------------------------------------------------------------------


def history_after(param: str | None, header: str | None) -> int:
    """generic/history/operation.js parseFilter: the ms after which documents count. From the
    URL (a time as parseToMoment reads it; strictly after), else from the `Last-Modified`
    header (an HTTP date, floored to the second; at or after it: one ms less)."""
    if param is not None:
        found = parse_moment(param)
        if found is None:
            raise Api3Error(400, BAD_LAST_MODIFIED)
        return found.ms
    if not header:
        raise Api3Error(400, BAD_LAST_MODIFIED)
    try:
        at = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        raise Api3Error(400, BAD_LAST_MODIFIED) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    ms = epoch_ms(at)
    return ms - ms % 1000 - 1


# -- SEARCH ------------------------------------------------------------------------------

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]


@dataclass(frozen=True, slots=True)
class Filter:
    field: str
    op: Operator
    value: object


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchQuery:
    filters: tuple[Filter, ...]
    sort: tuple[tuple[str, int], ...]  # (field, 1 ascending or -1 descending)
    limit: int
    skip: int
    fields: tuple[str, ...] | None  # None: all fields


def parse_limit(params: Mapping[str, str]) -> int:
    """collection.js parseLimit: 1..MAX_LIMIT, MAX_LIMIT when not given."""
    given = params.get("limit")
    if not given:
        return MAX_LIMIT
    number = _number(given)
    if number is None or not 0 < number <= MAX_LIMIT:
        raise Api3Error(400, BAD_LIMIT)
    return int(number)


def _number(text: str) -> float | None:
    return float(text) if _NUMBER.fullmatch(text) else None


def _value(field: str, text: str) -> object:
    """search/input.js parseValue."""
    value: object = text
    number = _number(text)
    if number is not None:
        value = number
    elif text in ("true", "false"):
        value = text == "true"
    elif len(text) >= 2 and text.startswith("'") and text.endswith("'"):
        value = text[1:-1]
    if field in ("date", "srvModified", "srvCreated"):
        found = parse_moment(value)
        if found is not None:
            value = found.ms
    if field == "created_at":
        found = parse_moment(value)
        if found is not None:
            value = iso_time(from_ms(found.ms))
    return value


def parse_search(params: Sequence[tuple[str, str]]) -> SearchQuery:
    """GET /api/v3/{collection}'s query string (search/input.js, collection.js). Regular
    expressions (`$re`) are not offered: they are refused like an unknown operator."""
    filters: list[Filter] = []
    for key, text in params:
        if key in _RESERVED:
            continue
        field, op = key, "eq"
        match = _FILTER.fullmatch(key)
        if match is not None:
            field, op = match.group(1), match.group(2)
            if op not in _OPERATORS:
                raise Api3Error(400, f"Unsupported filter operator {op}")
        if op in ("in", "nin"):
            value: object = [_value(field, part) for part in text.split("|")]
        else:
            value = _value(field, text)
        filters.append(Filter(field, op, value))  # type: ignore[arg-type]
    query = dict(params)
    if query.get("sort") and query.get("sort$desc"):
        raise Api3Error(400, SORT_AND_SORT_DESC)
    direction = -1 if query.get("sort$desc") else 1
    first = query.get("sort$desc") or query.get("sort")
    sort = [(first, direction)] if first else []
    sort += [(f, direction) for f in ("identifier", "created_at", "date") if f != first]
    skip = 0
    if query.get("skip"):
        number = _number(query["skip"])
        if number is None or number < 0:
            raise Api3Error(400, BAD_SKIP)
        skip = int(number)
    fields = query.get("fields")
    chosen = None if not fields or fields == "_all" else tuple(fields.split(","))
    return SearchQuery(
        filters=tuple(filters), sort=tuple(sort), limit=parse_limit(query), skip=skip, fields=chosen
    )


def _rank(value: object) -> tuple[int, object]:
    """MongoDB's order of types: missing/null, numbers, strings, booleans."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (3, value)
    if isinstance(value, int | float):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    return (4, str(value))


def _compare(have: object, op: Operator, want: object) -> bool:
    if op in ("in", "nin"):
        assert isinstance(want, list)
        found = any(_compare(have, "eq", w) for w in want)
        return found if op == "in" else not found
    if op == "eq":
        return _rank(have) == _rank(want)
    if op == "ne":
        return _rank(have) != _rank(want)
    a, b = _rank(have), _rank(want)
    if have is None or a[0] != b[0]:
        return False  # MongoDB compares values of one type only
    if op == "gt":
        return a > b
    if op == "gte":
        return a >= b
    if op == "lt":
        return a < b
    return a <= b


def matches(doc: Mapping[str, object], filters: Sequence[Filter]) -> bool:
    return all(_compare(doc.get(f.field), f.op, f.value) for f in filters)


def time_window(filters: Sequence[Filter], field: str) -> tuple[int | None, int | None]:
    """The ms range (inclusive) the filters allow for a time field (`date`, or `created_at`
    as ISO 8601): where a store has to look."""
    since: int | None = None
    until: int | None = None
    for f in filters:
        if f.field != field:
            continue
        if isinstance(f.value, str):
            try:
                ms: int | float = epoch_ms(parse_time(f.value))
            except EntriesRejected:
                continue
        elif isinstance(f.value, int | float) and not isinstance(f.value, bool):
            ms = f.value
        else:
            continue
        low = {"gt": math.floor(ms) + 1, "gte": math.ceil(ms), "eq": math.ceil(ms)}.get(f.op)
        high = {"lt": math.ceil(ms) - 1, "lte": math.floor(ms), "eq": math.floor(ms)}.get(f.op)
        if low is not None:
            since = low if since is None else max(since, low)
        if high is not None:
            until = high if until is None else min(until, high)
    return since, until


def select(docs: Sequence[Doc], query: SearchQuery) -> list[Doc]:
    """The documents `query` asks for: filtered, sorted, skipped, limited (not projected)."""
    chosen = [d for d in docs if matches(d, query.filters)]
    for field, direction in reversed(query.sort):  # stable sorts: the first key last
        chosen.sort(key=lambda d, f=field: _rank(d.get(f)), reverse=direction < 0)  # type: ignore[misc]
    return chosen[query.skip : query.skip + query.limit]


def search(docs: Sequence[Doc], query: SearchQuery) -> list[Doc]:
    """`select`, then projected to the fields asked for."""
    return [project(d, query.fields) for d in select(docs, query)]


def fields_used(query: SearchQuery) -> set[str]:
    """The document fields the query's filters and sort look at."""
    return {f.field for f in query.filters} | {field for field, _ in query.sort}


def project(doc: Doc, fields: Sequence[str] | None) -> Doc:
    """fieldsProjector.js: only the fields asked for (`identifier` always)."""
    if fields is None:
        return doc
    keep = {*fields, "identifier"}
    return {k: v for k, v in doc.items() if k in keep}
