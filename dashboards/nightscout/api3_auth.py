"""Who a Nightscout API v3 request is, and what it may do: the one place that reads its
credential.

Nightscout 15 (lib/api3/security.js) takes only `Authorization: Bearer <token or JWT>`:
missing is 401 "Missing or bad access token or JWT", unknown is 401 "Bad access token or
JWT", and a permission the role lacks is 403 "Missing permission api:<collection>:<op>".
AndroidAPS's NSClientV3 first sends an empty Bearer, and on a 401 or 403 asks
`/api/v2/authorization/request/<token>` for a JWT, which it then sends.

Here the bearer is a JWT this hub signed (`dashboards.nightscout.auth`, the v1 routes' own
lookup), or a patient's uploader secret or access token itself. The credential alone decides
whose data a request reads or writes.
"""

from __future__ import annotations

import logging
from typing import Literal

from aiohttp import web

from dashboards.nightscout import auth
from dashboards.nightscout.api3 import BAD_TOKEN, MISSING_TOKEN, Api3Error, missing_permission
from gateway.storage.accounts import NightscoutSecretRecord

log = logging.getLogger(__name__)

Operation = Literal["create", "read", "update", "delete"]


async def authenticate(request: web.Request) -> NightscoutSecretRecord:
    """The uploader the request's bearer belongs to; raise Api3Error(401) otherwise."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Api3Error(401, MISSING_TOKEN)
    found = await auth.uploader(request)
    if found is None:
        log.info("Nightscout v3 request with an unknown token: %s %s", request.method, request.path)
        raise Api3Error(401, BAD_TOKEN)
    return found


def permits(caller: NightscoutSecretRecord, collection: str, operation: Operation) -> bool:
    """An uploader secret may do everything with its patient's data (Nightscout's admin
    role, which NSClientV3 needs); a read-only one may only read."""
    return operation == "read" or caller.can_write


def demand(caller: NightscoutSecretRecord, collection: str, operation: Operation) -> None:
    if not permits(caller, collection, operation):
        raise missing_permission(f"api:{collection}:{operation}")


def permission_letters(caller: NightscoutSecretRecord, collection: str) -> str:
    """status.js permsForCol: "crud" for what the caller may do."""
    ops: tuple[tuple[str, Operation], ...] = (
        ("c", "create"),
        ("r", "read"),
        ("u", "update"),
        ("d", "delete"),
    )
    return "".join(letter for letter, op in ops if permits(caller, collection, op))
