"""JSON API under /api/v1 for integrations (session cookie + CSRF header, or a Bearer token).

Every response lists only patients the caller may see; a patient id outside that set is a
404, the same as an unknown one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from dashboards import fhir
from dashboards.access import Access, Rule
from dashboards.context import add_route, current_user, deps, visible
from dashboards.live import alert_json
from dashboards.views import acknowledge_visible, visible_open_alerts
from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Patient, Reading, ReadingKind

MAX_RANGE = timedelta(days=90)


def patient_json(p: Patient) -> dict[str, Any]:
    return {
        "patient_id": p.patient_id,
        "display_name": p.display_name,
        "timezone": p.timezone,
        "simulated": p.simulated,
    }


def reading_json(r: Reading) -> dict[str, Any]:
    return {
        "time": to_rfc3339(r.time),
        "kind": r.kind.value,
        "value": r.value,
        "unit": r.unit.value,
        "device_id": r.device_id,
        "seq": r.seq,
        "original_value": r.original_value,
        "original_unit": r.original_unit.value if r.original_unit else None,
    }


async def patients(request: web.Request) -> web.StreamResponse:
    allowed = visible(request)
    found = [p for p in await deps(request).read_model.list_patients() if p.patient_id in allowed]
    return web.json_response({"patients": [patient_json(p) for p in found]})


async def patient(request: web.Request) -> web.StreamResponse:
    found = await deps(request).read_model.get_patient(request.match_info["id"])
    if found is None:
        raise web.HTTPNotFound()
    return web.json_response(patient_json(found))


async def readings(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    now = d.clock.now()
    try:
        since = parse_rfc3339(request.query["since"]) if "since" in request.query else None
        until = parse_rfc3339(request.query["until"]) if "until" in request.query else None
        kinds = tuple(ReadingKind(k) for k in request.query.getall("kind", []))
    except ValueError:
        raise web.HTTPBadRequest() from None
    until_eff = until or now
    since = since or until_eff - timedelta(hours=24)
    if since > until_eff or until_eff - since > MAX_RANGE:
        raise web.HTTPBadRequest()
    found = await d.read_model.readings(
        request.match_info["id"], since=since, until=until, kinds=kinds
    )
    return web.json_response(
        {
            "patient_id": request.match_info["id"],
            "since": to_rfc3339(since),
            "until": to_rfc3339(until_eff),
            "readings": [reading_json(r) for r in found],
        }
    )


async def alerts(request: web.Request) -> web.StreamResponse:
    found = await visible_open_alerts(request)
    return web.json_response({"alerts": [alert_json(a) for a in found]})


async def ack(request: web.Request) -> web.StreamResponse:
    updated = await acknowledge_visible(request, request.match_info["alert_id"])
    return web.json_response(alert_json(updated))


async def me(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    return web.json_response(
        {
            "username": user.username,
            "role": user.role.value,
            "patient_id": user.patient_id,
            "unit": user.unit.value,
        }
    )


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.json_response(OPENAPI)


def _op(summary: str, *, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": params or [],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {}}},
            "401": {"description": "not logged in / bad token"},
            "404": {"description": "unknown, or not visible to the caller"},
        },
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ALERT = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}
_TIME = {"type": "string", "format": "date-time"}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Glucohub dashboard API", "version": "1"},
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "gh_session"},
        }
    },
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/api/v1/me": {"get": _op("The calling user")},
        "/api/v1/patients": {"get": _op("Patients the caller may see")},
        "/api/v1/patients/{id}": {"get": _op("One patient", params=[_ID])},
        "/api/v1/patients/{id}/readings": {
            "get": _op(
                "Readings in [since, until] (default: last 24 h; at most 90 days)",
                params=[
                    _ID,
                    {"name": "since", "in": "query", "schema": _TIME},
                    {"name": "until", "in": "query", "schema": _TIME},
                    {
                        "name": "kind",
                        "in": "query",
                        "schema": {"type": "string", "enum": [k.value for k in ReadingKind]},
                    },
                ],
            )
        },
        "/api/v1/alerts": {"get": _op("Open alerts of visible patients")},
        "/api/v1/alerts/{alert_id}/ack": {
            "post": _op("Acknowledge an alert (session callers send X-CSRF-Token)", params=[_ALERT])
        },
        "/fhir/Observation": {
            "get": _op(
                "FHIR R4 searchset Bundle of glucose Observations",
                params=[
                    {
                        "name": "patient",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "date", "in": "query", "schema": {"type": "string"}},
                ],
            )
        },
    },
}


def add_routes(app: web.Application) -> None:
    user = Rule(access=Access.USER, token_ok=True)
    add_route(app, "GET", "/api/v1/openapi.json", openapi, Rule(access=Access.PUBLIC))
    add_route(app, "GET", "/api/v1/me", me, user)
    add_route(app, "GET", "/api/v1/patients", patients, user)
    add_route(
        app, "GET", "/api/v1/patients/{id}", patient,
        Rule(access=Access.USER, token_ok=True, patient_from="match:id", audit="api.patient"),
    )  # fmt: skip
    add_route(
        app, "GET", "/api/v1/patients/{id}/readings", readings,
        Rule(access=Access.USER, token_ok=True, patient_from="match:id", audit="api.readings"),
    )  # fmt: skip
    add_route(app, "GET", "/api/v1/alerts", alerts, user)
    add_route(app, "POST", "/api/v1/alerts/{alert_id}/ack", ack, user)
    add_route(
        app, "GET", "/fhir/Observation", fhir.observations,
        Rule(access=Access.USER, token_ok=True, patient_from="query:patient", audit="fhir"),
    )  # fmt: skip
