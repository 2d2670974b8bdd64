"""JSON API under /api/v1 for integrations (session cookie + CSRF header, or a Bearer token).

Every response lists only patients the caller may see; a patient id outside that set is a
404, the same as an unknown one.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from dashboards import apidocs, fhir, templating
from dashboards.access import Access, Rule
from dashboards.context import add_route, current_user, deps, visible
from dashboards.views import acknowledge_visible, visible_open_alerts
from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.model import Patient, ReadingKind
from gateway.shapes import alert_to_json, reading_to_json

MAX_RANGE = timedelta(days=90)


def patient_json(p: Patient) -> dict[str, Any]:
    return {
        "patient_id": p.patient_id,
        "display_name": p.display_name,
        "timezone": p.timezone,
        "simulated": p.simulated,
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
            "readings": [reading_to_json(r) for r in found],
        }
    )


async def alerts(request: web.Request) -> web.StreamResponse:
    found = await visible_open_alerts(request)
    return web.json_response({"alerts": [alert_to_json(a) for a in found]})


async def ack(request: web.Request) -> web.StreamResponse:
    updated = await acknowledge_visible(request, request.match_info["alert_id"])
    return web.json_response(alert_to_json(updated))


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


async def docs(request: web.Request) -> web.StreamResponse:
    """The API's operations as a page, from the OpenAPI document."""
    return templating.render(
        "api_docs.html",
        request,
        {
            "title": "API documentation",
            "info_title": OPENAPI["info"]["title"],
            "version": OPENAPI["info"]["version"],
            "openapi": OPENAPI["openapi"],
            "operations": apidocs.operations(OPENAPI),
        },
    )


def _json(schema: dict[str, Any], description: str, media: str = "application/json") -> Any:
    return {"description": description, "content": {media: {"schema": schema}}}


_NULLABLE_STRING = {"type": ["string", "null"]}
_NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}
_TIME = {"type": "string", "format": "date-time"}
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "status"],
    "properties": {"error": {"type": "string"}, "status": {"type": "integer"}},
}
PATIENT_SCHEMA = {
    "type": "object",
    "required": ["patient_id", "display_name", "timezone", "simulated"],
    "properties": {
        "patient_id": {"type": "string"},
        "display_name": {"type": "string"},
        "timezone": {"type": "string"},
        "simulated": {"type": "boolean"},
    },
}
READING_SCHEMA = {  # gateway.shapes.reading_to_json: the one shape of a reading
    "type": "object",
    "required": [
        "patient_id",
        "device_id",
        "kind",
        "time",
        "value",
        "unit",
        "seq",
        "source",
        "original_value",
        "original_unit",
        "status",
    ],
    "additionalProperties": False,
    "properties": {
        "patient_id": {"type": "string"},
        "device_id": {"type": "string"},
        "kind": {"type": "string", "enum": [k.value for k in ReadingKind]},
        "time": _TIME,
        "value": {"type": "number"},
        "unit": {"type": "string"},
        "seq": {"type": ["integer", "null"]},
        "source": {"type": "string"},
        "original_value": {"type": ["number", "null"]},
        "original_unit": _NULLABLE_STRING,
        "status": {"type": "array", "items": {"type": "string"}},
    },
}
ALERT_SCHEMA = {
    "type": "object",
    "required": ["alert_id", "patient_id", "kind", "level", "state", "raised_at", "message"],
    "properties": {
        "alert_id": {"type": "string"},
        "patient_id": {"type": "string"},
        "kind": {"type": "string"},
        "level": {"type": "string", "enum": ["info", "warning", "urgent", "escalated"]},
        "state": {"type": "string", "enum": ["raised", "acknowledged", "resolved"]},
        "raised_at": _TIME,
        "updated_at": _TIME,
        "message": {"type": "string"},
        "glucose_mg_dl": {"type": ["number", "null"]},
        "acknowledged_by": _NULLABLE_STRING,
        "acknowledged_at": _NULLABLE_TIME,
        "resolved_at": _NULLABLE_TIME,
        "patient_acknowledged_by": _NULLABLE_STRING,
        "patient_acknowledged_at": _NULLABLE_TIME,
    },
}
_FHIR = "application/fhir+json"
_ERRORS = {
    "401": _json(ERROR_SCHEMA, "not logged in / bad token"),
    "404": _json(ERROR_SCHEMA, "unknown, or not visible to the caller"),
}


def _op(
    summary: str,
    ok: dict[str, Any],
    *,
    params: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "summary": summary,
        "parameters": params or [],
        "responses": {"200": ok, **_ERRORS, **(extra or {})},
    }


def _list_of(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": [key],
        "properties": {key: {"type": "array", "items": item}},
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ALERT = {"name": "alert_id", "in": "path", "required": True, "schema": {"type": "string"}}
_BAD_PARAMS = {"400": _json(ERROR_SCHEMA, "a malformed or out-of-range parameter")}
_FHIR_ENTRY = {
    "type": "object",
    "required": ["resource", "search"],
    "properties": {
        "fullUrl": {"type": "string", "pattern": "^https?://[^/]+/.*/Observation/[^/]+$"},
        "resource": {
            "type": "object",
            "required": ["resourceType"],
            "properties": {"resourceType": {"enum": ["Observation", "OperationOutcome"]}},
        },
        "search": {
            "type": "object",
            "required": ["mode"],
            "properties": {"mode": {"enum": ["match", "include", "outcome"]}},
        },
    },
}
_FHIR_BUNDLE = {
    "type": "object",
    "required": ["resourceType", "type", "total", "link", "entry"],
    "properties": {
        "resourceType": {"const": "Bundle"},
        "type": {"const": "searchset"},
        "total": {"type": "integer", "minimum": 0, "description": "matches only"},
        "link": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"url": {"type": "string", "pattern": "^https?://"}},
            },
        },
        "entry": {"type": "array", "items": _FHIR_ENTRY},
    },
}
_FHIR_OUTCOME = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {"resourceType": {"const": "OperationOutcome"}, "issue": {"type": "array"}},
}

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
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "security": [],
                "parameters": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1 document")},
            }
        },
        "/api/v1/me": {
            "get": _op(
                "The calling user",
                _json(
                    {
                        "type": "object",
                        "required": ["username", "role", "patient_id", "unit"],
                        "properties": {
                            "username": {"type": "string"},
                            "role": {"type": "string"},
                            "patient_id": _NULLABLE_STRING,
                            "unit": {"type": "string"},
                        },
                    },
                    "the user",
                ),
            )
        },
        "/api/v1/patients": {
            "get": _op(
                "Patients the caller may see", _json(_list_of("patients", PATIENT_SCHEMA), "list")
            )
        },
        "/api/v1/patients/{id}": {
            "get": _op("One patient", _json(PATIENT_SCHEMA, "the patient"), params=[_ID])
        },
        "/api/v1/patients/{id}/readings": {
            "get": _op(
                "Readings in [since, until] (default: last 24 h; at most 90 days)",
                _json(
                    {
                        **_list_of("readings", READING_SCHEMA),
                        "required": ["patient_id", "since", "until", "readings"],
                    },
                    "readings, oldest first",
                ),
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
                extra=_BAD_PARAMS,
            )
        },
        "/api/v1/alerts": {
            "get": _op(
                "Open alerts of visible patients", _json(_list_of("alerts", ALERT_SCHEMA), "list")
            )
        },
        "/api/v1/alerts/{alert_id}/ack": {
            "post": _op(
                "Acknowledge an alert (session callers send X-CSRF-Token)",
                _json(ALERT_SCHEMA, "the alert as the caller now sees it"),
                params=[_ALERT],
                extra={
                    "400": _json(ERROR_SCHEMA, "a malformed body"),
                    "403": _json(ERROR_SCHEMA, "missing or wrong CSRF token"),
                },
            )
        },
        "/fhir/Observation": {
            "get": _op(
                "FHIR R4 searchset Bundle of glucose Observations (HL7 CGM IG STU 1 profiles; "
                "code=107931-8: the CGM summary with its members included)",
                _json(_FHIR_BUNDLE, "a FHIR searchset Bundle", _FHIR),
                params=[
                    {
                        "name": "patient",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "date", "in": "query", "schema": {"type": "string"}},
                    {"name": "code", "in": "query", "schema": {"type": "string"}},
                ],
                extra={"400": _json(_FHIR_OUTCOME, "a bad search parameter", _FHIR)},
            )
        },
    },
}


def add_routes(app: web.Application) -> None:
    user = Rule(access=Access.USER, token_ok=True)
    add_route(app, "GET", "/api/v1/openapi.json", openapi, Rule(access=Access.PUBLIC))
    add_route(app, "GET", "/docs/api", docs, Rule(access=Access.PUBLIC))
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
