"""The public, read-only transparency log (C2SP tlog-tiles layout under /log/) and witness
cosignature submission. Nothing here holds health data: batch bodies are behind a login."""

from __future__ import annotations

import base64
import re

from aiohttp import web

from dashboards.access import Access, Rule
from dashboards.context import add_route, deps
from gateway.errors import InputError

# tlog-tiles paths: "tile/<L>/<N>[.p/<W>]" and "tile/entries/<N>[.p/<W>]" with N as x-prefixed
# 3-digit groups; anything else (.., //, %) never reaches the ledger.
_TILE_PATH = re.compile(r"(?:[0-9]+|entries)(?:/x[0-9]{3})*/[0-9]{3}(?:\.p/[0-9]{1,3})?")
MAX_COSIGNATURE_BYTES = 8192


def _text(body: str) -> web.Response:
    return web.Response(text=body, content_type="text/plain", charset="utf-8")


async def healthz(request: web.Request) -> web.StreamResponse:
    health = deps(request).status.health()
    # 503 only when the hub says it is neither ok nor degraded (e.g. "stopping"): a degraded
    # hub (one source down) still stores and serves, and restarting it would not help.
    healthy = health.get("status") in ("ok", "degraded")
    return web.json_response(health, status=200 if healthy else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    response = web.Response(text=deps(request).status.prometheus_text())
    # Prometheus text exposition format 0.0.4
    response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
    return response


async def checkpoint(request: web.Request) -> web.StreamResponse:
    note = await deps(request).ledger.checkpoint_note()
    if note is None:
        raise web.HTTPNotFound()
    response = _text(note)
    response.headers["Cache-Control"] = "no-cache"
    return response


async def key(request: web.Request) -> web.StreamResponse:
    return _text(deps(request).ledger.verifier_key() + "\n")


async def tile(request: web.Request) -> web.StreamResponse:
    path = request.match_info["path"]
    if not _TILE_PATH.fullmatch(path):
        raise web.HTTPNotFound()
    data = await deps(request).ledger.tile("tile/" + path)
    if data is None:
        raise web.HTTPNotFound()
    response = web.Response(body=data, content_type="application/octet-stream")
    if ".p/" not in path:  # full tiles never change (tlog-tiles: immutable)
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable"
    return response


async def consistency(request: web.Request) -> web.StreamResponse:
    try:
        old = int(request.query["old"])
        new = int(request.query["new"])
    except (KeyError, ValueError):
        raise web.HTTPBadRequest() from None
    if not 0 <= old <= new:
        raise web.HTTPBadRequest()
    try:
        proof = await deps(request).ledger.consistency_proof(old, new)
    except (InputError, ValueError):
        raise web.HTTPBadRequest() from None
    return web.json_response(
        {
            "old_size": old,
            "new_size": new,
            "proof": [base64.b64encode(h).decode("ascii") for h in proof],
        }
    )


async def cosignature(request: web.Request) -> web.StreamResponse:
    raw = await request.content.read(MAX_COSIGNATURE_BYTES + 1)
    if len(raw) > MAX_COSIGNATURE_BYTES:
        raise web.HTTPRequestEntityTooLarge(MAX_COSIGNATURE_BYTES, len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise web.HTTPBadRequest(text="cosignature must be UTF-8 text\n") from None
    try:
        await deps(request).ledger.add_cosignature(text)
    except InputError as exc:
        # The witness needs the reason; it concerns only the text it sent us.
        raise web.HTTPBadRequest(text=f"{exc}\n") from None
    return _text("ok\n")


def add_routes(app: web.Application) -> None:
    public = Rule(access=Access.PUBLIC)
    add_route(app, "GET", "/healthz", healthz, public)
    add_route(app, "GET", "/metrics", metrics, public)
    add_route(app, "GET", "/log/checkpoint", checkpoint, public)
    add_route(app, "GET", "/log/key", key, public)
    add_route(app, "GET", "/log/tile/{path:.*}", tile, public)
    add_route(app, "GET", "/log/consistency", consistency, public)
    add_route(app, "POST", "/log/cosignature", cosignature, public)
