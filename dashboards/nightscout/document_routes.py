"""The HTTP edge of Nightscout's devicestatus and profile (API v1), of DELETE on entries and
treatments, and of API v2's authorization request. Credentials, errors and upload handling
are those of `dashboards.nightscout.routes`.

DELETE never removes what is stored or sealed (the ledger is append-only): it hides the
records it names from reads and seals one ledger event that says which and when. Treatments
are hidden from every read (dashboards and reports too); entries only from the Nightscout
API, and only those the patient's Nightscout uploader sent — readings from the hub's own
devices stay, and every reading stays in the clinical record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime, timedelta

from aiohttp import web

from dashboards.access import Access, Rule
from dashboards.context import add_route, deps
from dashboards.nightscout import auth
from dashboards.nightscout.documents import (
    ParsedDocument,
    parse_documents,
    parse_query,
    to_nightscout,
)
from dashboards.nightscout.entries import (
    MAX_COUNT,
    MAX_WINDOW,
    EntriesRejected,
    EntryType,
    entry_id,
    select,
)
from dashboards.nightscout.entries import parse_query as parse_entries_query
from dashboards.nightscout.routes import (
    UnreadableBody,
    _dead_letter,
    _json,
    _status,
    _unauthorized,
    read_upload,
)
from dashboards.nightscout.treatments import parse_query as parse_treatments_query
from dashboards.nightscout.treatments import select as select_treatments
from dashboards.nightscout.treatments import treatment_id
from gateway.model import ReadingKind, Source
from gateway.protocols import Origin
from gateway.storage.accounts import NightscoutSecretRecord
from gateway.storage.contract import DocumentCollection

_RULE = Rule(access=Access.UPLOADER)
_OBJECT_ID = re.compile(r"[0-9a-f]{24}")
_ALL_TIME = datetime(2000, 1, 1, tzinfo=UTC)


def add_routes(app: web.Application) -> None:
    for path in ("/api/v1/devicestatus", "/api/v1/devicestatus/", "/api/v1/devicestatus.json"):
        add_route(app, "GET", path, get_devicestatus, _RULE)
        add_route(app, "POST", path, post_devicestatus, _RULE)
    for path in ("/api/v1/profile", "/api/v1/profile/", "/api/v1/profile.json"):
        add_route(app, "GET", path, get_profiles, _RULE)
        add_route(app, "POST", path, post_profile, _RULE)
    add_route(app, "GET", "/api/v1/profile/current", get_current_profile, _RULE)
    for path in ("/api/v1/entries", "/api/v1/entries/"):
        add_route(app, "DELETE", path, delete_entries, _RULE)
    add_route(app, "DELETE", "/api/v1/entries/{spec}", delete_entries, _RULE)
    for path in ("/api/v1/treatments", "/api/v1/treatments/"):
        add_route(app, "DELETE", path, delete_treatments, _RULE)
    add_route(app, "DELETE", "/api/v1/treatments/{id}", delete_treatments, _RULE)
    add_route(
        app,
        "GET",
        "/api/v2/authorization/request/{token}",
        auth.authorization_request,
        Rule(access=Access.UPLOADER),
    )


# -- uploads -----------------------------------------------------------------------------


async def post_devicestatus(request: web.Request) -> web.StreamResponse:
    # lib/api/devicestatus/index.js, doPost: the created documents as a JSON array
    return await _upload(request, DocumentCollection.DEVICESTATUS)


async def post_profile(request: web.Request) -> web.StreamResponse:
    # lib/api/profile/index.js, POST /profile/: the created profiles as a JSON array
    return await _upload(request, DocumentCollection.PROFILE)


async def _upload(request: web.Request, collection: DocumentCollection) -> web.StreamResponse:
    uploader = await auth.uploader(request)
    if uploader is None or not uploader.can_write:
        return _unauthorized()  # api:devicestatus:create, api:profile:create
    d = deps(request)
    if d.documents is None or d.sink is None:
        return _status(503, "Service Unavailable", f"this hub takes no {collection}")
    origin = Origin(source=Source.HTTP, topic=request.path, raw=b"", device_id=uploader.device_id)
    try:
        body = await read_upload(request, origin)
    except UnreadableBody as unreadable:
        return unreadable.response()
    try:
        parsed = await asyncio.to_thread(
            parse_documents,
            body,
            collection=collection,
            patient_id=uploader.patient_id,
            now=d.clock.now(),
        )
    except EntriesRejected as exc:
        await _dead_letter(request, origin, body, exc.reason, exc.detail)
        return _status(400, "Bad Request", str(exc))
    kept = [p.document for p in parsed if p.document is not None]
    await d.documents.add(kept)  # durable (a profile's ledger event too) before answering
    refused = [p for p in parsed if p.error is not None]
    for item in refused:
        await _refuse(request, origin, item, collection)
    if refused and not kept:
        return _status(400, "Bad Request", "; ".join(str(p.error) for p in refused[:5]))
    return _json([to_nightscout(doc) for doc in kept])


async def _refuse(
    request: web.Request, origin: Origin, item: ParsedDocument, collection: DocumentCollection
) -> None:
    assert item.error is not None
    detail = f"{item.error.detail} ({collection} {item.index})"
    await _dead_letter(request, origin, item.raw, item.error.reason, detail)


# -- reads -------------------------------------------------------------------------------


async def get_devicestatus(request: web.Request) -> web.StreamResponse:
    """lib/api/devicestatus/index.js, GET /devicestatus/: newest `created_at` first, 10
    unless `count` says otherwise, `find[created_at][$gte]` and the like."""
    return await _list(request, DocumentCollection.DEVICESTATUS)


async def get_profiles(request: web.Request) -> web.StreamResponse:
    """lib/api/profile/index.js, GET /profile/: newest `startDate` first, `count` of them."""
    return await _list(request, DocumentCollection.PROFILE)


async def get_current_profile(request: web.Request) -> web.StreamResponse:
    """GET /profile/current: the newest profile, or null when there is none."""
    uploader = await auth.uploader(request)
    if uploader is None:
        return _unauthorized()
    d = deps(request)
    if d.documents is None:
        return _json(None)
    now = d.clock.now()
    found = await d.documents.query(
        uploader.patient_id,
        DocumentCollection.PROFILE,
        since=_ALL_TIME,
        until=now + timedelta(days=1),
        limit=1,
    )
    return _json(to_nightscout(found[0]) if found else None)


async def _list(request: web.Request, collection: DocumentCollection) -> web.StreamResponse:
    uploader = await auth.uploader(request)
    if uploader is None:
        return _unauthorized()
    d = deps(request)
    if d.documents is None:
        return _json([])
    try:
        query = parse_query(
            list(request.query.items()),
            now=d.clock.now(),
            dated_by_default=collection is DocumentCollection.DEVICESTATUS,
        )
    except EntriesRejected as exc:
        return _status(400, "Bad Request", str(exc))
    if query.since > query.until:
        return _json([])
    found = await d.documents.query(
        uploader.patient_id, collection, since=query.since, until=query.until, limit=query.count
    )

    def render() -> str:  # up to MAX_COUNT documents of up to 64 KiB: off the event loop
        return json.dumps([to_nightscout(doc) for doc in found])

    text = await asyncio.to_thread(render)
    return web.Response(
        text=text, content_type="application/json", headers={"Cache-Control": "no-store"}
    )


# -- deletions ---------------------------------------------------------------------------


def _deleted(count: int) -> web.Response:
    # lib/api/*/index.js delete_records: res.json of MongoDB's deleteMany result (driver 5)
    return _json({"acknowledged": True, "deletedCount": count})


def _filtered(request: web.Request) -> bool:
    return any(key.startswith("find[") for key in request.query)


async def _deleter(request: web.Request) -> NightscoutSecretRecord | web.Response:
    uploader = await auth.uploader(request)
    if uploader is None or not uploader.can_write:
        return _unauthorized()  # api:entries:delete, api:treatments:delete
    if deps(request).documents is None:
        return _status(503, "Service Unavailable", "this hub deletes nothing")
    return uploader


async def delete_entries(request: web.Request) -> web.StreamResponse:
    """DELETE /entries/<id>, /entries/<type>?find[...], /entries?find[...]
    (lib/api/entries/index.js): the matching entries this patient's Nightscout uploader sent
    are hidden from Nightscout reads. Unlike Nightscout, a DELETE without a `find` filter or
    an id is refused rather than taken as "the last four days"; an id is looked for in the
    last 90 days."""
    uploader = await _deleter(request)
    if isinstance(uploader, web.Response):
        return uploader
    d = deps(request)
    assert d.documents is not None
    spec = request.match_info.get("spec", "").removesuffix(".json")
    by_id = spec if _OBJECT_ID.fullmatch(spec) else None
    if by_id is None and not _filtered(request):
        return _status(400, "Bad Request", "a DELETE needs find[...] filters or an _id")
    types = frozenset({EntryType.SGV, EntryType.MBG})
    if spec in (EntryType.SGV.value, EntryType.MBG.value):
        types = frozenset({EntryType(spec)})
    now = d.clock.now()
    params = [] if by_id else list(request.query.items())
    try:
        query = parse_entries_query(params, now=now, types=types, count=MAX_COUNT)
    except EntriesRejected as exc:
        return _status(400, "Bad Request", str(exc))
    since = now - MAX_WINDOW if by_id else query.since
    history = await d.read_model.readings(
        uploader.patient_id,
        since=since,
        until=query.until,
        kinds=(ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE),
    )
    uploaded = [r for r in history if r.device_id == uploader.device_id]
    if by_id:
        keys = [entry_id(r) for r in uploaded if entry_id(r) == by_id]
    else:
        keys = [entry_id(r) for r in select(uploaded, query)]
    count = await d.documents.delete(uploader.patient_id, DocumentCollection.ENTRIES, keys)
    return _deleted(count)


async def delete_treatments(request: web.Request) -> web.StreamResponse:
    """DELETE /treatments/<id> (`*`: every one the `find` matches) and /treatments?find[...]
    (lib/api/treatments/index.js): the matching treatments are hidden from every read."""
    uploader = await _deleter(request)
    if isinstance(uploader, web.Response):
        return uploader
    d = deps(request)
    assert d.documents is not None
    if d.treatments is None:
        return _deleted(0)
    given = request.match_info.get("id")
    by_id = given if given not in (None, "*") else None
    if by_id is None and not _filtered(request):
        return _status(400, "Bad Request", "a DELETE needs find[...] filters or an _id")
    now = d.clock.now()
    try:
        query = parse_treatments_query(list(request.query.items()), now=now)
    except EntriesRejected as exc:
        return _status(400, "Bad Request", str(exc))
    if by_id is not None:  # lib/server/query.js: an _id query has no date window
        found = await d.treatments.query(
            uploader.patient_id, since=_ALL_TIME, until=now + timedelta(days=1)
        )
        chosen = [t for t in found if treatment_id(t) == by_id]
    else:
        found = await d.treatments.query(uploader.patient_id, since=query.since, until=query.until)
        # deleteMany: every match, whatever `count` says
        chosen = select_treatments(found, dataclasses.replace(query, count=len(found)))
    keys = [t.dedupe_key for t in chosen]
    count = await d.documents.delete(uploader.patient_id, DocumentCollection.TREATMENTS, keys)
    return _deleted(count)
