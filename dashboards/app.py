"""The dashboard web app: `create_app` wires the hub's protocols to routes; `serve` runs it.

One middleware (`_guard`) enforces every route's `Rule`: who may call it, the CSRF token on
state-changing requests with a session cookie, the patient scope (404 when the viewer may
not see that patient, exactly as for one that does not exist) and the audit record.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from urllib.parse import urlencode

from aiohttp import WSCloseCode, web
from aiohttp.typedefs import Handler

from dashboards import api, pages, publiclog, setup, triageranges, views
from dashboards.access import Access, Rule, role_allows
from dashboards.accounts import Accounts, Session, User
from dashboards.context import (
    CSRF_FIELD,
    CSRF_HEADER,
    DEPS,
    SESSION,
    SESSION_COOKIE,
    USER,
    VISIBLE,
    Deps,
    add_route,
)
from dashboards.live import DEFAULT_VIEWER_QUEUE, Viewer, message_patient
from dashboards.nightscout import api3_routes as nightscout_v3
from dashboards.nightscout import document_routes as nightscout_documents
from dashboards.nightscout import routes as nightscout
from gateway.clock import Clock, SystemClock
from gateway.protocols import (
    AlertControl,
    DeviceControl,
    HubLogs,
    HubStatus,
    LedgerView,
    LiveFeed,
    ReadingSink,
    ReadModel,
    TreatmentLog,
)
from gateway.settings import DashboardSettings
from gateway.storage.document_log import DocumentLog
from gateway.storage.opening import StorageLocation
from gateway.units import glucose_unit

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CONSENT_REFRESH_S = 30.0  # a live viewer re-reads its patient set at least this often
# Before a live message is sent, the viewer's patient set is re-read when a grant or revocation
# happened in this process (at once) or when it is older than this (a CLI revocation).
CONSENT_RECHECK_S = 1.0

_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)
_SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def create_app(
    *,
    settings: DashboardSettings,
    read_model: ReadModel,
    live: LiveFeed,
    alerts: AlertControl,
    ledger: LedgerView,
    status: HubStatus,
    accounts: Accounts,
    clock: Clock | None = None,
    viewer_queue_size: int = DEFAULT_VIEWER_QUEUE,
    first_run: setup.FirstRun | None = None,
    sink: ReadingSink | None = None,
    treatments: TreatmentLog | None = None,
    devices: DeviceControl | None = None,
    documents: DocumentLog | None = None,
    hub_logs: HubLogs | None = None,
    storage: StorageLocation | None = None,
) -> web.Application:
    """The dashboard application. The caller owns `accounts` (and closes it after the app).
    With `first_run` (a hub with no patient yet) it also serves the /setup pages. `sink`
    takes Nightscout uploads (without one they are refused with 503); `treatments` stores and
    shows patients' treatments; `devices` lets patients forget their devices; `documents`
    keeps Nightscout devicestatus and profiles; `hub_logs` (a clinic) serves the log of each
    hub it witnesses, its batches keyed by hub and seq; `storage` is where the report worker
    reads readings itself (without it they are read here and sent to it)."""
    app = web.Application(
        middlewares=[_public_address, _errors, _decode_body, _guard], client_max_size=64 * 1024
    )
    accounts.default_unit = glucose_unit(settings.default_unit)
    app[DEPS] = Deps(
        settings=settings,
        read_model=read_model,
        live=live,
        alerts=alerts,
        ledger=ledger,
        status=status,
        accounts=accounts,
        clock=clock or SystemClock(),
        viewer_queue_size=viewer_queue_size,
        sink=sink,
        treatments=treatments,
        devices=devices,
        documents=documents,
        hub_logs=hub_logs,
        storage=storage,
    )
    views.add_routes(app)
    publiclog.add_routes(app)
    api.add_routes(app)
    if first_run is not None:
        setup.add_routes(app, first_run)
    nightscout.add_routes(app)
    nightscout_v3.add_routes(app)
    nightscout_documents.add_routes(app)
    add_route(app, "GET", "/ws", _websocket, Rule(access=Access.USER))
    static = app.router.add_static("/static/", STATIC_DIR, append_version=False)
    for route in static:
        app[DEPS].rules[route] = Rule(access=Access.PUBLIC)
    app.on_response_prepare.append(_security_headers)
    app.cleanup_ctx.append(_live_pump)
    app.cleanup_ctx.append(triageranges.keep_fresh)
    app.on_shutdown.append(_close_sockets)
    return app


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, settings: DashboardSettings, *, shutdown_timeout: float = 5.0
) -> AsyncIterator[str]:
    """Listen on settings.host:port (TLS when tls_cert/tls_key are set) until the block exits.

    Yields the base URL actually bound (useful with port 0). On exit, live sockets are closed
    with 1001 Going Away and the app's cleanup runs.
    """
    ssl_context: ssl.SSLContext | None = None
    if settings.tls_cert:
        ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_context.load_cert_chain(settings.tls_cert, settings.tls_key)
    runner = web.AppRunner(app, shutdown_timeout=shutdown_timeout, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context)
        await site.start()
        host, port = runner.addresses[0][:2]
        scheme = "https" if ssl_context else "http"
        shown = f"[{host}]" if ":" in str(host) else str(host)
        yield f"{scheme}://{shown}:{port}"
    finally:
        await runner.cleanup()


def live_stats(app: web.Application) -> dict[str, int]:
    """Live-channel figures for the hub's /metrics: open viewers and messages dropped from
    slow viewers' queues (the hub's own LiveFeed sees one subscriber: this app)."""
    broadcaster = app[DEPS].broadcaster
    return {"viewers": len(broadcaster.viewers), "dropped_total": broadcaster.dropped_total}


# -- middleware ---------------------------------------------------------------------------


def _wants_json(request: web.Request) -> bool:
    return request.path.startswith(
        ("/api/", "/fhir/")
    ) or "application/json" in request.headers.get("Accept", "")


@web.middleware
async def _public_address(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Behind a reverse proxy (`dashboard.public_url`), every request is seen at the address
    browsers use, not the proxy's upstream one: the WebSocket's Origin check, the way back
    to a referring page and the FHIR `fullUrl`s then match what the browser has."""
    origin = request.app[DEPS].settings.public_origin()
    if not origin:
        return await handler(request)
    scheme, _, host = origin.partition("://")
    return await handler(request.clone(scheme=scheme, host=host))


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Uniform error pages that say nothing about the data (no ids, no stack traces)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.text not in (None, "", f"{exc.status}: {exc.reason}"):
            raise
        return _error_response(request, exc.status, exc.reason, exc.headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("dashboard handler failed: %s %s", request.method, request.path)
        return _error_response(request, 500, "Internal Server Error", {})


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


@web.middleware
async def _decode_body(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Decode a form body once, before anyone reads it: a body that does not decode (not
    UTF-8, an unknown charset, broken multipart) is the client's error, a 400, whichever
    route it was sent to. Handlers then get the parsed form from aiohttp's cache."""
    if request.method not in _SAFE_METHODS and request.content_type in _FORM_TYPES:
        try:
            await request.post()
        except web.HTTPException:
            raise
        except (ValueError, LookupError, AssertionError) as exc:
            # UnicodeDecodeError is a ValueError; LookupError: unknown charset; aiohttp's
            # multipart reader raises ValueError or AssertionError on broken parts.
            log.info("refused %s %s: malformed form body: %s", request.method, request.path, exc)
            raise web.HTTPBadRequest(text="malformed form body") from None
    return await handler(request)


def _error_response(
    request: web.Request, status: int, reason: str, headers: Mapping[str, str]
) -> web.Response:
    keep = {k: headers[k] for k in ("Retry-After", "WWW-Authenticate", "Allow") if k in headers}
    if _wants_json(request):
        return web.json_response({"error": reason, "status": status}, status=status, headers=keep)
    user = request.get(USER)
    session = request.get(SESSION)
    body = pages.error_page(status, reason, user, session.csrf_token if session else "")
    return web.Response(
        text=body, status=status, content_type="text/html", charset="utf-8", headers=keep
    )


@web.middleware
async def _guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    d = request.app[DEPS]
    match = request.match_info
    if match.http_exception is not None:
        raise match.http_exception
    rule = d.rules.get(match.route)
    if rule is None:  # a route registered without a rule is a bug: refuse rather than guess
        log.error("route without an access rule: %s %s", request.method, request.path)
        raise web.HTTPNotFound()

    user, session = await _authenticate(request, d, rule)
    if not role_allows(rule, user):
        if user is None:
            if request.method == "GET" and not _wants_json(request) and request.path != "/ws":
                raise web.HTTPSeeOther(
                    "/login?" + urlencode({"next": request.path_qs})
                    if request.path != "/"
                    else "/login"
                )
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="glucohub"'})
        raise web.HTTPForbidden()
    if user is not None:
        request[USER] = user
        request[VISIBLE] = await d.accounts.visible_patients(user)
    if session is not None:
        request[SESSION] = session
        if request.method not in _SAFE_METHODS:
            await _check_csrf(request, session)
    if rule.patient_from is not None and user is not None:
        where, _, name = rule.patient_from.partition(":")
        source = request.match_info if where == "match" else request.query
        patient_id = source.get(name, "")
        if patient_id not in request[VISIBLE]:
            raise web.HTTPNotFound()
        if rule.audit is not None and request.method in _SAFE_METHODS:
            await d.accounts.record_view(user, patient_id, rule.audit)
    return await handler(request)


async def _authenticate(
    request: web.Request, d: Deps, rule: Rule
) -> tuple[User | None, Session | None]:
    if rule.access in (Access.PUBLIC, Access.UPLOADER):
        # public routes act on no one's behalf (and need no CSRF token); uploader routes
        # check their own credential, which is not a user's
        return None, None
    authorization = request.headers.get("Authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or not rule.token_ok:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer realm="glucohub"'})
        user = await d.accounts.token_user(token.strip())
        if user is None:
            raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return user, None
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return None, None
    found = await d.accounts.session(session_id)
    if found is None:
        return None, None
    return found[1], found[0]


async def _check_csrf(request: web.Request, session: Session) -> None:
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        sent = str((await request.post()).get(CSRF_FIELD, ""))
    if not sent or not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
        raise web.HTTPForbidden()


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if request.get(USER) is not None:
        response.headers.setdefault("Cache-Control", "no-store")
    if request.app[DEPS].secure_cookies:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")


# -- live channel ---------------------------------------------------------------------------


async def _live_pump(app: web.Application) -> AsyncIterator[None]:
    """One subscription to the hub's LiveFeed for the app's lifetime, fanned out to viewers."""
    d = app[DEPS]

    async def pump() -> None:
        while True:
            try:
                async for event in d.live.subscribe():
                    d.broadcaster.publish(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live feed failed; resubscribing in 1 s")
            await asyncio.sleep(1.0)

    task = asyncio.create_task(pump(), name="dashboard-live-pump")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_sockets(app: web.Application) -> None:
    d = app[DEPS]
    d.broadcaster.close_all()
    for ws in list(d.sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown")


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser; the session cookie still had to be presented
    return origin == f"{request.scheme}://{request.host}"


async def _websocket(request: web.Request) -> web.StreamResponse:
    """Live events of the patients this user may see, as JSON text messages."""
    if not _same_origin(request):  # cross-site WebSocket hijacking
        # Also what a reverse proxy without dashboard.public_url gets: pages load, live
        # updates never arrive. Say so where the admin looks.
        log.warning(
            "live updates refused to a page from %r: this dashboard answers as %s://%s"
            " (behind a reverse proxy, dashboard.public_url is the address browsers use)",
            request.headers.get("Origin", "")[:200],
            request.scheme,
            request.host[:200],
        )
        raise web.HTTPForbidden()
    d = request.app[DEPS]
    user = request[USER]
    session = request.get(SESSION)
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=4096)
    await ws.prepare(request)
    viewer = Viewer(
        user=user,
        session_id=session.session_id if session else None,
        visible=request[VISIBLE],
        consent_version=d.accounts.consent_version,
        checked_at=d.clock.monotonic(),
        maxlen=d.viewer_queue_size,
    )
    d.sockets.add(ws)
    d.broadcaster.add(viewer)
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_send(d, ws, viewer))
            group.create_task(_refresh(d, viewer, session))
            async for _ in ws:  # the browser sends nothing we act on; this notices the close
                pass
            viewer.close()
    finally:
        d.broadcaster.remove(viewer)
        d.sockets.discard(ws)
    return ws


async def _reload_visible(d: Deps, viewer: Viewer) -> None:
    version = d.accounts.consent_version  # read first: a change during the query re-reads
    viewer.checked_at = d.clock.monotonic()
    viewer.visible = await d.accounts.visible_patients(viewer.user)
    viewer.consent_version = version


async def _send(d: Deps, ws: web.WebSocketResponse, viewer: Viewer) -> None:
    try:
        while (message := await viewer.next()) is not None:
            if ws.closed:
                break
            # Messages were filtered when queued; consent may have been withdrawn since.
            if (
                viewer.consent_version != d.accounts.consent_version
                or d.clock.monotonic() - viewer.checked_at > CONSENT_RECHECK_S
            ):
                await _reload_visible(d, viewer)
            patient = message_patient(message)
            if patient is not None and patient not in viewer.visible:
                continue
            await ws.send_json(message)
    except ConnectionError:
        pass  # the browser went away mid-send; the receive loop notices the close
    viewer.close()
    await ws.close()


async def _refresh(d: Deps, viewer: Viewer, session: Session | None) -> None:
    """Keep the viewer's patient set current (new grants) and end it when the session ends."""
    waited = 0.0
    while not viewer.closed:
        await asyncio.sleep(0.5)
        waited += 0.5
        if d.accounts.consent_version == viewer.consent_version and waited < CONSENT_REFRESH_S:
            continue
        waited = 0.0
        if session is not None and await d.accounts.session(session.session_id) is None:
            viewer.close()
            return
        user = await d.accounts.get_user(viewer.user.username)
        if user is None or user.disabled:
            viewer.close()
            return
        await _reload_visible(d, viewer)
