"""Who a Nightscout API request is, as Nightscout's lib/authorization/index.js finds it, over
the hub's per-patient uploader secrets and access tokens.

In the order Nightscout looks: a JWT (`Authorization: Bearer <jwt>`, or `?token=<jwt>`)
that this hub signed at `/api/v2/authorization/request/<accessToken>`; an access token
(`?token=`, `Authorization: Bearer <token>`; py-nightscout sends `api-secret: token=<token>`);
the `api-secret` header or `?secret=` holding the SHA-1 hex of a secret or token. Every
credential belongs to one patient: it alone decides whose data a request reads or writes.
"""

from __future__ import annotations

import logging
import re

from aiohttp import web

from dashboards.accounts import api_secret
from dashboards.context import deps
from dashboards.nightscout import jwt
from gateway.storage.accounts import NightscoutSecretRecord

log = logging.getLogger(__name__)

_SHA1_HEX = re.compile(r"[0-9a-fA-F]{40}")


def _token(request: web.Request) -> str:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    return value.strip() if scheme == "Bearer" else request.query.get("token", "")


def credential(request: web.Request) -> str | None:
    """The SHA-1 hex the request authenticates with, when it is not a JWT."""
    token = _token(request)
    if token:
        return api_secret(token)
    given = request.query.get("secret") or request.headers.get("api-secret") or ""
    if given.startswith("token="):
        return api_secret(given.removeprefix("token="))
    return given if _SHA1_HEX.fullmatch(given) else None


async def uploader(request: web.Request) -> NightscoutSecretRecord | None:
    """The unrevoked secret or token the request carries; None for none or a wrong one."""
    token = _token(request)
    if token and jwt.looks_like_jwt(token):
        return await _jwt_holder(request, token)
    sha1 = credential(request)
    if sha1 is None:
        return None
    found = await deps(request).accounts.nightscout_uploader(sha1)
    if found is None:
        log.info("Nightscout request with an unknown secret: %s %s", request.method, request.path)
    return found


async def _jwt_holder(request: web.Request, token: str) -> NightscoutSecretRecord | None:
    d = deps(request)
    try:
        claims = jwt.verify(token, await d.accounts.nightscout_jwt_key(), now=d.clock.now())
    except jwt.JwtInvalid as exc:
        log.info("Nightscout request with a JWT refused (%s): %s", exc, request.path)
        return None
    token_id = claims.get("tid")
    if isinstance(token_id, bool) or not isinstance(token_id, int):
        return None
    # looked up on every request: a revoked token's JWTs stop working at once
    return await d.accounts.nightscout_uploader_by_id(token_id)


async def authorization_request(request: web.Request) -> web.StreamResponse:
    """GET /api/v2/authorization/request/<accessToken> (lib/authorization/endpoints.js and
    `authorize`): a JWT for the token (or for the token of a JWT still valid), with who it
    is, what it may do, `iat` and `exp` in seconds; 401 Unauthorized for an unknown token."""
    d = deps(request)
    access_token = request.match_info["token"]
    if jwt.looks_like_jwt(access_token):  # a JWT of this hub is traded for a fresh one
        found = await _jwt_holder(request, access_token)
    else:
        found = await d.accounts.nightscout_uploader(api_secret(access_token))
    if found is None or not found.roles:  # an uploader secret is no access token
        return web.json_response(
            {"status": 401, "message": "Unauthorized", "description": "Invalid/Missing"},
            status=401,
            headers={"Cache-Control": "no-store"},
        )
    now = d.clock.now()
    iat = int(now.timestamp())
    exp = int((now + jwt.LIFETIME).timestamp())
    signed = jwt.sign(
        {"sub": found.label, "tid": found.secret_id, "iat": iat, "exp": exp},
        await d.accounts.nightscout_jwt_key(),
    )
    return web.json_response(
        {
            "token": signed,
            "sub": found.label,
            "permissionGroups": [_PERMISSIONS[role] for role in found.roles],
            "iat": iat,
            "exp": exp,
        },
        headers={"Cache-Control": "no-store"},
    )


# lib/authorization/storage.js, the default roles' permissions
_PERMISSIONS = {"readable": ["*:*:read"], "careportal": ["api:treatments:create"], "admin": ["*"]}
