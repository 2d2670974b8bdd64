"""The HTTP edge of Nightscout API v3 (as AndroidAPS' NSClientV3 uses it): the generic
operations over every collection, `/api/v3/status`, `/api/v3/lastModified` and
`/api/v3/version`.

Following Nightscout 15 (nightscout/cgm-remote-monitor, lib/api3/): `lib/api3/index.js`
(routes; 404 "Bad operation or collection"), `generic/collection.js` (mapRoutes: SEARCH and
CREATE on `/{col}`, HISTORY on `/{col}/history[/{lastModified}]`, READ/UPDATE/PATCH/DELETE on
`/{col}/{identifier}`), the operations under `generic/` for their answers, and
`specific/status.js`, `lastModified.js`, `version.js`. The requests are AndroidAPS's
(core/nssdk/.../networking/NightscoutRemoteService.kt).

A write is answered once durable: stored (and sealed) through the pipeline the v1 routes use,
found again, or refused; a refused body is a dead letter with its raw bytes, never a 500.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from aiohttp import web

from dashboards.access import Access, Rule
from dashboards.context import add_route, deps
from dashboards.nightscout.api3 import (
    API3_VERSION,
    BAD_BODY,
    BAD_OPERATION,
    Api3Error,
    Doc,
    envelope,
    etag,
    from_ms,
    history_after,
    http_date,
    parse_limit,
    parse_search,
    status_body,
    time_window,
)
from dashboards.nightscout.api3_auth import authenticate, demand, permission_letters
from dashboards.nightscout.api3_collections import Collection, Stored, Unstored, Write
from dashboards.nightscout.api3_documents import Documents
from dashboards.nightscout.api3_entries import Entries
from dashboards.nightscout.api3_treatments import Treatments
from dashboards.nightscout.entries import MAX_WINDOW, epoch_ms
from dashboards.nightscout.routes import (
    API_VERSION,
    UnreadableBody,
    _dead_letter,
    read_upload,
)
from gateway.protocols import RejectReason
from gateway.storage.accounts import NightscoutSecretRecord
from gateway.storage.contract import DocumentCollection

log = logging.getLogger(__name__)

_RULE = Rule(access=Access.UPLOADER)
_AHEAD = timedelta(days=1)  # treatments may be up to a day ahead (extended carbohydrates)
_PREFIX = "/api/v3"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# lib/api3/index.js enabledCollections: every name NSClientV3 reads or writes
COLLECTIONS: dict[str, Callable[[web.Request], Collection]] = {
    "entries": Entries,
    "treatments": Treatments,
    "devicestatus": lambda r: Documents(r, DocumentCollection.DEVICESTATUS),
    "profile": lambda r: Documents(r, DocumentCollection.PROFILE),
    "food": lambda _: Unstored("food"),
    "settings": lambda _: Unstored("settings"),
}


def add_routes(app: web.Application) -> None:
    # The fixed routes first: aiohttp matches in the order routes were added
    # version.js asks for no token: it names no patient (the rule is the Nightscout routes'
    # own, which check credentials themselves)
    add_route(app, "GET", f"{_PREFIX}/version", version, _RULE)
    add_route(app, "GET", f"{_PREFIX}/status", _guarded(status), _RULE)
    add_route(app, "GET", f"{_PREFIX}/lastModified", _guarded(last_modified), _RULE)
    col = f"{_PREFIX}/{{collection}}"
    add_route(app, "GET", col, _guarded(search_operation), _RULE)
    add_route(app, "POST", col, _guarded(create_operation), _RULE)
    add_route(app, "GET", f"{col}/history", _guarded(history_operation), _RULE)
    add_route(app, "GET", f"{col}/history/{{lastModified}}", _guarded(history_operation), _RULE)
    add_route(app, "GET", f"{col}/{{identifier}}", _guarded(read_operation), _RULE)
    for method in ("PUT", "PATCH", "DELETE"):
        add_route(app, method, f"{col}/{{identifier}}", _guarded(write_operation), _RULE)


def _json(body: Doc, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(
        body, status=status, headers={"Cache-Control": "no-store", **(headers or {})}
    )


def _error(exc: Api3Error) -> web.Response:
    return _json(status_body(exc.status, exc.message), exc.status)


def _guarded(handler: Handler) -> Handler:
    """Nightscout's sendJSONStatus for every refusal (operationTools.js)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Api3Error as exc:
            return _error(exc)

    return guarded


def _collection(request: web.Request) -> Collection:
    make = COLLECTIONS.get(request.match_info["collection"])
    if make is None:
        raise Api3Error(404, BAD_OPERATION)
    return make(request)


# -- reads -------------------------------------------------------------------------------


async def search_operation(request: web.Request) -> web.StreamResponse:
    """generic/search/operation.js: filtered, sorted, `limit` (1000), `skip`. The store is
    asked for the time range the `date`/`created_at` filters allow, at most MAX_WINDOW (90
    days) up to its end."""
    caller = await authenticate(request)
    col = _collection(request)
    demand(caller, col.name, "read")
    query = parse_search(list(request.query.items()))
    now = deps(request).clock.now()
    windows = [time_window(query.filters, field) for field in ("date", "created_at")]
    low = max((lo for lo, _ in windows if lo is not None), default=None)
    high = min((hi for _, hi in windows if hi is not None), default=None)
    until = from_ms(high) if high is not None else now + _AHEAD
    since = until - MAX_WINDOW if low is None else max(from_ms(low), until - MAX_WINDOW)
    if since > until:
        return _json(envelope([]))
    found = await col.search(caller.patient_id, query, since=since, until=until)
    return _json(envelope(found))


async def history_operation(request: web.Request) -> web.StreamResponse:
    """generic/history/operation.js: documents changed after a time, oldest change first,
    with ETag `W/"<newest srvModified>"` (which NSClientV3 keeps as its next start)."""
    caller = await authenticate(request)
    col = _collection(request)
    demand(caller, col.name, "read")
    after = history_after(
        request.match_info.get("lastModified"), request.headers.get("Last-Modified")
    )
    limit = parse_limit(request.query)
    docs = await col.history(caller.patient_id, after_ms=after, limit=limit)
    if not docs:
        return _json(envelope([]))
    newest = max(int(str(d["srvModified"])) for d in docs)
    headers = {"ETag": etag(newest), "Last-Modified": http_date(newest)}
    return _json(envelope(docs), headers=headers)


async def read_operation(request: web.Request) -> web.StreamResponse:
    """generic/read/operation.js: the document, or `{"status": 404}`."""
    caller = await authenticate(request)
    col = _collection(request)
    demand(caller, col.name, "read")
    doc = await col.read(caller.patient_id, request.match_info["identifier"])
    if doc is None:
        return _json(status_body(404), 404)
    modified = int(str(doc["srvModified"]))
    return _json(envelope(doc), headers={"Last-Modified": http_date(modified)})


async def last_modified(request: web.Request) -> web.StreamResponse:
    """specific/lastModified.js: the newest srvModified of each readable collection that
    has documents."""
    caller = await authenticate(request)
    now = deps(request).clock.now()
    collections: dict[str, int] = {}
    for name, make in COLLECTIONS.items():
        found = await make(request).last_modified(caller.patient_id)
        if found is not None:
            collections[name] = found
    return _json(envelope({"srvDate": epoch_ms(now), "collections": collections}))


def _version_info(request: web.Request) -> Doc:
    """storageTools.js getVersionInfo."""
    return {
        "version": API_VERSION,
        "apiVersion": API3_VERSION,
        "srvDate": epoch_ms(deps(request).clock.now()),
        "storage": {"storage": "glucohub", "version": "1"},
    }


async def version(request: web.Request) -> web.StreamResponse:
    return _json(envelope(_version_info(request)))


async def status(request: web.Request) -> web.StreamResponse:
    """specific/status.js: the version and what the caller may do with each collection.
    NSClientV3 uploads only when every collection is "crud" (ApiPermissions.isFull)."""
    caller = await authenticate(request)
    permissions = {name: permission_letters(caller, name) for name in COLLECTIONS}
    return _json(envelope({**_version_info(request), "apiPermissions": permissions}))


# -- writes ------------------------------------------------------------------------------


async def _body(request: web.Request, write: Write) -> tuple[Doc, bytes]:
    """The JSON object a write carries (gzip undone); refused bodies become dead letters."""
    try:
        raw = await read_upload(request, write.origin())
    except UnreadableBody as unreadable:
        message = "Payload Too Large" if unreadable.status == 413 else BAD_BODY
        raise Api3Error(unreadable.status, message) from None
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict) or not doc:
        await _dead_letter(request, write.origin(raw), raw, RejectReason.MALFORMED, BAD_BODY)
        raise Api3Error(400, BAD_BODY)
    return doc, raw


async def _writing(
    request: web.Request, act: Callable[[Write, Doc | None], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    caller: NightscoutSecretRecord = await authenticate(request)
    write = Write(request=request, caller=caller)
    if deps(request).sink is None:
        raise Api3Error(503, "this hub takes no uploads")
    doc, raw = (None, b"")
    if request.method in ("POST", "PUT", "PATCH"):
        doc, raw = await _body(request, write)
    try:
        return await act(write, doc)
    except Api3Error as exc:
        if exc.status == 400 and doc is not None and not exc.dead_lettered:
            await _dead_letter(request, write.origin(raw), raw, exc.reason, str(exc))
        raise


def _stored(request: web.Request, stored: Stored, *, patch: bool = False) -> web.Response:
    """create/insert.js (201 `{status, identifier, lastModified}`), update/replace.js (200
    `{status, lastModified}` and, found again, `identifier`, `isDeduplication`,
    `deduplicatedIdentifier`) and patch/operation.js (200 `{status}`)."""
    headers = {"Last-Modified": http_date(stored.last_modified_ms)}
    if patch:
        return _json(status_body(200), headers=headers)
    body: Doc = {"status": stored.status, "lastModified": stored.last_modified_ms}
    if stored.status == 201 or stored.deduplicated:
        headers["Location"] = f"{_PREFIX}/{request.match_info['collection']}/{stored.identifier}"
        body["identifier"] = stored.identifier
    if stored.deduplicated:
        body["isDeduplication"] = True
        if stored.deduplicated_identifier is not None:
            body["deduplicatedIdentifier"] = stored.deduplicated_identifier
    return _json(body, stored.status, headers)


async def create_operation(request: web.Request) -> web.StreamResponse:
    col = _collection(request)

    async def act(write: Write, doc: Doc | None) -> web.StreamResponse:
        assert doc is not None
        return _stored(request, await col.create(write, doc))

    return await _writing(request, act)


async def write_operation(request: web.Request) -> web.StreamResponse:
    """PUT (update/operation.js), PATCH (patch/operation.js), DELETE (delete/operation.js)."""
    col = _collection(request)
    identifier = request.match_info["identifier"]

    async def act(write: Write, doc: Doc | None) -> web.StreamResponse:
        if request.method == "DELETE":
            await col.delete(write, identifier)
            return _json(status_body(200))
        assert doc is not None
        patch = request.method == "PATCH"
        return _stored(request, await col.update(write, identifier, doc, patch=patch), patch=patch)

    return await _writing(request, act)
