"""Routes x roles: who may read what, through pages, API, FHIR, report, batch and websocket."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import timedelta

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

from dashboards.access import Access
from dashboards.context import DEPS
from gateway.model import AlertKind, AlertLevel, AlertState
from gateway.protocols import QuarantinedRecord
from tests.dashboards.conftest import CSRF_RE, META_RE, Login, csrf_of, login_as
from tests.dashboards.fakes import NOW, PASSWORD, World, alert, cgm, push_alert, push_readings

ROLES = ("", "alice", "bob", "dr-grant", "dr-none", "root")

# Patient A (pat-a) is alice's record; dr-grant holds a consent grant for A (and C).
# Expected status per role, in ROLES order. Anonymous HTML pages redirect to /login (303);
# anonymous API/FHIR calls get 401; everyone not allowed to see A gets 404, exactly like a
# patient id that does not exist, so the response does not reveal whether A exists.
MATRIX: list[tuple[str, tuple[int, ...]]] = [
    ("/patients/pat-a", (303, 200, 404, 200, 404, 404)),
    ("/patients/pat-a/live", (303, 200, 404, 200, 404, 404)),
    ("/patients/pat-a/report?days=7", (303, 200, 404, 200, 404, 404)),
    ("/api/v1/patients/pat-a", (401, 200, 404, 200, 404, 404)),
    ("/api/v1/patients/pat-a/readings", (401, 200, 404, 200, 404, 404)),
    ("/fhir/Observation?patient=pat-a", (401, 200, 404, 200, 404, 404)),
    # A batch is served as the records of the patients the caller may see: batch 1 holds
    # only A's (bob, dr-none and the admin, who sees no health data, get 404); batch 2
    # mixes A and B, so alice, bob and dr-grant each get their part (test_batch_views_...).
    ("/log/batch/1", (303, 200, 404, 200, 404, 404)),
    ("/log/batch/2", (303, 200, 200, 200, 404, 404)),
    # proofs likewise; batch 2 is not yet under a checkpoint (409, once visibility is known)
    ("/log/batch/1/proof", (303, 200, 404, 200, 404, 404)),
    ("/log/batch/2/proof", (303, 409, 409, 409, 404, 404)),
    ("/consent", (303, 200, 200, 403, 403, 403)),
    ("/", (303, 303, 303, 200, 200, 200)),
    ("/alerts", (303, 200, 200, 200, 200, 200)),
    ("/ledger", (303, 200, 200, 200, 200, 200)),
    ("/api/v1/patients", (401, 200, 200, 200, 200, 200)),
    ("/healthz", (200,) * 6),
    ("/metrics", (200,) * 6),
    ("/log/checkpoint", (200,) * 6),
    ("/log/key", (200,) * 6),
    ("/api/v1/openapi.json", (200,) * 6),
]


@pytest.mark.parametrize(("path", "expected"), MATRIX, ids=[m[0] for m in MATRIX])
async def test_access_matrix(login: Login, path: str, expected: tuple[int, ...]) -> None:
    for role, status in zip(ROLES, expected, strict=True):
        client = await login(role)
        response = await client.get(path, allow_redirects=False)
        assert response.status == status, f"{role or 'anonymous'} GET {path}"


async def test_not_visible_is_indistinguishable_from_missing(login: Login) -> None:
    client = await login("dr-grant")
    hidden = await client.get("/patients/pat-b")
    missing = await client.get("/patients/no-such-patient")
    assert hidden.status == missing.status == 404
    assert await hidden.text() == await missing.text()
    api_hidden = await client.get("/api/v1/patients/pat-b/readings")
    api_missing = await client.get("/api/v1/patients/nope/readings")
    assert await api_hidden.json() == await api_missing.json()


async def test_patient_lists_show_only_visible_patients(login: Login) -> None:
    client = await login("dr-grant")
    body = await (await client.get("/api/v1/patients")).json()
    assert sorted(p["patient_id"] for p in body["patients"]) == ["pat-a", "pat-c"]
    triage = await (await client.get("/")).text()
    assert "Alice Example" in triage and "Bob Example" not in triage
    # Display names are escaped: patient C's name holds markup.
    assert "Carol &lt;script&gt;x&lt;/script&gt;" in triage and "<script>x" not in triage
    bob = await login("bob")
    mine = await (await bob.get("/api/v1/patients")).json()
    assert [p["patient_id"] for p in mine["patients"]] == ["pat-b"]


async def test_every_route_has_an_explicit_rule(app: web.Application) -> None:
    rules = app[DEPS].rules
    for route in app.router.routes():
        assert route in rules, f"{route.method} {route.resource} has no access rule"
    public = sorted(
        str(r.resource.canonical) if r.resource else ""
        for r in app.router.routes()
        if rules[r].access is Access.PUBLIC
    )
    assert public == sorted(
        [
            "/api/v1/openapi.json",
            "/docs/api",
            "/healthz",
            "/log/checkpoint",
            "/log/consistency",
            "/log/cosignature",
            "/log/key",
            "/log/tile/{path}",
            "/login",
            "/login",
            "/metrics",
            "/static",
            "/static",
        ]
    )


# -- acknowledging and snoozing ------------------------------------------------------------


async def test_patient_cannot_acknowledge_another_patients_alert(
    world: World, login: Login
) -> None:
    push_alert(world, alert("al-a", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT, glucose=50))
    bob = await login("bob")
    token = await csrf_of(bob)
    response = await bob.post("/api/v1/alerts/al-a/ack", headers={"X-CSRF-Token": token})
    assert response.status == 404
    assert world.model.alerts_by_id["al-a"].state is AlertState.RAISED


async def test_clinician_acknowledges_with_csrf_token(world: World, login: Login) -> None:
    push_alert(world, alert("al-a", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT, glucose=50))
    dr = await login("dr-grant")
    token = await csrf_of(dr)
    response = await dr.post(
        "/alerts/al-a/ack", headers={"X-CSRF-Token": token, "Accept": "application/json"}
    )
    assert response.status == 200
    assert (await response.json())["state"] == "acknowledged"
    stored = world.model.alerts_by_id["al-a"]
    assert stored.state is AlertState.ACKNOWLEDGED and stored.acknowledged_by == "dr-grant"


async def test_snooze_form_is_scoped_to_visible_patients(world: World, login: Login) -> None:
    dr = await login("dr-grant")
    token = await csrf_of(dr)
    form = {"csrf_token": token, "kind": "low", "minutes": "30"}
    hidden = await dr.post("/patients/pat-b/snooze", data=form, allow_redirects=False)
    assert hidden.status == 404
    ok = await dr.post("/patients/pat-a/snooze", data=form, allow_redirects=False)
    assert ok.status == 303
    assert world.alerts.snoozes == [("pat-a", AlertKind.LOW, 30, "dr-grant")]


async def test_snooze_choices_say_their_unit(world: World, login: Login) -> None:
    push_alert(world, alert("al-a", "pat-a", AlertKind.LOW, AlertLevel.WARNING))
    dr = await login("dr-grant")
    page = await (await dr.get("/alerts")).text()
    select = page[page.index('<select name="minutes"') :]
    select = select[: select.index("</select>")]
    shown = re.findall(r"<option[^>]*>([^<]*)</option>", select)
    values = re.findall(r'<option value="(\d+)"', select)
    assert shown == ["30 min", "1 hour", "2 hours"]
    assert values == ["30", "60", "120"]


async def test_an_acknowledged_alert_says_who_and_when(world: World, login: Login) -> None:
    raised = alert("al-a", "pat-a", AlertKind.LOW, AlertLevel.WARNING, glucose=65)
    push_alert(
        world,
        dataclasses.replace(
            raised,
            state=AlertState.ACKNOWLEDGED,
            acknowledged_by="dr-grant",
            acknowledged_at=NOW - timedelta(minutes=4),
            updated_at=NOW - timedelta(minutes=4),
        ),
    )
    dr = await login("dr-grant")
    page = await (await dr.get("/alerts")).text()
    row = page[page.index('data-alert="al-a"') :]
    row = re.sub(r"<[^>]+>", "", row[: row.index("</tr>")])
    # NOW is 12:00 UTC; pat-a lives in Europe/Berlin (CET, UTC+1): acknowledged 12:56 CET.
    assert "acknowledged by dr-grant, 2026-01-15 12:56 CET · 4 min ago" in row, row
    seen = dataclasses.replace(
        alert("al-b", "pat-a", AlertKind.HIGH, AlertLevel.WARNING, glucose=200),
        patient_acknowledged_by="alice",
        patient_acknowledged_at=NOW - timedelta(minutes=2),
    )
    push_alert(world, seen)
    page = await (await dr.get("/alerts")).text()
    row = page[page.index('data-alert="al-b"') :]
    row = re.sub(r"<[^>]+>", "", row[: row.index("</tr>")])
    assert "raised (seen by the patient, alice, 2026-01-15 12:58 CET · 2 min ago)" in row, row


# -- CSRF and sessions ----------------------------------------------------------------------


async def test_state_changes_need_the_sessions_csrf_token(world: World, login: Login) -> None:
    push_alert(world, alert("al-a", "pat-a", AlertKind.LOW, AlertLevel.WARNING))
    dr = await login("dr-grant")
    other = await login("dr-none")
    foreign = await csrf_of(other)  # a real token, but of another session
    for headers in ({}, {"X-CSRF-Token": "forged"}, {"X-CSRF-Token": foreign}):
        response = await dr.post("/alerts/al-a/ack", headers=headers, allow_redirects=False)
        assert response.status == 403
    no_token = await dr.post("/logout", data={}, allow_redirects=False)
    assert no_token.status == 403
    assert world.model.alerts_by_id["al-a"].state is AlertState.RAISED
    assert (await dr.get("/alerts", allow_redirects=False)).status == 200  # still logged in


async def test_login_form_needs_its_csrf_cookie(login: Login) -> None:
    client = await login("")
    response = await client.post(
        "/login",
        data={"username": "alice", "password": "correct horse battery", "csrf_token": "x"},
        allow_redirects=False,
    )
    assert response.status == 403
    assert "gh_session" not in {c.key for c in client.session.cookie_jar}


async def test_login_sets_hardened_cookie_and_a_fresh_session_id(login: Login) -> None:
    client = await login("")
    planted = "attacker-chosen-session-id"
    client.session.cookie_jar.update_cookies({"gh_session": planted})
    response = await login_as(client, "alice")
    assert isinstance(response, web.StreamResponse) or hasattr(response, "headers")
    cookie = response.headers["Set-Cookie"]  # type: ignore[attr-defined]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    new_id = cookie.split(";")[0].split("=", 1)[1]
    assert new_id != planted and len(new_id) >= 40
    # The planted id does not authenticate anyone.
    attacker = await login("")
    attacker.session.cookie_jar.update_cookies({"gh_session": planted})
    assert (await attacker.get("/alerts", allow_redirects=False)).status == 303


async def test_login_replaces_a_known_session_it_arrived_with(login: Login) -> None:
    # An attacker logs in as bob, plants bob's session id in the victim's browser; when the
    # victim logs in as alice, that id must die, not become alice's session.
    attacker = await login("bob")
    bob_id = next(c.value for c in attacker.session.cookie_jar if c.key == "gh_session")
    victim = await login("")
    victim.session.cookie_jar.update_cookies({"gh_session": bob_id})
    response = await login_as(victim, "alice")
    cookie = response.headers["Set-Cookie"]  # type: ignore[attr-defined]
    alice_id = cookie.split(";")[0].split("=", 1)[1]
    assert alice_id != bob_id
    assert (await attacker.get("/alerts", allow_redirects=False)).status == 303


async def test_secure_cookie_when_tls_is_configured(world: World) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from dashboards.app import create_app
    from gateway.settings import DashboardSettings

    app = create_app(
        settings=DashboardSettings(tls_cert="cert.pem", tls_key="key.pem"),
        read_model=world.model,
        live=world.live,
        alerts=world.alerts,
        ledger=world.ledger,
        status=world.status,
        accounts=world.accounts,
        clock=world.clock,
    )
    async with TestClient(TestServer(app)) as client:
        page = await client.get("/login")
        assert "Secure" in page.headers["Set-Cookie"]
        assert page.headers["Strict-Transport-Security"].startswith("max-age=")


async def test_logout_ends_the_session(login: Login) -> None:
    client = await login("dr-grant")
    token = await csrf_of(client)
    response = await client.post("/logout", data={"csrf_token": token}, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == "/login"
    assert (await client.get("/", allow_redirects=False)).status == 303


async def test_login_is_rate_limited_per_source(login: Login) -> None:
    client = await login("")
    statuses = []
    for _ in range(5):
        response = await login_as(client, "alice", "wrong password!")
        statuses.append(response.status)  # type: ignore[attr-defined]
    assert statuses == [401] * 5
    # The sixth attempt is refused before the password is checked, even the right one.
    blocked = await login_as(client, "alice")
    assert blocked.status == 429  # type: ignore[attr-defined]
    assert int(blocked.headers["Retry-After"]) > 0  # type: ignore[attr-defined]


async def test_wrong_password_and_unknown_user_look_the_same(login: Login) -> None:
    client = await login("")
    wrong = await login_as(client, "alice", "not the password")
    unknown = await login_as(client, "mallory", "not the password")
    assert wrong.status == unknown.status == 401  # type: ignore[attr-defined]
    assert "Wrong username or password." in await wrong.text()  # type: ignore[attr-defined]
    assert "Wrong username or password." in await unknown.text()  # type: ignore[attr-defined]


async def test_bearer_tokens_work_for_the_api_only(world: World, login: Login) -> None:
    token = await world.accounts.create_token("dr-grant", "integration")
    client = await login("")
    auth = {"Authorization": f"Bearer {token}"}
    ok = await client.get("/api/v1/patients/pat-a/readings", headers=auth)
    assert ok.status == 200
    hidden = await client.get("/api/v1/patients/pat-b/readings", headers=auth)
    assert hidden.status == 404
    page = await client.get("/patients/pat-a", headers=auth, allow_redirects=False)
    assert page.status == 401  # pages need a browser session, not an API token
    bad = await client.get("/api/v1/patients", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401


# -- audit and consent ----------------------------------------------------------------------


async def test_views_are_audited_and_shown_to_the_patient(login: Login) -> None:
    dr = await login("dr-grant")
    assert (await dr.get("/patients/pat-a")).status == 200
    assert (await dr.get("/api/v1/patients/pat-a/readings")).status == 200
    assert (await dr.get("/patients/pat-b")).status == 404  # refused views log nothing for B
    alice = await login("alice")
    page = await (await alice.get("/consent")).text()
    # In words, as on her own page, and at 13:00 on her clock (Europe/Berlin), not 12:00 UTC.
    assert "dr-grant" in page and ">your record<" in page and ">your readings (API)<" in page
    assert "2026-01-15 13:00 CET" in page and "UTC" not in page
    bob = await login("bob")
    bob_page = await (await bob.get("/consent")).text()
    assert "dr-grant" not in bob_page


async def test_patient_grants_and_revokes_consent(world: World, login: Login) -> None:
    alice = await login("alice")
    dr = await login("dr-none")
    assert (await dr.get("/patients/pat-a")).status == 404
    token = await csrf_of(alice, "/consent")
    granted = await alice.post("/consent/grant", data={"csrf_token": token, "clinician": "dr-none"})
    assert "dr-none can now see your data." in await granted.text()
    assert (await dr.get("/patients/pat-a")).status == 200
    await alice.post("/consent/revoke", data={"csrf_token": token, "clinician": "dr-none"})
    assert (await dr.get("/patients/pat-a")).status == 404
    assert [
        (e["event"], e["patient_id"], e["clinician"], e["by"]) for e in world.consent_events
    ] == [
        ("consent_granted", "pat-a", "dr-none", "alice"),
        ("consent_revoked", "pat-a", "dr-none", "alice"),
    ]


async def test_consent_cannot_be_granted_to_a_non_clinician(login: Login) -> None:
    alice = await login("alice")
    token = await csrf_of(alice, "/consent")
    response = await alice.post("/consent/grant", data={"csrf_token": token, "clinician": "bob"})
    assert response.status == 400
    assert "No clinician with that username." in await response.text()


# -- pages ----------------------------------------------------------------------------------


async def test_triage_orders_by_urgency(world: World, login: Login) -> None:
    dr = await login("dr-grant")
    # Before any alert: C (stale, last reading 2 h ago) ranks above A (fresh, in range).
    rows = await (await dr.get("/partials/triage")).text()
    assert rows.index('data-patient="pat-c"') < rows.index('data-patient="pat-a"')
    push_alert(world, alert("al-a", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT, glucose=48))
    rows = await (await dr.get("/partials/triage")).text()
    assert rows.index('data-patient="pat-a"') < rows.index('data-patient="pat-c"')
    # The alert's 48 mg/dL in the default mmol/L: 48 / 18.01559 = 2.66 -> 2.7; raised 10 min ago.
    assert '<span class="reason triage-very-low">Very low 2.7 mmol/L, 10 min ago</span>' in rows
    assert "No recent data: last reading 2 h ago" in rows  # Carol


async def test_patient_page_shows_units_charts_and_devices(world: World, login: Login) -> None:
    alice = await login("alice")
    page = await (await alice.get("/patients/pat-a")).text()
    assert 'class="chart day"' in page
    assert 'aria-label="Ambulatory glucose profile"' in page
    assert 'aria-label="Time in ranges"' in page
    assert "Virtual CGM pat-a" in page and "mmol/L" in page
    # The latest reading is at NOW: 130 + 30·sin(2π·4032/288) = 130 + 30·sin(28π) = 130,
    # shown in the site default mmol/L: 130 / 18.01559 = 7.216 -> "7.2"
    assert '<span class="big band-in-range">7.2</span>' in page
    assert '<span class="band-word band-in-range">In range</span>' in page
    token = await csrf_of(alice, "/patients/pat-a")
    await alice.post("/prefs", data={"csrf_token": token, "unit": "mg/dL"})
    page = await (await alice.get("/patients/pat-a")).text()
    assert '<span class="big band-in-range">130</span>' in page


async def test_pages_carry_security_headers(login: Login) -> None:
    dr = await login("dr-grant")
    response = await dr.get("/patients/pat-a")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["Cache-Control"] == "no-store"
    assert "style=" not in await response.text()  # the CSP forbids inline styles


async def test_unexpected_errors_do_not_leak_details(world: World, login: Login) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("secret detail pat-b 42 mg/dL")

    world.model.alerts = broken  # type: ignore[method-assign,assignment]
    dr = await login("dr-grant")
    response = await dr.get("/alerts")
    assert response.status == 500
    assert "secret" not in await response.text()


# -- websocket ------------------------------------------------------------------------------


async def _receive(ws: object) -> dict[str, object]:
    msg = await asyncio.wait_for(ws.receive(), 2.0)  # type: ignore[attr-defined]
    assert msg.type is WSMsgType.TEXT, msg
    result: dict[str, object] = json.loads(msg.data)
    return result


async def _wait_for_viewers(app: web.Application, count: int) -> None:
    for _ in range(200):
        if len(app[DEPS].broadcaster.viewers) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("viewer did not register")


async def test_websocket_sends_only_visible_patients(
    world: World, app: web.Application, login: Login
) -> None:
    bob = await login("bob")
    dr = await login("dr-grant")
    async with bob.ws_connect("/ws") as bob_ws, dr.ws_connect("/ws") as dr_ws:
        await _wait_for_viewers(app, 2)
        t = NOW + timedelta(minutes=5)
        push_readings(world, [cgm("pat-a", t, 61.0), cgm("pat-b", t, 99.0)])
        push_alert(world, alert("al-a", "pat-a", AlertKind.LOW, AlertLevel.WARNING, glucose=61))
        push_readings(world, [cgm("pat-b", t + timedelta(minutes=5), 98.0)])
        bob_first = await _receive(bob_ws)
        bob_second = await _receive(bob_ws)
        assert bob_first["patient_id"] == "pat-b" and bob_second["patient_id"] == "pat-b"
        assert bob_first["type"] == bob_second["type"] == "readings"  # never A's alert
        dr_first = await _receive(dr_ws)
        dr_second = await _receive(dr_ws)
        assert dr_first == {
            "type": "readings",
            "patient_id": "pat-a",
            "readings": [
                {"time": "2026-01-15T12:05:00.000Z", "kind": "cgm_glucose", "value": 61.0}
            ],
        }
        assert dr_second["type"] == "alert"


async def test_websocket_needs_a_session_and_same_origin(login: Login) -> None:
    anon = await login("")
    response = await anon.get("/ws", allow_redirects=False)
    assert response.status == 401
    dr = await login("dr-grant")
    cross = await dr.get(
        "/ws",
        headers={
            "Origin": "https://evil.example",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    )
    assert cross.status == 403


async def test_behind_a_proxy_the_public_url_may_open_the_websocket(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    # A TLS proxy talking plain HTTP to the dashboard: the browser's Origin is the proxy's
    # https address, never this server's own http one.
    from gateway.settings import DashboardSettings
    from tests.dashboards.conftest import make_app

    app = make_app(world, DashboardSettings(port=0, public_url="https://Clinic.Example:443/"))
    async with TestClient(TestServer(app)) as client:
        # The browser sends the proxy its Secure cookies over https; the proxy passes them
        # on over http (a test client's jar would keep them back from plain http).
        page = await client.get("/login")
        login_cookie = page.headers["Set-Cookie"]
        assert "Secure" in login_cookie
        token = CSRF_RE.search(await page.text())
        assert token is not None
        response = await client.post(
            "/login",
            data={"username": "dr-grant", "password": PASSWORD, "csrf_token": token.group(1)},
            headers={"Cookie": login_cookie.split(";")[0]},
            allow_redirects=False,
        )
        cookie = response.headers["Set-Cookie"]
        assert response.status == 303 and "Secure" in cookie and "gh_session=" in cookie
        session = {"Cookie": cookie.split(";")[0]}
        # the proxy's address, as the browser spells it
        async with client.ws_connect(
            "/ws", headers={"Origin": "https://clinic.example", **session}
        ) as ws:
            await _wait_for_viewers(app, 1)
            assert not ws.closed
        with caplog.at_level("WARNING", logger="dashboards.app"):
            cross = await client.get(
                "/ws",
                headers={
                    "Origin": "https://evil.example",
                    "Upgrade": "websocket",
                    "Connection": "Upgrade",
                    "Sec-WebSocket-Version": "13",
                    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                    **session,
                },
            )
        assert cross.status == 403
        [record] = [r for r in caplog.records if r.name == "dashboards.app"]
        assert record.getMessage() == (
            "live updates refused to a page from 'https://evil.example': this dashboard"
            " answers as https://clinic.example (behind a reverse proxy, dashboard.public_url"
            " is the address browsers use)"
        )
        # the way back to the page the browser was on
        prefs = await client.post(
            "/prefs",
            data={"unit": "mg/dL", "csrf_token": await _csrf(client, session)},
            headers={"Referer": "https://clinic.example/alerts", **session},
            allow_redirects=False,
        )
        assert (prefs.status, prefs.headers["Location"]) == (303, "/alerts")


async def _csrf(client: TestClient[web.Request, web.Application], cookie: dict[str, str]) -> str:
    page = await client.get("/alerts", headers=cookie)
    found = META_RE.search(await page.text())
    assert found is not None
    return found.group(1)


async def test_websocket_follows_consent_revocation(
    world: World, app: web.Application, login: Login
) -> None:
    dr = await login("dr-grant")
    async with dr.ws_connect("/ws") as ws:
        await _wait_for_viewers(app, 1)
        await world.accounts.revoke("pat-a", "dr-grant", by="alice")
        viewer = next(iter(app[DEPS].broadcaster.viewers))
        for _ in range(300):
            if "pat-a" not in viewer.visible:
                break
            await asyncio.sleep(0.01)
        t = NOW + timedelta(minutes=5)
        push_readings(world, [cgm("pat-a", t, 61.0), cgm("pat-c", t, 150.0)])
        message = await _receive(ws)
        assert message["patient_id"] == "pat-c"


async def test_consent_revocation_stops_the_live_stream_at_once(
    world: World, app: web.Application, login: Login
) -> None:
    dr = await login("dr-grant")
    alice = await login("alice")
    token = await csrf_of(alice, "/consent")
    t = NOW + timedelta(minutes=5)
    async with dr.ws_connect("/ws") as ws:
        await _wait_for_viewers(app, 1)
        revoked = await alice.post(
            "/consent/revoke", data={"csrf_token": token, "clinician": "dr-grant"}
        )
        assert revoked.status == 200 and "can no longer see" in await revoked.text()
        # Published right after the revocation, before any periodic refresh could run.
        push_readings(world, [cgm("pat-a", t, 61.0)])
        push_alert(world, alert("al-a", "pat-a", AlertKind.URGENT_LOW, AlertLevel.URGENT))
        push_readings(world, [cgm("pat-c", t, 150.0)])
        message = await _receive(ws)
        assert message["patient_id"] == "pat-c"


async def test_logout_closes_the_live_channel(app: web.Application, login: Login) -> None:
    dr = await login("dr-grant")
    token = await csrf_of(dr)
    async with dr.ws_connect("/ws") as ws:
        await _wait_for_viewers(app, 1)
        await dr.post("/logout", data={"csrf_token": token}, allow_redirects=False)
        msg = await asyncio.wait_for(ws.receive(), 2.0)
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)


async def test_shutdown_closes_websockets(world: World) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from tests.dashboards.conftest import make_app

    app = make_app(world)
    client = TestClient(TestServer(app))
    await client.start_server()
    await login_as(client, "dr-grant")
    ws = await client.ws_connect("/ws")
    await _wait_for_viewers(app, 1)
    await client.close()  # runs on_shutdown and cleanup
    msg = await asyncio.wait_for(ws.receive(), 2.0)
    assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING)
    assert world.live.subscribers == 0  # the pump's subscription ended with the app


async def test_report_comes_in_three_formats(login: Login) -> None:
    dr = await login("dr-grant")
    page = await dr.get("/patients/pat-a/report?days=14")
    assert page.content_type == "text/html"
    # a dashboard page under the dashboard's policy: scripts from the site only, none inline
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"]
    assert "Ambulatory glucose profile" in await page.text()
    pdf = await dr.get("/patients/pat-a/report?days=14&format=pdf")
    assert pdf.content_type == "application/pdf"
    assert (await pdf.read()).startswith(b"%PDF-")
    doc = await (await dr.get("/patients/pat-a/report?days=7&format=json")).json()
    assert doc["patient"]["patient_id"] == "pat-a" and doc["metrics"]["days"] == 7
    bad = await dr.get("/patients/pat-a/report?format=docx")
    assert bad.status == 400


@pytest.mark.parametrize(
    ("next_path", "landing"),
    [
        ("/patients/pat-a?days=30", "/patients/pat-a?days=30"),
        ("//evil.example/x", "/"),  # protocol-relative: another site
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
    ],
)
async def test_login_returns_only_to_local_pages(
    login: Login, next_path: str, landing: str
) -> None:
    client = await login("")
    page = await client.get("/login", params={"next": next_path})
    token = CSRF_RE.search(await page.text())
    assert token is not None
    form = {
        "username": "dr-grant",
        "password": PASSWORD,
        "csrf_token": token.group(1),
        "next": next_path,
    }
    response = await client.post("/login", data=form, allow_redirects=False)
    assert response.status == 303 and response.headers["Location"] == landing


async def test_anonymous_page_visit_redirects_to_login_with_next(login: Login) -> None:
    client = await login("")
    response = await client.get("/patients/pat-a?days=7", allow_redirects=False)
    location = URL(response.headers["Location"])
    assert location.path == "/login"
    assert location.query.getall("next") == ["/patients/pat-a?days=7"]  # one value, "=" escaped


async def test_ledger_page_lists_signers_and_batches(world: World, login: Login) -> None:
    world.ledger.note = (
        "glucohub-local\n2\nq83ZbH6ZHQm1w2sCbyV5zYkXN6n8V3OQ4vJrgIh6mrU=\n\n"
        "— glucohub-local AAAA\n— witness.example/w1 BBBB\n"
    )
    dr = await login("dr-grant")
    page = await (await dr.get("/ledger")).text()
    assert "<li>glucohub-local (this log)</li>" in page
    assert "<li>witness.example/w1 (witness cosignature)</li>" in page
    assert 'href="/log/batch/2"' in page and 'href="/log/batch/1"' in page
    # Batch 1 holds only pat-a's records: bob's ledger page lists batch 2 (his part), not 1.
    bob = await login("bob")
    page = await (await bob.get("/ledger")).text()
    assert 'href="/log/batch/2"' in page and "/log/batch/1" not in page
    root = await login("root")  # the admin sees every batch, none of their records
    page = await (await root.get("/ledger")).text()
    assert "<td>1</td>" in page and 'href="/log/batch/' not in page


async def test_ledger_page_shows_quarantined_records(world: World, login: Login) -> None:
    world.ledger.quarantine.append(
        QuarantinedRecord(record="reading", row_id=7, patient_id="pat-b", reason="seq too big")
    )
    page = await (await (await login("root")).get("/ledger")).text()
    assert 'id="quarantine"' in page and "reading 7: seq too big" in page
    assert "pat-b" not in page


@pytest.mark.parametrize(
    ("role", "mine", "not_mine"),
    [("alice", "pat-a", "pat-b"), ("bob", "pat-b", "pat-a"), ("dr-grant", "pat-a", "pat-b")],
)
async def test_batch_views_hold_only_the_callers_patients(
    login: Login, role: str, mine: str, not_mine: str
) -> None:
    client = await login(role)
    response = await client.get("/log/batch/2")
    assert response.status == 200 and response.content_type == "application/json"
    records = (await response.json())["records"]
    assert records and {r["patient_id"] for r in records} == {mine}
    assert not_mine not in await response.text()
    for huge in ("99999999999999999999999", "1e9", "-1"):
        assert (await client.get(f"/log/batch/{huge}")).status == 404
