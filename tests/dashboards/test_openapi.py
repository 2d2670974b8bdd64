"""The OpenAPI document against the app: every API route is documented, and real responses
(status, content type, JSON body against the documented schema) match it."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from aiohttp import web
from aiohttp.test_utils import TestClient

from dashboards.access import Access
from dashboards.api import OPENAPI
from dashboards.context import DEPS
from gateway.model import AlertKind, AlertLevel
from tests.dashboards.conftest import Login, csrf_of
from tests.dashboards.fakes import World, alert, push_alert

API_PREFIXES = ("/api/", "/fhir/")

# (user, method, path template, concrete URL, send the CSRF header)
CASES = [
    ("", "GET", "/api/v1/openapi.json", "/api/v1/openapi.json", False),
    ("", "GET", "/api/v1/me", "/api/v1/me", False),
    ("dr-grant", "GET", "/api/v1/me", "/api/v1/me", False),
    ("alice", "GET", "/api/v1/patients", "/api/v1/patients", False),
    ("dr-grant", "GET", "/api/v1/patients/{id}", "/api/v1/patients/pat-a", False),
    ("dr-grant", "GET", "/api/v1/patients/{id}", "/api/v1/patients/pat-b", False),
    ("dr-grant", "GET", "/api/v1/patients/{id}/readings", "/api/v1/patients/pat-a/readings", False),
    (
        "dr-grant",
        "GET",
        "/api/v1/patients/{id}/readings",
        "/api/v1/patients/pat-a/readings?since=yesterday",
        False,
    ),
    ("dr-grant", "GET", "/api/v1/alerts", "/api/v1/alerts", False),
    ("dr-grant", "POST", "/api/v1/alerts/{alert_id}/ack", "/api/v1/alerts/al-doc/ack", True),
    ("dr-grant", "POST", "/api/v1/alerts/{alert_id}/ack", "/api/v1/alerts/al-doc/ack", False),
    ("dr-grant", "POST", "/api/v1/alerts/{alert_id}/ack", "/api/v1/alerts/al-nope/ack", True),
    ("alice", "POST", "/api/v1/alerts/{alert_id}/ack", "/api/v1/alerts/al-doc/ack", True),
    ("dr-grant", "GET", "/fhir/Observation", "/fhir/Observation?patient=pat-a", False),
    (
        "dr-grant",
        "GET",
        "/fhir/Observation",
        "/fhir/Observation?patient=pat-a&code=107931-8",
        False,
    ),
    ("dr-grant", "GET", "/fhir/Observation", "/fhir/Observation?patient=pat-a&date=soon", False),
    ("dr-grant", "GET", "/fhir/Observation", "/fhir/Observation?patient=pat-b", False),
]


def api_routes(app: web.Application) -> set[tuple[str, str]]:
    """Glucohub's own API routes; the Nightscout-compatible ones (uploader secrets) follow
    Nightscout's API documentation, not this document."""
    rules = app[DEPS].rules
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.resource.canonical.startswith(API_PREFIXES)
        and route.method != "HEAD"
        and rules[route].access is not Access.UPLOADER
    }


def test_every_api_route_is_documented(app: web.Application) -> None:
    documented = {
        (method.upper(), path) for path, ops in OPENAPI["paths"].items() for method in ops
    }
    assert api_routes(app) == documented
    assert api_routes(app) == {(m, t) for _, m, t, _, _ in CASES}  # every route exercised


async def test_responses_match_the_openapi_document(
    world: World, app: web.Application, login: Login
) -> None:
    push_alert(world, alert("al-doc", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT))
    clients: dict[str, TestClient[web.Request, web.Application]] = {}
    tokens: dict[str, str] = {}
    for user in {c[0] for c in CASES}:
        clients[user] = await login(user)
        tokens[user] = await csrf_of(clients[user]) if user else ""
    served = json.loads(await (await clients[""].get("/api/v1/openapi.json")).text())
    assert served == json.loads(json.dumps(OPENAPI))
    seen: set[tuple[str, str, int]] = set()
    for user, method, template, url, csrf in CASES:
        headers = {"X-CSRF-Token": tokens[user]} if csrf else {}
        response = await clients[user].request(method, url, headers=headers)
        where = f"{user or 'anonymous'} {method} {url} -> {response.status}"
        documented: dict[str, Any] = OPENAPI["paths"][template][method.lower()]["responses"]
        assert str(response.status) in documented, f"undocumented status: {where}"
        content = documented[str(response.status)]["content"]
        assert response.content_type in content, f"{where}: {response.content_type}"
        body = json.loads(await response.text())
        jsonschema.validate(body, content[response.content_type]["schema"])
        seen.add((method, template, response.status))
    # The cases reach the documented error statuses too, not only 200.
    assert {s for _, _, s in seen} == {200, 400, 401, 403, 404}


def test_every_documented_response_has_a_schema() -> None:
    for path, ops in OPENAPI["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                where = f"{method.upper()} {path} {status}"
                assert response.get("description"), where
                content = response.get("content")
                assert content, f"{where}: no content"
                for media, body in content.items():
                    assert body.get("schema"), f"{where} {media}: no schema"


async def test_the_docs_page_lists_every_operation_without_scripts(login: Login) -> None:
    anonymous = await login("")
    response = await anonymous.get("/docs/api")
    assert response.status == 200 and response.content_type == "text/html"
    page = await response.text()
    for path, ops in OPENAPI["paths"].items():
        for method in ops:
            assert f"<h2><code>{method.upper()} {path}</code></h2>" in page
    # one line per response, e.g. the readings' 400 and the patient list's shape
    assert "<td>400</td><td>a malformed or out-of-range parameter</td>" in page
    assert "patients (array of object)" in page
    assert "<script" not in page.replace('<script src="/static/app.js" defer></script>', "")
    assert "cdn" not in page.lower() and "http://" not in page and "https://" not in page
