"""Nightscout API v1 `treatments`, sans I/O: upload bodies into `Treatment`s, treatments into
Nightscout's JSON, follower query strings into a query.

The reference is Nightscout's server (nightscout/cgm-remote-monitor): `lib/api/treatments/
index.js` (POST takes one object or an array, a missing `created_at` is now; GET's default
count is 100, 1000 with a `find`), `lib/server/treatments.js` (`prepareData`: `eventTime`
wins over `created_at`, amounts are `Number()`ed and a 0 amount is no amount; `upsertQueryFor`:
a resend is found by `identifier`, else `_id`, else `created_at` + `eventType`),
`lib/server/query.js` (`find[created_at][$gte]`, four days back without a date filter) and
`docs/data-schemas/treatments-schema.md` (the eventTypes). Uploaders checked against:
AndroidAPS (nightscout/AndroidAPS, plugins/sync/.../nsclient/extensions/BolusExtension.kt,
CarbsExtension.kt, TemporaryBasalExtension.kt, TherapyEventExtension.kt; core/data/.../TE.kt
for the eventType names) and xDrip+ (NightscoutFoundation/xDrip, NightscoutUploader.java,
`populateV1APITreatmentEntry`: eventType "<none>" with `insulin` and `carbs`, a `uuid`, and
`_id` = `uuid_to_id(uuid)` on its PUT).

Whose treatments an upload holds is never read from the body: the caller passes the patient
its uploader secret belongs to.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from dashboards.nightscout.entries import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    EntriesRejected,
    _find_key,
    _float,
    _int,
    _time_value,
    epoch_ms,
    iso_time,
    parse_time,
)
from gateway.model import Source, Treatment, TreatmentKind
from gateway.protocols import RejectReason

MAX_TREATMENTS = 5_000  # in one upload: AndroidAPS and xDrip+ send a few at a time
DEFAULT_COUNT = 100  # lib/api/treatments/index.js: `query.count = query.find ? 1000 : 100`
DEFAULT_FIND_COUNT = 1000
MAX_COUNT = 10_000

# eventType -> kind (docs/data-schemas/treatments-schema.md, AndroidAPS TE.Type). Bolus types
# carry insulin (a "Meal Bolus" may carry carbohydrates too, or only them: AndroidAPS sends
# carbohydrates of 12 g or more as "Meal Bolus"); the rest name what happened.
_BOLUS_TYPES = frozenset(
    {"Meal Bolus", "Snack Bolus", "Correction Bolus", "Combo Bolus", "Bolus Wizard", "Bolus"}
)
_EVENT_KINDS: dict[str, TreatmentKind] = {
    "Carb Correction": TreatmentKind.CARBS,
    "Temp Basal": TreatmentKind.TEMP_BASAL,
    "Temp Basal Start": TreatmentKind.TEMP_BASAL,
    "Note": TreatmentKind.NOTE,
    "Announcement": TreatmentKind.NOTE,
    "Question": TreatmentKind.NOTE,
    "Exercise": TreatmentKind.EXERCISE,
    "Sensor Start": TreatmentKind.SENSOR_START,
    "Sensor Change": TreatmentKind.SENSOR_CHANGE,
    "Site Change": TreatmentKind.SITE_CHANGE,
}
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedTreatment:
    """One treatment of an upload: its `treatment`, or the `error` that refused it."""

    index: int
    raw: bytes  # the treatment alone, as JSON: the dead letter's body when it is refused
    treatment: Treatment | None = None
    error: EntriesRejected | None = None


def parse_treatments(body: bytes, *, patient_id: str, now: datetime) -> list[ParsedTreatment]:
    """The treatments of a POST or PUT /api/v1/treatments body: one object or an array.
    Raise `EntriesRejected` when the body as a whole is unusable; a bad treatment is
    returned with its `error`."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EntriesRejected(RejectReason.MALFORMED, f"not JSON: {exc}") from None
    items: list[object] = [decoded] if isinstance(decoded, dict) else decoded
    if not isinstance(items, list):
        raise EntriesRejected(RejectReason.SCHEMA, "expected a treatment object or an array")
    if len(items) > MAX_TREATMENTS:
        raise EntriesRejected(
            RejectReason.OVERSIZED,
            f"{len(items)} treatments in one upload (at most {MAX_TREATMENTS})",
        )
    return [_parse(i, item, patient_id=patient_id, now=now) for i, item in enumerate(items)]


def _parse(index: int, item: object, *, patient_id: str, now: datetime) -> ParsedTreatment:
    raw = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        if not isinstance(item, dict):
            raise EntriesRejected(RejectReason.SCHEMA, "a treatment must be an object")
        treatment = _treatment(item, patient_id=patient_id, now=now)
    except EntriesRejected as exc:
        error = EntriesRejected(exc.reason, exc.detail, index=index)
        return ParsedTreatment(index=index, raw=raw, error=error)
    except ValueError as exc:  # the model's own refusal
        error = EntriesRejected(RejectReason.SCHEMA, str(exc), index=index)
        return ParsedTreatment(index=index, raw=raw, error=error)
    return ParsedTreatment(index=index, raw=raw, treatment=treatment)


def _treatment(item: Mapping[str, object], *, patient_id: str, now: datetime) -> Treatment:
    event_type = _text(item, "eventType") or "<none>"
    time = _time(item, now)
    insulin = _amount(item, "insulin")
    carbs = _amount(item, "carbs")
    rate = _amount(item, "absolute")
    if rate is None:
        rate = _amount(item, "rate")  # AndroidAPS: a percent temp basal's rate in U/h
    duration = _duration(item)
    kind = _kind(event_type, insulin=insulin, carbs=carbs, rate=rate, notes=_text(item, "notes"))
    return Treatment(
        patient_id=patient_id,
        time=time,
        kind=kind,
        dedupe_key=_dedupe_key(item, time, event_type, insulin, carbs),
        source=Source.HTTP,
        insulin_units=insulin,
        carbs_grams=carbs,
        duration_min=duration,
        rate_u_h=rate if kind is TreatmentKind.TEMP_BASAL else None,
        notes=_text(item, "notes"),
        event_type=event_type,
        entered_by=_text(item, "enteredBy"),
    )


def _kind(
    event_type: str, *, insulin: float | None, carbs: float | None, rate: float | None, notes: str
) -> TreatmentKind:
    if event_type in _BOLUS_TYPES:
        return TreatmentKind.INSULIN_BOLUS if insulin is not None else TreatmentKind.CARBS
    kind = _EVENT_KINDS.get(event_type)
    if kind is TreatmentKind.TEMP_BASAL and rate is None:
        return TreatmentKind.OTHER  # a percent of a profile we do not have: kept, not charted
    if kind is not None:
        return kind
    # "<none>" (xDrip+) and every other type: what the amounts say
    if insulin is not None:
        return TreatmentKind.INSULIN_BOLUS
    if carbs is not None:
        return TreatmentKind.CARBS
    return TreatmentKind.NOTE if event_type == "<none>" and notes else TreatmentKind.OTHER


def _dedupe_key(
    item: Mapping[str, object],
    time: datetime,
    event_type: str,
    insulin: float | None,
    carbs: float | None,
) -> str:
    """lib/server/treatments.js, upsertQueryFor: `identifier` (AndroidAPS NSClientV3), else
    `_id` (xDrip+'s PUT), else xDrip+'s `uuid`, else the time, type and amounts."""
    for field in ("identifier", "_id", "uuid"):
        value = item.get(field)
        if isinstance(value, str) and value:
            return f"{field}:{value}"
    return f"at:{epoch_ms(time)}|{event_type}|{insulin!r}|{carbs!r}"


def _text(item: Mapping[str, object], field: str) -> str:
    value = item.get(field)
    return value if isinstance(value, str) else ""


def _number(item: Mapping[str, object], field: str) -> float | None:
    """Nightscout `Number()`s amounts: a number or a numeric string; null or "" is none."""
    value = item.get(field)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise EntriesRejected(RejectReason.SCHEMA, f"{field} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise EntriesRejected(
                RejectReason.SCHEMA, f"{field} must be a number, got {value!r}"
            ) from None
    if not isinstance(value, int | float):
        raise EntriesRejected(RejectReason.SCHEMA, f"{field} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise EntriesRejected(RejectReason.OUT_OF_RANGE, f"{field} is not finite")
    return float(value)


def _amount(item: Mapping[str, object], field: str) -> float | None:
    # prepareData, deleteIfEmpty: an amount of 0 is no amount (xDrip+ sends carbs 0 with a bolus)
    value = _number(item, field)
    return None if value == 0 else value


def _duration(item: Mapping[str, object]) -> float | None:
    """Minutes; AndroidAPS sends `durationInMilliseconds` too, the unrounded one."""
    ms = _number(item, "durationInMilliseconds")
    if ms is not None:
        return ms / 60_000
    return _number(item, "duration")


def _time(item: Mapping[str, object], now: datetime) -> datetime:
    """prepareData: `eventTime` wins over `created_at`; AndroidAPS also sends `date` (ms),
    xDrip+ `timestamp` (ms). Without any, the treatment happened now (lib/api/treatments)."""
    for field in ("eventTime", "created_at"):
        value = item.get(field)
        if isinstance(value, str) and value:
            return parse_time(value)
    for field in ("date", "mills", "timestamp"):
        if item.get(field) is not None:
            value = item.get(field)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise EntriesRejected(RejectReason.SCHEMA, f"{field} must be ms since the epoch")
            return _time_value(str(value))
    return now


# -- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TreatmentsQuery:
    """A follower's query: treatments with since <= time <= until, newest first, at most
    `count`, of `event_type` when one is given, with insulin/carbs within the bounds."""

    count: int
    since: datetime
    until: datetime
    event_type: str | None = None
    insulin_min: float = -math.inf
    carbs_min: float = -math.inf


def parse_query(params: Sequence[tuple[str, str]], *, now: datetime) -> TreatmentsQuery:
    """GET /api/v1/treatments: `count`, `find[created_at][$op]` (ISO 8601 or ms),
    `find[eventType]`, `find[insulin][$gt|$gte]`, `find[carbs][$gt|$gte]` (what followers ask
    for: "the boluses", "the meals"). Other `find[...]`s are refused rather than ignored."""
    since = datetime.min.replace(tzinfo=now.tzinfo)
    until = now + timedelta(days=1)
    dated = found = False
    asked: int | None = None
    event_type: str | None = None
    minimum = {"insulin": -math.inf, "carbs": -math.inf}
    for key, value in params:
        if key == "count":
            asked = _int(value)
            continue
        if not key.startswith("find["):
            continue
        found = True
        field, op = _find_key(key)
        if field == "created_at":
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
        elif field == "eventType" and op == "$eq":
            event_type = value
        elif field in minimum and op in ("$gt", "$gte"):
            bound = _float(value)
            minimum[field] = math.nextafter(bound, math.inf) if op == "$gt" else bound
        else:
            raise EntriesRejected(RejectReason.SCHEMA, f"unsupported filter {key}")
    if not dated:
        since = now - DEFAULT_WINDOW
    since = max(since, until - MAX_WINDOW)
    default = DEFAULT_FIND_COUNT if found else DEFAULT_COUNT
    return TreatmentsQuery(
        count=min(asked, MAX_COUNT) if asked else default,
        since=since,
        until=until,
        event_type=event_type,
        insulin_min=minimum["insulin"],
        carbs_min=minimum["carbs"],
    )


def select(treatments: Sequence[Treatment], query: TreatmentsQuery) -> list[Treatment]:
    """The treatments (newest first, from storage) `query` asks for, at most `query.count`."""
    chosen = [
        t
        for t in treatments
        if (query.event_type is None or t.event_type == query.event_type)
        and (query.insulin_min == -math.inf or (t.insulin_units or 0.0) >= query.insulin_min)
        and (query.carbs_min == -math.inf or (t.carbs_grams or 0.0) >= query.carbs_min)
    ]
    return chosen[: query.count]


def treatment_id(treatment: Treatment) -> str:
    """The `_id` Nightscout would answer with: the uploader's own when it sent an ObjectId
    (xDrip+ finds its treatments by it), else a stable 24-hex id from the de-duplication key."""
    given = treatment.dedupe_key.removeprefix("_id:")
    if given != treatment.dedupe_key and _OBJECT_ID.fullmatch(given):
        return given
    key = f"{treatment.patient_id}|{treatment.dedupe_key}"
    return hashlib.sha256(key.encode()).hexdigest()[:24]


def to_nightscout(treatment: Treatment) -> dict[str, object]:
    """One treatment as lib/api/treatments serves it (`created_at` in UTC, `mills`, amounts
    only when there are some, as prepareData leaves them)."""
    out: dict[str, object] = {
        "_id": treatment_id(treatment),
        "eventType": treatment.event_type or "<none>",
        "created_at": iso_time(treatment.time),
        "mills": epoch_ms(treatment.time),
        "utcOffset": 0,
    }
    if treatment.dedupe_key.startswith("identifier:"):
        out["identifier"] = treatment.dedupe_key.removeprefix("identifier:")
    if treatment.dedupe_key.startswith("uuid:"):
        out["uuid"] = treatment.dedupe_key.removeprefix("uuid:")
    optional: dict[str, object | None] = {
        "insulin": treatment.insulin_units,
        "carbs": treatment.carbs_grams,
        "duration": treatment.duration_min,
        "absolute": treatment.rate_u_h,
        "rate": treatment.rate_u_h,
        "notes": treatment.notes or None,
        "enteredBy": treatment.entered_by or None,
    }
    out.update({k: v for k, v in optional.items() if v is not None})
    return out
