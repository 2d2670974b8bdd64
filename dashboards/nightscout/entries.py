"""Nightscout API v1 `entries`, sans I/O: upload bodies into readings, readings into entries,
follower query strings into a query.

The reference is Nightscout's server (nightscout/cgm-remote-monitor): `lib/api/entries/index.js`
(what a POST accepts and returns, the routes, the default count), `lib/server/query.js` (the
`find[...]` filters and the default time window), `lib/plugins/errorcodes.js` (sgv < 39 is a CGM
error code, not glucose). Uploaders checked against: xDrip+'s `NightscoutUploader.java`
(NightscoutFoundation/xDrip, `populateV1APIBGEntry`, `populateV1APIMeterReadingEntry`,
`populateV1APICalibrationEntry`).

Whose readings an upload holds is never read from the body: the caller passes the patient and
hub device its uploader secret belongs to.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from gateway.clinical.trend import Direction, trend
from gateway.errors import InputError
from gateway.model import DeviceEvent, DeviceEventKind, Reading, ReadingKind, Source
from gateway.protocols import RejectReason
from gateway.units import Unit

# One upload. Juggluco sends up to 10440 pending entries per sensor in one array (`maxitems` in
# Common/src/main/cpp/net/watchserver/uploader.cpp, j-kaltes/Juggluco); a day is 288.
MAX_ENTRIES = 12_000
DEFAULT_COUNT = 10  # ENTRIES_DEFAULT_COUNT, lib/constants.json
MAX_COUNT = 10_000  # a week of 1-minute readings: the most one read serves
# lib/server/query.js: without a date filter a query covers `TWO_DAYS * 2` back from now.
DEFAULT_WINDOW = timedelta(days=4)
MAX_WINDOW = timedelta(days=90)
TREND_LOOKBACK = timedelta(minutes=15)  # readings before a window that its first arrows need
ERROR_CODE_BELOW = 39  # lib/plugins/errorcodes.js: an sgv below 39 is a CGM error code
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
_ERROR_CODES = {  # lib/plugins/errorcodes.js, code2Display
    1: "SENSOR_NOT_ACTIVE",
    2: "MINIMAL_DEVIATION",
    3: "NO_ANTENNA",
    5: "SENSOR_NOT_CALIBRATED",
    6: "COUNTS_DEVIATION",
    9: "ABSOLUTE_DEVIATION",
    10: "POWER_DEVIATION",
    12: "BAD_RF",
}
_DIRECTION_FLAG = "direction="
_NOISE_FLAG = "noise="
_DIRECTIONS = frozenset(d.value for d in Direction)


class EntryType(StrEnum):
    SGV = "sgv"  # sensor glucose, mg/dL
    MBG = "mbg"  # meter (fingerstick) glucose, mg/dL
    CAL = "cal"  # a calibration's slope and intercept: no measurement, not stored


class EntriesRejected(InputError):
    """An upload body, or one entry of it, that cannot become readings."""

    def __init__(self, reason: RejectReason, detail: str, *, index: int | None = None) -> None:
        where = f" (entry {index})" if index is not None else ""
        super().__init__(f"{reason}: {detail}{where}")
        self.reason = reason
        self.detail = detail
        self.index = index


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedEntry:
    """One entry of an upload: exactly one of `reading`, `event`, `error` — or none of them
    for an entry Glucohub does not keep (`cal`)."""

    index: int
    raw: bytes  # the entry alone, as JSON: the dead letter's body when it is refused
    echo: dict[str, object]  # what the POST response returns for it
    reading: Reading | None = None
    event: DeviceEvent | None = None
    error: EntriesRejected | None = None


def parse_upload(body: bytes, *, patient_id: str, device_id: str) -> list[ParsedEntry]:
    """The entries of a POST /api/v1/entries body: one entry object (it has a `date`) or an
    array of them (lib/api/entries/index.js, insert_entries). Raise `EntriesRejected` when the
    body as a whole is unusable; a bad entry is returned with its `error`."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise EntriesRejected(RejectReason.MALFORMED, f"not JSON: {exc}") from None
    if isinstance(decoded, dict):
        if "date" not in decoded and "dateString" not in decoded:
            raise EntriesRejected(RejectReason.SCHEMA, "an entry object needs a date")
        items: list[object] = [decoded]
    elif isinstance(decoded, list):
        items = decoded
    else:
        raise EntriesRejected(RejectReason.SCHEMA, "expected an entry object or an array")
    if len(items) > MAX_ENTRIES:
        raise EntriesRejected(
            RejectReason.OVERSIZED, f"{len(items)} entries in one upload (at most {MAX_ENTRIES})"
        )
    return [
        _parse_entry(index, item, patient_id=patient_id, device_id=device_id)
        for index, item in enumerate(items)
    ]


def _parse_entry(index: int, item: object, *, patient_id: str, device_id: str) -> ParsedEntry:
    raw = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    echo = dict(item) if isinstance(item, dict) else {}
    try:
        if not isinstance(item, dict):
            raise EntriesRejected(RejectReason.SCHEMA, "an entry must be an object")
        kind = _entry_type(item)
        time = _entry_time(item)
        if kind is EntryType.CAL:
            return ParsedEntry(index=index, raw=raw, echo=echo)
        if kind is EntryType.SGV:
            value = _number(item, "sgv")
            if value < ERROR_CODE_BELOW:
                code = int(value)
                name = _ERROR_CODES.get(code, "unknown")
                event = DeviceEvent(
                    patient_id=patient_id,
                    device_id=device_id,
                    kind=DeviceEventKind.SENSOR_ERROR,
                    time=time,
                    detail=f"Nightscout CGM error code {code} ({name})",
                )
                return ParsedEntry(index=index, raw=raw, echo=echo, event=event)
            reading_kind = ReadingKind.CGM_GLUCOSE
        else:
            value = _number(item, "mbg")
            reading_kind = ReadingKind.GLUCOSE
        reading = Reading(
            patient_id=patient_id,
            device_id=device_id,
            kind=reading_kind,
            value=value,
            unit=Unit.MG_DL,
            time=time,
            source=Source.HTTP,
            status=_flags(item) if kind is EntryType.SGV else (),
        )
    except EntriesRejected as exc:
        return ParsedEntry(
            index=index,
            raw=raw,
            echo=echo,
            error=EntriesRejected(exc.reason, exc.detail, index=index),
        )
    return ParsedEntry(index=index, raw=raw, echo=echo, reading=reading)


def _entry_type(item: Mapping[str, object]) -> EntryType:
    given = item.get("type")
    if given is None:  # untyped entries: what their value field says
        given = "sgv" if "sgv" in item else "mbg" if "mbg" in item else None
    try:
        return EntryType(str(given))
    except ValueError:
        kinds = ", ".join(t.value for t in EntryType)
        raise EntriesRejected(
            RejectReason.UNKNOWN_KIND, f"entry type {given!r} is not one of {kinds}"
        ) from None


def _number(item: Mapping[str, object], field: str) -> float:
    value = item.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EntriesRejected(RejectReason.SCHEMA, f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise EntriesRejected(RejectReason.OUT_OF_RANGE, f"{field} is not finite")
    return float(value)


def _entry_time(item: Mapping[str, object]) -> datetime:
    """`date` (ms since the epoch) or else `dateString` (ISO 8601 with an offset).
    lib/server/entries.js takes sysTime from dateString first; `date` wins here because it
    is what follower queries filter on (xDrip+ and Juggluco send both, equal)."""
    date = item.get("date")
    if date is not None:
        if isinstance(date, bool) or not isinstance(date, int | float) or not math.isfinite(date):
            raise EntriesRejected(RejectReason.SCHEMA, f"date must be ms since the epoch: {date!r}")
        if date < epoch_ms(_EARLIEST):
            raise EntriesRejected(RejectReason.TOO_OLD, f"date {date!r} is before 2000")
        if date >= epoch_ms(_LATEST):
            raise EntriesRejected(RejectReason.FUTURE_TIME, f"date {date!r} is after 2100")
        return _EPOCH + timedelta(milliseconds=int(date))
    text = item.get("dateString")
    if not isinstance(text, str):
        raise EntriesRejected(RejectReason.SCHEMA, "an entry needs date or dateString")
    return parse_time(text)


def parse_time(text: str) -> datetime:
    """An ISO 8601 time with an offset (`Z`, `+01:00` or xDrip+'s `+0100`), in UTC."""
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise EntriesRejected(RejectReason.SCHEMA, f"not an ISO 8601 time: {text!r}") from None
    if parsed.tzinfo is None:
        raise EntriesRejected(RejectReason.SCHEMA, f"time without an offset: {text!r}")
    if not _EARLIEST <= parsed <= _LATEST:
        raise EntriesRejected(RejectReason.SCHEMA, f"time out of range: {text!r}")
    return parsed.astimezone(UTC)


def _flags(item: Mapping[str, object]) -> tuple[str, ...]:
    """The uploader's arrow and noise level, kept as reading status flags."""
    flags: list[str] = []
    direction = item.get("direction")
    # "NONE" is an uploader with no arrow to give: the hub computes one on reads
    if isinstance(direction, str) and direction in _DIRECTIONS and direction != "NONE":
        flags.append(_DIRECTION_FLAG + direction.replace(" ", "_"))
    noise = item.get("noise")
    if isinstance(noise, int) and not isinstance(noise, bool) and 0 <= noise <= 9:
        flags.append(f"{_NOISE_FLAG}{noise}")
    return tuple(flags)


def _flag(reading: Reading, prefix: str) -> str | None:
    for flag in reading.status:
        if flag.startswith(prefix):
            return flag[len(prefix) :]
    return None


# -- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class EntriesQuery:
    """A follower's query: entries of `types` with since <= time <= until, newest first,
    at most `count`, and glucose within [sgv_min, sgv_max]."""

    count: int
    types: frozenset[EntryType]
    since: datetime
    until: datetime
    sgv_min: float = -math.inf
    sgv_max: float = math.inf


_OPS = ("$gte", "$gt", "$lte", "$lt", "$eq")


def parse_query(
    params: Sequence[tuple[str, str]],
    *,
    now: datetime,
    types: frozenset[EntryType],
    count: int | None = None,
) -> EntriesQuery:
    """The query of GET /api/v1/entries[...]: `count`, `find[date][$op]` (ms or ISO 8601),
    `find[dateString][$op]`, `find[sgv][$op]`, `find[type]`. Other parameters (cache busters
    such as `rr`, `token`, `secret`) are ignored; an unknown `find[...]` field is refused
    rather than silently not applied. Raise `EntriesRejected` on a value that does not parse."""
    since = _EPOCH
    until = _LATEST
    dated = False
    sgv_min, sgv_max = -math.inf, math.inf
    asked = count
    for key, value in params:
        if key == "count":
            asked = _int(value) if count is None else count
            continue
        if not key.startswith("find["):
            continue
        field, op = _find_key(key)
        if field == "type":
            try:
                types = frozenset({EntryType(value)})
            except ValueError:
                types = frozenset()
            continue
        if field in ("date", "dateString"):
            dated = True
            at = _time_value(value)
            step = timedelta(milliseconds=1)
            if op in ("$gte", "$eq"):
                since = max(since, at)
            if op == "$gt":
                since = max(since, at + step)
            if op in ("$lte", "$eq"):
                until = min(until, at)
            if op == "$lt":
                until = min(until, at - step)
            continue
        if field == "sgv":
            number = _float(value)
            if op in ("$gte", "$eq"):
                sgv_min = max(sgv_min, number)
            if op == "$gt":
                sgv_min = max(sgv_min, math.nextafter(number, math.inf))
            if op in ("$lte", "$eq"):
                sgv_max = min(sgv_max, number)
            if op == "$lt":
                sgv_max = min(sgv_max, math.nextafter(number, -math.inf))
            continue
        raise EntriesRejected(RejectReason.SCHEMA, f"unsupported filter {key}")
    until = min(until, now + timedelta(days=1))
    if not dated:
        since = now - DEFAULT_WINDOW
    since = max(since, until - MAX_WINDOW)
    # lib/api/entries/index.js: `if (!query.count) query.count = ENTRIES_DEFAULT_COUNT`
    resolved = DEFAULT_COUNT if not asked else min(asked, MAX_COUNT)
    return EntriesQuery(
        count=resolved, types=types, since=since, until=until, sgv_min=sgv_min, sgv_max=sgv_max
    )


def _find_key(key: str) -> tuple[str, str]:
    """("date", "$gte") from "find[date][$gte]"; ("type", "$eq") from "find[type]"."""
    parts = key[len("find[") :].rstrip("]").split("][")
    if len(parts) == 1:
        return parts[0], "$eq"
    if len(parts) == 2 and parts[1] in _OPS:
        return parts[0], parts[1]
    raise EntriesRejected(RejectReason.SCHEMA, f"unsupported filter {key}")


def _int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise EntriesRejected(RejectReason.SCHEMA, f"count must be an integer: {text!r}") from None
    return max(value, 0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise EntriesRejected(RejectReason.SCHEMA, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise EntriesRejected(RejectReason.SCHEMA, f"not a number: {text!r}")
    return value


def _time_value(text: str) -> datetime:
    """lib/server/query.js, enforceDateFilter: a number is ms since the epoch, anything else
    an ISO 8601 time ("some clients don't escape the plus": a space is a `+`)."""
    try:
        ms = float(text)
    except ValueError:
        return parse_time(text.strip().replace(" ", "+"))
    if not math.isfinite(ms):
        raise EntriesRejected(RejectReason.SCHEMA, f"not a time: {text!r}")
    bounded = min(max(ms, 0.0), float(epoch_ms(_LATEST)))
    return _EPOCH + timedelta(milliseconds=bounded)


def select(readings: Sequence[Reading], query: EntriesQuery) -> list[Reading]:
    """The readings `query` asks for, newest first, at most `query.count` (readings may
    start up to TREND_LOOKBACK before the window: they only feed the arrows)."""
    kinds = {EntryType.SGV: ReadingKind.CGM_GLUCOSE, EntryType.MBG: ReadingKind.GLUCOSE}
    wanted = {kinds[t] for t in query.types if t in kinds}
    chosen = [
        r
        for r in readings
        if r.kind in wanted
        and query.since <= r.time <= query.until
        and query.sgv_min <= r.value <= query.sgv_max
    ]
    chosen.sort(key=lambda r: (r.time, r.kind, r.value), reverse=True)
    return chosen[: query.count]


def entry_id(reading: Reading) -> str:
    """A stable 24-hex `_id` (the shape of Nightscout's Mongo ObjectId) for a stored reading:
    a resend of the same entry has the same id."""
    key = f"{reading.patient_id}|{reading.device_id}|{reading.dedupe_key()}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def iso_time(time: datetime) -> str:
    """JavaScript's toISOString: UTC, milliseconds, `Z` (lib/server/entries.js sysTime)."""
    return time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{time.microsecond // 1000:03d}Z"


def epoch_ms(time: datetime) -> int:
    return (time - _EPOCH) // timedelta(milliseconds=1)


def to_entries(
    chosen: Sequence[Reading], history: Sequence[Reading], device_names: Mapping[str, str]
) -> list[dict[str, object]]:
    """`chosen` as Nightscout entries. Arrows: the uploader's when it sent one, else computed
    from the patient's CGM `history` (which holds `chosen`'s CGM readings and the 15 minutes
    before them) by `gateway.clinical.trend`; `delta` is the rate times 5 minutes, as xDrip+
    uploads it."""
    cgm = sorted((r for r in history if r.kind is ReadingKind.CGM_GLUCOSE), key=lambda r: r.time)
    times = [r.time for r in cgm]
    out: list[dict[str, object]] = []
    for reading in chosen:
        entry: dict[str, object] = {
            "_id": entry_id(reading),
            "device": device_names.get(reading.device_id) or reading.device_id,
            "date": epoch_ms(reading.time),
            "dateString": iso_time(reading.time),
            "sysTime": iso_time(reading.time),
            "utcOffset": 0,
        }
        if reading.kind is ReadingKind.GLUCOSE:
            entry.update(type=EntryType.MBG.value, mbg=round(reading.value))
            out.append(entry)
            continue
        rate, computed = _trend_at(reading, cgm, times)
        sent = _flag(reading, _DIRECTION_FLAG)
        direction = sent.replace("_", " ") if sent is not None else computed.value
        entry.update(type=EntryType.SGV.value, sgv=round(reading.value), direction=direction)
        if rate is not None:
            entry["delta"] = round(rate * 5.0, 3)
        noise = _flag(reading, _NOISE_FLAG)
        if noise is not None:
            entry["noise"] = int(noise)
        out.append(entry)
    return out


def _trend_at(
    reading: Reading, cgm: Sequence[Reading], times: Sequence[datetime]
) -> tuple[float | None, Direction]:
    """The arrow at `reading` from the CGM readings of the 15 minutes up to it (`cgm` sorted
    by time, `times` their times): only those are looked at, whatever the history holds."""
    start = bisect.bisect_left(times, reading.time - TREND_LOOKBACK)
    end = bisect.bisect_right(times, reading.time)
    points = [((r.time - reading.time) / timedelta(minutes=1), r.value) for r in cgm[start:end]]
    return trend(points)
