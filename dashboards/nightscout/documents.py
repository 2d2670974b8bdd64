"""Nightscout API v1 `devicestatus` and `profile`, sans I/O: upload bodies into validated
documents, documents back into Nightscout's JSON, follower query strings into a query.

The reference is Nightscout's server (nightscout/cgm-remote-monitor): `lib/api/devicestatus/
index.js` (POST takes one object or an array, an `_id` must be 24 hex or absent, GET's
default count is 10), `lib/server/devicestatus.js` (`created_at` as given when it parses,
else now), `lib/api/profile/index.js` and `lib/server/profile.js` (newest `startDate` first,
a missing `created_at` is now; PROFILES_DEFAULT_COUNT 10 in lib/constants.json) and
`lib/server/query.js` (`find[created_at][$gte]`; four days back without a date filter).
Uploaders checked against: AndroidAPS (nightscout/AndroidAPS, DeviceStatus: `device`,
`pump` {battery, status, reservoir, clock}, `openaps` {suggested, enacted, iob},
`uploaderBattery`; the profile store's `defaultProfile`/`store`/`startDate`), Loop
(NightscoutKit: arrays of {device "loop://…", created_at, pump, uploader, loop {iob, cob,
predicted}}) and xDrip+ (NightscoutUploader.java, uploadDeviceStatus: one object {device,
uploader {battery, batteryVoltage, temperature}} without a time).

Unlike Nightscout, a document is kept only when it is a JSON object of bounded size and
depth, and a resend of the same document is stored once (its id is its content's hash when
the uploader gives none).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from dashboards.nightscout.entries import (
    DEFAULT_WINDOW,
    MAX_WINDOW,
    EntriesRejected,
    _find_key,
    _int,
    _time_value,
    epoch_ms,
    iso_time,
    parse_time,
)
from gateway.clinical.therapy_profile import ProfileError, ProfileSet, parse_profile_set
from gateway.protocols import RejectReason
from gateway.storage.contract import DocumentCollection, NightscoutDocument

MAX_DOCUMENTS = 100  # in one upload: AndroidAPS sends one, Loop a few
MAX_DOCUMENT_BYTES = {  # one document as compact JSON
    DocumentCollection.DEVICESTATUS: 32 * 1024,  # AndroidAPS with four 48-point predictions ~6 KiB
    DocumentCollection.PROFILE: 64 * 1024,
}
MAX_DEPTH = 12
DEFAULT_COUNT = 10  # lib/api/devicestatus/index.js; PROFILES_DEFAULT_COUNT
MAX_COUNT = 1000
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z: parse_time's bound
# Fields the server sets on reads: an uploader's own values for them are not kept.
_SERVER_FIELDS = ("_id", "mills", "utcOffset")


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedDocument:
    """One document of an upload: its `document`, or the `error` that refused it."""

    index: int
    raw: bytes  # the document alone, as JSON: the dead letter's body when it is refused
    document: NightscoutDocument | None = None
    error: EntriesRejected | None = None


def parse_documents(
    body: bytes, *, collection: DocumentCollection, patient_id: str, now: datetime
) -> list[ParsedDocument]:
    """The documents of a POST body: one object or an array. Raise `EntriesRejected` when
    the body as a whole is unusable; a bad document is returned with its `error`."""
    try:
        decoded = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise EntriesRejected(RejectReason.MALFORMED, f"not JSON: {exc}") from None
    items: list[object] = [decoded] if isinstance(decoded, dict) else decoded
    if not isinstance(items, list):
        raise EntriesRejected(RejectReason.SCHEMA, f"expected a {collection} object or an array")
    if len(items) > MAX_DOCUMENTS:
        raise EntriesRejected(
            RejectReason.OVERSIZED,
            f"{len(items)} documents in one upload (at most {MAX_DOCUMENTS})",
        )
    return [
        _parse(i, item, collection=collection, patient_id=patient_id, now=now)
        for i, item in enumerate(items)
    ]


def _parse(
    index: int,
    item: object,
    *,
    collection: DocumentCollection,
    patient_id: str,
    now: datetime,
) -> ParsedDocument:
    raw = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
    try:
        document = _document(item, raw, collection=collection, patient_id=patient_id, now=now)
    except EntriesRejected as exc:
        error = EntriesRejected(exc.reason, exc.detail, index=index)
        return ParsedDocument(index=index, raw=raw, error=error)
    return ParsedDocument(index=index, raw=raw, document=document)


def _document(
    item: object,
    raw: bytes,
    *,
    collection: DocumentCollection,
    patient_id: str,
    now: datetime,
) -> NightscoutDocument:
    if not isinstance(item, dict):
        raise EntriesRejected(RejectReason.SCHEMA, f"a {collection} document must be an object")
    limit = MAX_DOCUMENT_BYTES[collection]
    if len(raw) > limit:
        raise EntriesRejected(RejectReason.OVERSIZED, f"{len(raw)} bytes (at most {limit})")
    if _depth(item) > MAX_DEPTH:
        raise EntriesRejected(RejectReason.SCHEMA, f"nested deeper than {MAX_DEPTH} levels")
    given_id = item.get("_id")
    if given_id is not None and not (isinstance(given_id, str) and _OBJECT_ID.fullmatch(given_id)):
        # lib/api/shared/objectid-validation.js
        raise EntriesRejected(
            RejectReason.SCHEMA, f"Invalid _id format: must be 24-character hex, got {given_id!r}"
        )
    if collection is DocumentCollection.PROFILE:
        try:
            parse_profile_set(item)
        except ProfileError as exc:
            raise EntriesRejected(RejectReason.SCHEMA, str(exc)) from None
    time = _time(item, collection, now)
    kept = {k: v for k, v in item.items() if k not in _SERVER_FIELDS}
    if collection is DocumentCollection.PROFILE:  # lib/server/profile.js: kept as sent
        kept["created_at"] = kept.get("created_at") or iso_time(time)
        kept.setdefault("startDate", iso_time(time))
    else:  # lib/server/devicestatus.js: `created_at` rewritten as toISOString()
        kept["created_at"] = iso_time(time)
    try:
        text = json.dumps(kept, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError:  # Python's json reads NaN and Infinity; JSON has neither
        raise EntriesRejected(RejectReason.SCHEMA, "NaN or Infinity is not a JSON number") from None
    if given_id is None:
        digest = hashlib.sha256(f"{patient_id}|{collection}|{text}".encode()).hexdigest()
        given_id = digest[:24]
    return NightscoutDocument(
        patient_id=patient_id, collection=collection, doc_id=given_id, created_at=time, body=text
    )


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _time(item: Mapping[str, object], collection: DocumentCollection, now: datetime) -> datetime:
    """When the document is from: a profile's `startDate` (what Nightscout sorts profiles
    by), else `created_at`, else AndroidAPS' `date` (ms), else now (as Nightscout does)."""
    fields = ("startDate", "created_at") if collection is DocumentCollection.PROFILE else ()
    for field in (*fields, "created_at"):
        value = item.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise EntriesRejected(RejectReason.SCHEMA, f"{field} must be an ISO 8601 time")
        return parse_time(value)
    date = item.get("date")
    if date is not None:
        if isinstance(date, bool) or not isinstance(date, int | float) or not math.isfinite(date):
            raise EntriesRejected(RejectReason.SCHEMA, "date must be ms since the epoch")
        if not 0 <= date < _LATEST_MS:
            raise EntriesRejected(RejectReason.SCHEMA, f"date {date!r} is out of range")
        return parse_time(iso_time(_EPOCH + timedelta(milliseconds=int(date))))
    return now


def to_nightscout(document: NightscoutDocument) -> dict[str, object]:
    """A stored document as Nightscout serves it: its fields, `_id`, `created_at` as sent
    (or set at upload), `mills` and `utcOffset` (lib/server/devicestatus.js sets them)."""
    body = json.loads(document.body)
    assert isinstance(body, dict)
    return {
        "_id": document.doc_id,
        **body,
        "mills": epoch_ms(document.created_at),
        "utcOffset": 0,
    }


def profile_set(document: NightscoutDocument) -> ProfileSet:
    """The typed profiles of a stored profile document (validated when it was stored)."""
    body = json.loads(document.body)
    assert isinstance(body, dict)
    return parse_profile_set(body)


# -- reads -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DocumentsQuery:
    count: int
    since: datetime
    until: datetime


def parse_query(
    params: Sequence[tuple[str, str]], *, now: datetime, dated_by_default: bool = True
) -> DocumentsQuery:
    """GET /api/v1/devicestatus or /profile: `count` and `find[created_at][$op]` (ISO 8601
    or ms). Without a date filter, devicestatus looks four days back (lib/server/query.js);
    profiles (`dated_by_default=False`) are listed whatever their age within MAX_WINDOW
    (lib/server/profile.js, list). Other filters are refused rather than ignored."""
    since = datetime(2000, 1, 1, tzinfo=UTC)
    until = now + timedelta(days=1)
    dated = False
    asked: int | None = None
    for key, value in params:
        if key == "count":
            asked = _int(value)
            continue
        if not key.startswith("find["):
            continue
        field, op = _find_key(key)
        if field in ("created_at", "startDate") and op != "$eq":
            dated = True
            at = _time_value(value)
            step = timedelta(milliseconds=1)
            if op == "$gte":
                since = max(since, at)
            if op == "$gt":
                since = max(since, at + step)
            if op == "$lte":
                until = min(until, at)
            if op == "$lt":
                until = min(until, at - step)
        else:
            raise EntriesRejected(RejectReason.SCHEMA, f"unsupported filter {key}")
    if not dated and dated_by_default:
        since = now - DEFAULT_WINDOW
    since = max(since, until - MAX_WINDOW)
    count = min(asked, MAX_COUNT) if asked else DEFAULT_COUNT
    return DocumentsQuery(count=count, since=since, until=until)
