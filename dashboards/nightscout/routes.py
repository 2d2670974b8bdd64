"""The HTTP edge of Nightscout's API v1: uploads and follower reads of glucose entries and
treatments.

Each request is authenticated as Nightscout does it (lib/authorization/index.js in
nightscout/cgm-remote-monitor): the `api-secret` header (or `?secret=`) holding the SHA-1 hex of
the secret, or the secret as an access token (`Authorization: Bearer`, `?token=`). Unlike
Nightscout, every patient's uploader has its own secret, and the secret alone decides whose
entries are read or written. Errors are Nightscout's JSON (lib/middleware/send-json-status.js):
`{"status": 401, "message": "Unauthorized", "description": "Invalid/Missing"}`.

An upload is answered only once every entry in it is durable: stored, found to be a duplicate,
or kept as a dead letter with its raw JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from dashboards.access import Access, Rule
from dashboards.context import add_route, deps
from dashboards.nightscout import auth
from dashboards.nightscout.entries import (
    TREND_LOOKBACK,
    EntriesRejected,
    EntryType,
    ParsedEntry,
    entry_id,
    epoch_ms,
    iso_time,
    parse_query,
    parse_upload,
    select,
    to_entries,
)
from dashboards.nightscout.treatments import parse_query as parse_treatments_query
from dashboards.nightscout.treatments import parse_treatments, to_nightscout
from dashboards.nightscout.treatments import select as select_treatments
from gateway.model import ReadingKind, Source
from gateway.protocols import DeadLetter, IngestOutcome, Origin, RejectReason
from gateway.storage.accounts import NightscoutSecretRecord
from gateway.storage.contract import DocumentCollection

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 * 1024 * 1024  # after gzip is undone: MAX_ENTRIES of ~250 bytes fit
API_VERSION = "15.0.0"  # the Nightscout release whose API v1 this follows
_RULE = Rule(access=Access.UPLOADER)


def add_routes(app: web.Application) -> None:
    # Express routes without strict routing: Nightscout answers `/entries/` as `/entries`
    for path in ("/api/v1/entries", "/api/v1/entries/", "/api/v1/entries.json"):
        add_route(app, "GET", path, get_entries, _RULE)
        add_route(app, "POST", path, post_entries, _RULE)
    add_route(app, "GET", "/api/v1/entries/{spec}", get_entries_spec, _RULE)
    for path in ("/api/v1/status", "/api/v1/status.json"):
        add_route(app, "GET", path, status, _RULE)
    add_route(app, "GET", "/api/v1/verifyauth", verifyauth, _RULE)
    for path in ("/api/v1/treatments", "/api/v1/treatments/", "/api/v1/treatments.json"):
        add_route(app, "GET", path, get_treatments, _RULE)
        add_route(app, "POST", path, post_treatments, _RULE)
        add_route(app, "PUT", path, put_treatments, _RULE)


def _status(status: int, message: object, description: str | None = None) -> web.Response:
    body: dict[str, object] = {"status": status, "message": message}
    if description is not None:
        body["description"] = description
    return web.json_response(body, status=status, headers={"Cache-Control": "no-store"})


def _unauthorized() -> web.Response:
    # lib/authorization/index.js, isPermitted: what a missing, wrong or too weak credential gets
    return _status(401, "Unauthorized", "Invalid/Missing")


def _json(body: object) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def _uploader(request: web.Request) -> NightscoutSecretRecord | None:
    return await auth.uploader(request)  # a secret, an access token or this hub's JWT


# -- uploads -----------------------------------------------------------------------------


class _TooLarge(Exception):
    def __init__(self, head: bytes) -> None:
        self.head = head


async def _read_body(request: web.Request) -> bytes:
    """The request body, gzip undone by aiohttp (xDrip+ gzips: GzipRequestInterceptor in
    NightscoutUploader.java), refused past MAX_BODY_BYTES of decoded bytes."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.readany():
        size += len(chunk)
        chunks.append(chunk)
        if size > MAX_BODY_BYTES:
            raise _TooLarge(b"".join(chunks)[:MAX_BODY_BYTES])
    return b"".join(chunks)


class UnreadableBody(Exception):
    """An upload's body refused before parsing, already kept as a dead letter: too large
    (413) or unreadable (400: a broken gzip stream, a connection cut mid-body)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail

    def response(self) -> web.Response:
        message = "Payload Too Large" if self.status == 413 else "Bad Request"
        return _status(self.status, message, self.detail)


async def read_upload(request: web.Request, origin: Origin) -> bytes:
    """The body of an upload (`_read_body`); `UnreadableBody` once a refused one is a dead
    letter."""
    try:
        return await _read_body(request)
    except _TooLarge as exc:
        detail = f"body over {MAX_BODY_BYTES} bytes"
        await _dead_letter(request, origin, exc.head, RejectReason.OVERSIZED, detail)
        raise UnreadableBody(413, detail) from None
    except web.HTTPException:
        raise
    except Exception as exc:  # a broken gzip stream or a connection cut mid-body
        detail = f"unreadable body: {type(exc).__name__}: {exc}"
        await _dead_letter(request, origin, b"", RejectReason.MALFORMED, detail)
        raise UnreadableBody(400, detail) from None


async def post_entries(request: web.Request) -> web.StreamResponse:
    uploader = await _uploader(request)
    if uploader is None or not uploader.can_write:
        return _unauthorized()  # a read-only token may not create entries (api:entries:create)
    sink = deps(request).sink
    if sink is None:
        return _status(503, "Service Unavailable", "this hub takes no uploads")
    origin = Origin(source=Source.HTTP, topic=request.path, raw=b"", device_id=uploader.device_id)
    try:
        body = await read_upload(request, origin)
    except UnreadableBody as unreadable:
        return unreadable.response()
    try:  # up to 4 MiB of JSON and 12,000 entries: parsed off the event loop
        parsed = await asyncio.to_thread(
            parse_upload, body, patient_id=uploader.patient_id, device_id=uploader.device_id
        )
    except EntriesRejected as exc:
        await _dead_letter(request, origin, body, exc.reason, exc.detail)
        return _status(400, "Bad Request", str(exc))
    try:
        outcomes = await _ingest(request, origin, parsed)
    except RuntimeError:  # the hub is shutting down
        return _status(503, "Service Unavailable", "the hub is shutting down; retry")
    kept: list[dict[str, object]] = []
    refused: list[str] = []
    for entry, outcome in zip(parsed, outcomes, strict=True):
        if entry.error is not None:
            refused.append(str(entry.error))
        elif outcome.rejected:
            refused.append(f"entry {entry.index} refused by validation (see dead letters)")
        elif entry.reading is not None:
            kept.append({**entry.echo, "_id": entry_id(entry.reading)})
        else:
            kept.append(entry.echo)
    if refused and not kept:
        return _status(400, "Bad Request", "; ".join(refused[:5]))
    if refused:
        log.warning("Nightscout upload: %d of %d entries refused", len(refused), len(parsed))
    # lib/api/entries/index.js, format_post_response: the stored entries as a JSON array
    return _json(kept)


async def _ingest(
    request: web.Request, origin: Origin, parsed: list[ParsedEntry]
) -> list[IngestOutcome]:
    """Every entry its own envelope (one bad entry must not refuse the others: uploaders
    resend a refused batch for ever), each durable before this returns."""
    sink = deps(request).sink
    assert sink is not None
    now = deps(request).clock.now()
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[IngestOutcome]] = []
    for entry in parsed:
        done: asyncio.Future[IngestOutcome] = loop.create_future()
        futures.append(done)
        here = Origin(
            source=origin.source, topic=origin.topic, raw=entry.raw, device_id=origin.device_id
        )
        letters = (
            [
                DeadLetter(
                    received_at=now,
                    origin=here,
                    reason=entry.error.reason,
                    detail=entry.error.detail,
                )
            ]
            if entry.error is not None
            else []
        )
        await sink.enqueue(
            origin=here,
            readings=[entry.reading] if entry.reading is not None else [],
            events=[entry.event] if entry.event is not None else [],
            dead_letters=letters,
            on_durable=_resolver(done),
        )
    return list(await asyncio.gather(*futures))


def _resolver(done: asyncio.Future[IngestOutcome]) -> Callable[[IngestOutcome], None]:
    def resolve(outcome: IngestOutcome) -> None:
        if not done.done():
            done.set_result(outcome)

    return resolve


async def _dead_letter(
    request: web.Request, origin: Origin, raw: bytes, reason: RejectReason, detail: str
) -> None:
    d = deps(request)
    if d.sink is None:
        return
    here = Origin(source=origin.source, topic=origin.topic, raw=raw, device_id=origin.device_id)
    letter = DeadLetter(received_at=d.clock.now(), origin=here, reason=reason, detail=detail)
    try:
        await d.sink.submit(origin=here, dead_letters=[letter])
    except RuntimeError:
        log.warning("Nightscout upload refused while shutting down: %s", detail)


# -- reads -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Read:
    types: frozenset[EntryType]
    count: int | None = None


_ALL = frozenset({EntryType.SGV, EntryType.MBG})


async def get_entries(request: web.Request) -> web.StreamResponse:
    # lib/api/entries/index.js: GET /entries applies the query as given (no type forced)
    return await _read(request, _Read(_ALL))


async def get_entries_spec(request: web.Request) -> web.StreamResponse:
    """/entries/current (the newest sgv), /entries/sgv, /entries/mbg, each with an optional
    `.json` (lib/api/entries/index.js, `/entries/current` and `/entries/:spec`)."""
    spec = request.match_info["spec"].removesuffix(".json")
    if spec == "current":
        return await _read(request, _Read(frozenset({EntryType.SGV}), count=1))
    try:
        kind = EntryType(spec)
    except ValueError:
        return _json([])  # a type nobody uploads: Nightscout finds nothing either
    return await _read(request, _Read(frozenset({kind})))


async def _read(request: web.Request, what: _Read) -> web.StreamResponse:
    uploader = await _uploader(request)
    if uploader is None:
        return _unauthorized()
    d = deps(request)
    try:
        query = parse_query(
            list(request.query.items()), now=d.clock.now(), types=what.types, count=what.count
        )
    except EntriesRejected as exc:
        return _status(400, "Bad Request", str(exc))
    if query.since > query.until or not query.types:
        return _json([])
    patient = uploader.patient_id
    history = await d.read_model.readings(
        patient,
        since=query.since - TREND_LOOKBACK,
        until=query.until,
        kinds=(ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE),
    )
    if d.documents is not None and (
        deleted := await d.documents.deleted(patient, DocumentCollection.ENTRIES)
    ):  # hidden by a Nightscout DELETE (dashboards/nightscout/document_routes.py)
        history = [r for r in history if entry_id(r) not in deleted]
    devices = {dev.device_id: dev.name for dev in await d.read_model.list_devices(patient)}

    def render() -> str:  # up to MAX_COUNT entries with their arrows: off the event loop
        return json.dumps(to_entries(select(history, query), history, devices))

    text = await asyncio.to_thread(render)
    return web.Response(
        text=text, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


# -- treatments --------------------------------------------------------------------------


async def post_treatments(request: web.Request) -> web.StreamResponse:
    # lib/api/treatments/index.js, post_response: the stored treatments as a JSON array
    return await _upload_treatments(request, single=False)


async def put_treatments(request: web.Request) -> web.StreamResponse:
    """lib/api/treatments/index.js: PUT saves (upserts) one treatment and answers with it.
    xDrip+ sends every treatment this way, one per request, with `_id` from its uuid."""
    return await _upload_treatments(request, single=True)


async def _upload_treatments(request: web.Request, *, single: bool) -> web.StreamResponse:
    uploader = await _uploader(request)
    if uploader is None or not uploader.can_write:
        return _unauthorized()  # api:treatments:create / :update
    d = deps(request)
    if d.treatments is None or d.sink is None:
        return _status(503, "Service Unavailable", "this hub takes no treatments")
    origin = Origin(source=Source.HTTP, topic=request.path, raw=b"", device_id=uploader.device_id)
    try:
        body = await read_upload(request, origin)
    except UnreadableBody as unreadable:
        return unreadable.response()
    now = d.clock.now()
    try:
        parsed = await asyncio.to_thread(
            parse_treatments, body, patient_id=uploader.patient_id, now=now
        )
    except EntriesRejected as exc:
        await _dead_letter(request, origin, body, exc.reason, exc.detail)
        return _status(400, "Bad Request", str(exc))
    valid = [(item, item.treatment) for item in parsed if item.treatment is not None]
    done = await d.treatments.add([t for _, t in valid])  # durable, ledger events too
    refused = [
        (item.index, item.raw, item.error.reason, item.error.detail)
        for item in parsed
        if item.error is not None
    ]
    refused += [(valid[i][0].index, valid[i][0].raw, *why) for i, why in done.refused.items()]
    for index, raw, reason, detail in sorted(refused, key=lambda r: r[0]):
        await _dead_letter(request, origin, raw, reason, f"{detail} (treatment {index})")
    kept = [t for i, (_, t) in enumerate(valid) if i not in done.refused]
    log.info(
        "Nightscout treatments: %d new, %d replaced, %d again, %d refused",
        len(done.added),
        len(done.replaced),
        done.duplicates,
        len(refused),
    )
    if refused and not kept:
        reasons = [f"treatment {i}: {reason}: {detail}" for i, _, reason, detail in refused]
        return _status(400, "Bad Request", "; ".join(sorted(reasons)[:5]))
    shown = [to_nightscout(t) for t in kept]
    return _json(shown[0] if single and len(shown) == 1 else shown)


async def get_treatments(request: web.Request) -> web.StreamResponse:
    """lib/api/treatments/index.js, GET /treatments: newest first, `count` (100 by default,
    1000 with a `find`), `find[created_at][$gte]` and the like (lib/server/query.js)."""
    uploader = await _uploader(request)
    if uploader is None:
        return _unauthorized()
    d = deps(request)
    if d.treatments is None:
        return _json([])
    try:
        query = parse_treatments_query(list(request.query.items()), now=d.clock.now())
    except EntriesRejected as exc:
        return _status(400, "Bad Request", str(exc))
    if query.since > query.until:
        return _json([])
    filtered = query.event_type is not None or query.insulin_min > 0 or query.carbs_min > 0
    found = await d.treatments.query(
        uploader.patient_id,
        since=query.since,
        until=query.until,
        limit=None if filtered else query.count,
    )

    def render() -> str:  # up to MAX_COUNT treatments: off the event loop
        return json.dumps([to_nightscout(t) for t in select_treatments(found, query)])

    text = await asyncio.to_thread(render)
    return web.Response(
        text=text, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


# -- status ------------------------------------------------------------------------------


async def status(request: web.Request) -> web.StreamResponse:
    """lib/api/status.js: what uploaders check before they upload (xDrip+ reads `version`)."""
    uploader = await _uploader(request)
    if uploader is None:
        return _unauthorized()
    now = deps(request).clock.now()
    return _json(
        {
            "status": "ok",
            "name": "Glucohub",
            "version": API_VERSION,
            "serverTime": iso_time(now),
            "serverTimeEpoch": epoch_ms(now),
            "apiEnabled": True,
            "careportalEnabled": False,
            "boluscalcEnabled": False,
            "settings": {"units": "mg/dl", "enable": [], "authDefaultRoles": "denied"},
            "extendedSettings": {},
            "authorized": None,
            "runtimeState": "loaded",
        }
    )


async def verifyauth(request: web.Request) -> web.StreamResponse:
    """lib/api/verifyauth.js: always 200; the body says what the credential may do."""
    uploader = await _uploader(request)
    found = uploader is not None
    can_write = found and uploader is not None and uploader.can_write
    return _status(
        200,
        {
            "canRead": found,
            "canWrite": can_write,
            "isAdmin": False,
            "message": "OK" if found else "UNAUTHORIZED",
            "rolefound": "FOUND" if found else "NOTFOUND",
            "permissions": "ROLE" if found else "DEFAULT",
        },
    )
