"""Every route x every caller, on a real hub: the status the access rule gives, and no trace of a
patient the caller may not see anywhere in what is served (decoded JWS and base64 included).

Who sees whom (`dashboards.accounts.Accounts.visible_patients`): a clinician the patients who
granted consent (dr-alpha: A only; dr-none: nobody), a patient themselves, an admin NOBODY (the
admin manages the hub; no patient consented to it), anonymous callers nobody. Patient C is seen
by no caller at all. Public routes act on no one's behalf: they may show no patient.

Batch bodies and proofs (`/log/batch/{seq}[/proof]`) are for any signed-in user: they get a
batch when they may see at least one patient in it, and what is served holds records of those
patients only; a batch with none of theirs is a 404, as for one that does not exist.

The hub runs once for the module (`run_hub` with the dashboard, over the data directory that
`access_world.build` sealed). It seals nothing while the tests run (batch_max_seconds is an
hour), so the batches stay the four built; state-changing requests are chosen so that they
never change what a caller may see (consent goes to and from "dr-spare", logout ends a
session opened for that test only).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

import aiohttp
import pytest
import pytest_asyncio

from dashboards import accounts as accounts_module
from dashboards.app import create_app
from gateway.model import DeviceEvent, DeviceEventKind, Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.settings import DashboardSettings, load_settings
from gateway.units import Unit
from glucohub.accounts import open_accounts
from glucohub.runtime import Running, run_hub
from tests.dashboards.access_world import (
    ADMIN,
    CARE_TEAM,
    DR_ALPHA,
    DR_NONE,
    DR_SPARE,
    HUB_ID,
    MARKERS,
    PASSWORD,
    PT_A,
    PT_B,
    WARDS,
    AccessWorld,
    build,
)
from tests.dashboards.leaks import find_markers

pytestmark = pytest.mark.asyncio(loop_scope="module")

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
META_RE = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
ALL = frozenset(MARKERS)
WS_LISTEN_S = 1.0  # how long a WebSocket caller listens after the live events are sent


# -- callers ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Caller:
    name: str
    role: str | None  # "admin", "clinician", "patient"; None: not authenticated
    username: str | None
    # "none", "cookie", "token", "bad cookie", "bad token"; or a Nightscout uploader secret of
    # the patient in `sees`: "api-secret" (A's, may upload) or "nightscout bearer" (B's, reads)
    credential: str
    sees: frozenset[str]  # patient keys the access rule lets this caller see


def _pair(name: str, role: str, username: str, sees: str) -> list[Caller]:
    return [
        Caller(name=name, role=role, username=username, credential="cookie", sees=frozenset(sees)),
        Caller(
            name=f"{name}-token",
            role=role,
            username=username,
            credential="token",
            sees=frozenset(sees),
        ),
    ]


CALLERS = [
    Caller(name="anonymous", role=None, username=None, credential="none", sees=frozenset()),
    Caller(name="bad-cookie", role=None, username=None, credential="bad cookie", sees=frozenset()),
    Caller(name="bad-token", role=None, username=None, credential="bad token", sees=frozenset()),
    *_pair("admin", "admin", ADMIN, ""),
    *_pair("dr-consent-A", "clinician", DR_ALPHA, "A"),
    *_pair("dr-no-consent", "clinician", DR_NONE, ""),
    *_pair("patient-A", "patient", PT_A, "A"),
    *_pair("patient-B", "patient", PT_B, "B"),
    # Nightscout uploader secrets are nobody's user credential: anonymous on every user route
    # (a Bearer one is a bad user token there); on the Nightscout routes they see their patient.
    Caller(
        name="nightscout-A", role=None, username=None, credential="api-secret", sees=frozenset("A")
    ),
    Caller(
        name="nightscout-B-read",
        role=None,
        username=None,
        credential="nightscout bearer",
        sees=frozenset("B"),
    ),
]
UPLOADER_CREDENTIALS = ("api-secret", "nightscout bearer")


# -- the served hub -----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Session:
    cookie: str
    csrf: str


@dataclass(slots=True, kw_only=True)
class Served:
    world: AccessWorld
    running: Running
    url: str
    http: aiohttp.ClientSession
    sessions: dict[str, Session]  # username -> a logged-in session
    routes: set[tuple[str, str]]  # (method, canonical path) from the app's router
    tile_size: int


async def login(base: str, username: str) -> Session:
    """A fresh session for `username`, through the login form like a browser."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(f"{base}/login") as page:
            token = CSRF_RE.search(await page.text())
        assert token is not None
        form = {"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
        async with browser.post(f"{base}/login", data=form, allow_redirects=False) as response:
            assert response.status == 303, f"login of {username} failed: {response.status}"
        cookie = next(c.value for c in browser.cookie_jar if c.key == "gh_session")
        async with browser.get(f"{base}/alerts") as page:
            found = META_RE.search(await page.text())
        assert found is not None and found.group(1)
        return Session(cookie=cookie, csrf=found.group(1))


def _router_routes(running: Running, db: Path) -> set[tuple[str, str]]:
    """The (method, path) of every route the dashboard app registers."""
    accounts = open_accounts(db)
    try:
        app = create_app(
            settings=DashboardSettings(port=0),
            read_model=running.read_model,
            live=running.hub.fanout,
            alerts=running.alerts,
            ledger=running.ledger_view,
            status=running.hub,
            accounts=accounts,
        )
        return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    finally:
        accounts.close()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    data_dir = tmp_path_factory.mktemp("access") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(accounts_module, "SCRYPT_N", 2**10)  # many logins; the cost is not tested
        world = build(data_dir, datetime.now(UTC).replace(microsecond=0))
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_HUB__HUB_ID": HUB_ID,
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "3600",
        },
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    holder: list[Running] = []

    def on_ready(running: Running) -> None:
        holder.append(running)
        ready.set()

    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=on_ready))
    await asyncio.wait_for(ready.wait(), 20)
    running = holder[0]
    assert running.url is not None
    try:
        sessions = {u: await login(running.url, u) for u in (ADMIN, DR_ALPHA, DR_NONE, PT_A, PT_B)}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            yield Served(
                world=world,
                running=running,
                url=running.url,
                http=http,
                sessions=sessions,
                routes=await asyncio.to_thread(_router_routes, running, world.db),
                tile_size=len(world.batch_patients),
            )
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# -- requests -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Req:
    method: str
    path: str
    about: frozenset[str] | None = None  # patient keys the request is scoped to (None: none)
    form: dict[str, str] | None = None  # sent form-encoded, with the caller's CSRF token
    json: bool = False  # Accept: application/json (and X-CSRF-Token on a POST)
    ok: int = 200  # status when the caller passes every check
    patient_ok: int | None = None  # ... when that caller is a patient, if different
    shows: tuple[str, ...] = ()  # marker labels of `about` that a 200 must contain
    fresh_session: bool = False  # the request ends its session: log in anew for it
    body: bytes | None = None  # sent as application/json


Fill = Callable[[Served], list[Req]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RouteCase:
    method: str
    path: str  # as the router spells it
    access: str  # "public", "user", "clinician", "patient", "uploader", "uploader3" (v3)
    token_ok: bool = False
    fill: Fill


def each_patient(
    build_req: Callable[[str, str], list[Req]],
) -> Fill:
    """One or more requests per patient A, B, C (path or query), scoped to that patient."""

    def fill(_: Served) -> list[Req]:
        return [r for key, m in MARKERS.items() for r in build_req(key, m.patient_id)]

    return fill


def each_alert(build_req: Callable[[str, str], list[Req]]) -> Fill:
    def fill(s: Served) -> list[Req]:
        return [r for key, a in s.world.urgent_low_alert.items() for r in build_req(key, a)]

    return fill


def each_batch(suffix: str) -> Fill:
    """Every sealed batch, scoped to the patients of its records; then one that does not
    exist and one far past the log (nobody's: 404 for every signed-in user). A segment that
    is no number does not match the route at all (404 for anyone, test_fuzz)."""

    def fill(s: Served) -> list[Req]:
        sealed = sorted(s.world.batch_patients.items())
        return [
            *(
                Req(
                    method="GET",
                    path=f"/log/batch/{seq}{suffix}",
                    about=keys,
                    shows=("patient id",),
                )
                for seq, keys in sealed
            ),
            *(
                Req(method="GET", path=f"/log/batch/{seq}{suffix}", about=frozenset())
                for seq in (len(sealed) + 10, 10**17)
            ),
        ]

    return fill


def one(req: Req) -> Fill:
    return lambda _: [req]


def get(path: str, *, patient_ok: int | None = None) -> Fill:
    return one(Req(method="GET", path=path, patient_ok=patient_ok))


def _triage_queries() -> list[str]:
    """The triage list's query strings: each patient searched by name and by id, the team,
    each ward, pages and malformed values (read as not given)."""
    names = [f"?q={quote(m.display_name.split()[1].lower())}" for m in MARKERS.values()]
    ids = [f"?q={quote(m.patient_id)}" for m in MARKERS.values()]
    units = [
        f"?team={quote(CARE_TEAM)}",
        *(f"?ward={quote(w)}" for w in sorted(set(WARDS.values()))),
    ]
    return ["", *names, *ids, *units, "?page=2", "?page=-1&q=", "?page=x&team=&ward="]


def _triage(path: str, *, patient_ok: int | None = None) -> Fill:
    return lambda _: [
        Req(method="GET", path=path + q, patient_ok=patient_ok) for q in _triage_queries()
    ]


def _tiles(s: Served) -> list[Req]:
    n = s.tile_size
    return [
        Req(method="GET", path=f"/log/tile/{p}") for p in (f"0/000.p/{n}", f"entries/000.p/{n}")
    ]


def _page(key: str, pid: str) -> list[Req]:
    scoped = frozenset(key)
    return [
        Req(method="GET", path=f"/patients/{pid}", about=scoped, shows=("display name",)),
        Req(method="GET", path=f"/patients/{pid}?days=7", about=scoped, shows=("display name",)),
    ]


def _report(key: str, pid: str) -> list[Req]:
    return [
        Req(
            method="GET",
            path=f"/patients/{pid}/report?format={fmt}",
            about=frozenset(key),
            shows=("patient id", "display name"),
        )
        for fmt in ("html", "pdf", "json")
    ]


def _report_pdf(key: str, pid: str) -> list[Req]:
    return [
        Req(
            method="GET",
            path=f"/patients/{pid}/report.pdf{query}",
            about=frozenset(key),
            shows=("patient id", "display name"),
        )
        for query in ("", "?days=7")
    ]


def _snooze(key: str, pid: str) -> list[Req]:
    form = {"kind": "urgent_low", "minutes": "5"}
    return [
        Req(method="POST", path=f"/patients/{pid}/snooze", about=frozenset(key), form=form, ok=303),
        Req(
            method="POST",
            path=f"/patients/{pid}/snooze",
            about=frozenset(key),
            form=form,
            json=True,
        ),
    ]


def _ack(key: str, alert_id: str) -> list[Req]:
    return [
        Req(method="POST", path=f"/alerts/{alert_id}/ack", about=frozenset(key), form={}, ok=303),
        Req(
            method="POST",
            path=f"/alerts/{alert_id}/ack",
            about=frozenset(key),
            form={},
            json=True,
            shows=(),
        ),
    ]


def _api_ack(key: str, alert_id: str) -> list[Req]:
    return [
        Req(
            method="POST",
            path=f"/api/v1/alerts/{alert_id}/ack",
            about=frozenset(key),
            json=True,
            shows=("alert message",),
        )
    ]


ROUTES = [
    # public: no login, and no patient's data
    RouteCase(method="GET", path="/login", access="public", fill=get("/login")),
    # without the login form's token: refused before the password is looked at (no lockout)
    RouteCase(
        method="POST",
        path="/login",
        access="public",
        fill=one(
            Req(method="POST", path="/login", form={"username": PT_A, "password": "x"}, ok=403)
        ),
    ),
    RouteCase(method="GET", path="/healthz", access="public", fill=get("/healthz")),
    RouteCase(method="GET", path="/metrics", access="public", fill=get("/metrics")),
    RouteCase(method="GET", path="/log/checkpoint", access="public", fill=get("/log/checkpoint")),
    RouteCase(method="GET", path="/log/key", access="public", fill=get("/log/key")),
    RouteCase(method="GET", path="/log/tile/{path}", access="public", fill=_tiles),
    RouteCase(
        method="GET",
        path="/log/consistency",
        access="public",
        fill=lambda s: [
            Req(method="GET", path=f"/log/consistency?old={old}&new={s.tile_size}")
            for old in range(1, s.tile_size + 1)
        ],
    ),
    RouteCase(
        method="POST",
        path="/log/cosignature",
        access="public",
        # this hub trusts no witness: any line is refused, with the reason
        fill=one(Req(method="POST", path="/log/cosignature", form={"x": "y"}, ok=400)),
    ),
    RouteCase(
        method="GET", path="/api/v1/openapi.json", access="public", fill=get("/api/v1/openapi.json")
    ),
    RouteCase(method="GET", path="/docs/api", access="public", fill=get("/docs/api")),
    RouteCase(
        method="GET",
        path="/static",
        access="public",
        fill=lambda _: [
            Req(method="GET", path=f"/static/{f}")
            for f in ("app.js", "style.css", "report.js", "report.css")
        ],
    ),
    RouteCase(
        method="HEAD",
        path="/static",
        access="public",
        fill=lambda _: [Req(method="HEAD", path="/static/app.js")],
    ),
    # pages
    RouteCase(
        method="POST",
        path="/logout",
        access="user",
        fill=one(Req(method="POST", path="/logout", form={}, ok=303, fresh_session=True)),
    ),
    RouteCase(
        method="POST",
        path="/prefs",
        access="user",
        fill=one(Req(method="POST", path="/prefs", form={"unit": Unit.MG_DL.value}, ok=303)),
    ),
    RouteCase(method="GET", path="/", access="user", fill=_triage("/", patient_ok=303)),
    RouteCase(
        method="GET", path="/partials/triage", access="user", fill=_triage("/partials/triage")
    ),
    RouteCase(method="GET", path="/alerts", access="user", fill=get("/alerts")),
    RouteCase(method="GET", path="/partials/alerts", access="user", fill=get("/partials/alerts")),
    RouteCase(method="POST", path="/alerts/{alert_id}/ack", access="user", fill=each_alert(_ack)),
    RouteCase(method="GET", path="/patients/{id}", access="user", fill=each_patient(_page)),
    RouteCase(
        method="GET",
        path="/patients/{id}/live",
        access="user",
        fill=each_patient(
            lambda k, pid: [Req(method="GET", path=f"/patients/{pid}/live", about=frozenset(k))]
        ),
    ),
    RouteCase(
        method="GET", path="/patients/{id}/report", access="user", fill=each_patient(_report)
    ),
    RouteCase(
        method="GET",
        path="/patients/{id}/report.pdf",
        access="user",
        fill=each_patient(_report_pdf),
    ),
    RouteCase(
        method="POST", path="/patients/{id}/snooze", access="user", fill=each_patient(_snooze)
    ),
    RouteCase(
        method="POST",
        path="/patients/{id}/notes",
        access="clinician",
        fill=each_patient(
            lambda k, pid: [
                Req(
                    method="POST",
                    path=f"/patients/{pid}/notes",
                    about=frozenset(k),
                    form={"body": "access matrix note"},
                    ok=303,
                )
            ]
        ),
    ),
    RouteCase(method="GET", path="/ledger", access="user", fill=get("/ledger")),
    # batch bodies and proofs: every sealed batch
    RouteCase(method="GET", path="/log/batch/{seq}", access="user", fill=each_batch("")),
    RouteCase(
        method="GET", path="/log/batch/{seq}/proof", access="user", fill=each_batch("/proof")
    ),
    # consent: the patient's own; dr-spare is nobody's caller
    RouteCase(method="GET", path="/me", access="patient", fill=get("/me")),
    RouteCase(method="GET", path="/me/live", access="patient", fill=get("/me/live")),
    RouteCase(
        method="GET", path="/me/readings.csv", access="patient", fill=get("/me/readings.csv")
    ),
    RouteCase(
        method="GET",
        path="/me/glucose.fhir.json",
        access="patient",
        fill=get("/me/glucose.fhir.json"),
    ),
    # forgetting a device nobody has: a 404 for every patient, and nothing changes
    RouteCase(
        method="POST",
        path="/me/devices/{device_id}/forget",
        access="patient",
        fill=one(Req(method="POST", path="/me/devices/no-such-device/forget", form={}, ok=404)),
    ),
    RouteCase(method="GET", path="/consent", access="patient", fill=get("/consent")),
    RouteCase(
        method="POST",
        path="/consent/grant",
        access="patient",
        fill=one(Req(method="POST", path="/consent/grant", form={"clinician": DR_SPARE})),
    ),
    RouteCase(
        method="POST",
        path="/consent/revoke",
        access="patient",
        fill=one(Req(method="POST", path="/consent/revoke", form={"clinician": DR_SPARE})),
    ),
    # the JSON API and FHIR: session cookie (with X-CSRF-Token on POST) or Bearer token
    RouteCase(
        method="GET", path="/api/v1/me", access="user", token_ok=True, fill=get("/api/v1/me")
    ),
    RouteCase(
        method="GET",
        path="/api/v1/patients",
        access="user",
        token_ok=True,
        fill=get("/api/v1/patients"),
    ),
    RouteCase(
        method="GET",
        path="/api/v1/patients/{id}",
        access="user",
        token_ok=True,
        fill=each_patient(
            lambda k, pid: [
                Req(
                    method="GET",
                    path=f"/api/v1/patients/{pid}",
                    about=frozenset(k),
                    shows=("display name",),
                )
            ]
        ),
    ),
    RouteCase(
        method="GET",
        path="/api/v1/patients/{id}/readings",
        access="user",
        token_ok=True,
        fill=each_patient(
            lambda k, pid: [
                Req(
                    method="GET",
                    path=f"/api/v1/patients/{pid}/readings",
                    about=frozenset(k),
                    shows=("glucose value", "meter mmol/L value", "CGM device id"),
                )
            ]
        ),
    ),
    RouteCase(
        method="GET",
        path="/api/v1/alerts",
        access="user",
        token_ok=True,
        fill=get("/api/v1/alerts"),
    ),
    RouteCase(
        method="POST",
        path="/api/v1/alerts/{alert_id}/ack",
        access="user",
        token_ok=True,
        fill=each_alert(_api_ack),
    ),
    RouteCase(
        method="GET",
        path="/fhir/Observation",
        access="user",
        token_ok=True,
        fill=each_patient(
            lambda k, pid: [
                Req(
                    method="GET",
                    path=f"/fhir/Observation?patient={pid}",
                    about=frozenset(k),
                    shows=("patient id", "CGM device id", "meter device id"),
                ),
                Req(
                    method="GET",
                    path=f"/fhir/Observation?patient={pid}&code=cgm-summary",
                    about=frozenset(k),
                    shows=("patient id",),
                ),
            ]
        ),
    ),
    # Nightscout API v1: an uploader secret names one patient; verifyauth answers everyone
    *[
        RouteCase(
            method="GET",
            path=path,
            access="uploader",
            fill=one(Req(method="GET", path=path, about=frozenset("ABC"))),
        )
        for path in (
            "/api/v1/entries",
            "/api/v1/entries/",
            "/api/v1/entries.json",
            "/api/v1/status",
            "/api/v1/status.json",
            "/api/v1/verifyauth",
        )
    ],
    RouteCase(
        method="GET",
        path="/api/v1/entries/{spec}",
        access="uploader",
        fill=lambda _: [
            Req(
                method="GET",
                path=f"/api/v1/entries/{spec}?count=1000",
                about=frozenset("ABC"),
                shows=shows,
            )
            for spec, shows in (
                ("sgv.json", ("CGM device id",)),
                ("current.json", ("CGM device id",)),
                ("mbg", ("meter device id",)),
            )
        ],
    ),
    *[
        RouteCase(
            method="POST",
            path=path,
            access="uploader",
            fill=one(Req(method="POST", path=path, about=frozenset("ABC"), body=b"[]")),
        )
        for path in ("/api/v1/entries", "/api/v1/entries/", "/api/v1/entries.json")
    ],
    *[
        RouteCase(
            method=method,
            path=path,
            access="uploader",
            fill=one(
                Req(
                    method=method,
                    path=path,
                    about=frozenset("ABC"),
                    body=None if method == "GET" else b"[]",
                    shows=("treatment note",) if method == "GET" else (),
                )
            ),
        )
        for method in ("GET", "POST", "PUT")
        for path in ("/api/v1/treatments", "/api/v1/treatments/", "/api/v1/treatments.json")
    ],
    # Nightscout API v3: only a Bearer uploader secret (B's, read-only) gets in; it reads
    # B's own data and may not write
    RouteCase(method="GET", path="/api/v3/version", access="public", fill=get("/api/v3/version")),
    *[
        RouteCase(
            method="GET",
            path=path,
            access="uploader3",
            fill=one(Req(method="GET", path=path, about=frozenset("ABC"))),
        )
        for path in ("/api/v3/status", "/api/v3/lastModified")
    ],
    RouteCase(
        method="GET",
        path="/api/v3/{collection}",
        access="uploader3",
        fill=lambda _: [
            Req(
                method="GET",
                path=f"/api/v3/{collection}?sort$desc=date",
                about=frozenset("ABC"),
                shows=shows,
            )
            for collection, shows in (
                ("entries", ("CGM device id",)),
                ("treatments", ("treatment note",)),
                ("devicestatus", ()),
            )
        ],
    ),
    RouteCase(
        method="POST",
        path="/api/v3/{collection}",
        access="uploader3",
        fill=lambda _: [
            Req(method="POST", path=f"/api/v3/{collection}", about=frozenset("ABC"), body=body)
            for collection, body in (("treatments", _V3_NOTE), ("entries", _V3_SGV))
        ],
    ),
    RouteCase(
        method="GET",
        path="/api/v3/{collection}/history",
        access="uploader3",
        # without a Last-Modified header: Nightscout's 400 (history/operation.js)
        fill=one(Req(method="GET", path="/api/v3/treatments/history", ok=400)),
    ),
    RouteCase(
        method="GET",
        path="/api/v3/{collection}/history/{lastModified}",
        access="uploader3",
        fill=lambda _: [
            Req(
                method="GET",
                path=f"/api/v3/{collection}/history/{_days_ago_ms(3)}",
                about=frozenset("ABC"),
                shows=shows,
            )
            for collection, shows in (
                ("entries", ("CGM device id",)),
                ("treatments", ("treatment note",)),
            )
        ],
    ),
    RouteCase(
        method="GET",
        path="/api/v3/{collection}/{identifier}",
        access="uploader3",
        fill=lambda _: [
            Req(
                method="GET", path=f"/api/v3/{c}/no-such-identifier", about=frozenset("ABC"), ok=404
            )
            for c in ("entries", "treatments")
        ],
    ),
    *[
        RouteCase(
            method=method,
            path="/api/v3/{collection}/{identifier}",
            access="uploader3",
            fill=one(
                Req(
                    method=method,
                    path="/api/v3/treatments/no-such-identifier",
                    about=frozenset("ABC"),
                    body=None if method == "DELETE" else b'{"insulin": 1.0}',
                    ok=404,
                )
            ),
        )
        for method in ("PUT", "PATCH", "DELETE")
    ],
    *[
        RouteCase(
            method="GET",
            path=path,
            access="uploader",
            fill=one(
                Req(method="GET", path=path, about=frozenset("ABC"), shows=("device event detail",))
            ),
        )
        for path in (
            "/api/v1/devicestatus",
            "/api/v1/devicestatus/",
            "/api/v1/devicestatus.json",
            "/api/v1/profile",
            "/api/v1/profile/",
            "/api/v1/profile.json",
            "/api/v1/profile/current",
        )
    ],
    *[
        RouteCase(
            method="POST",
            path=path,
            access="uploader",
            fill=one(Req(method="POST", path=path, about=frozenset("ABC"), body=b"[]")),
        )
        for path in (
            "/api/v1/devicestatus",
            "/api/v1/devicestatus/",
            "/api/v1/devicestatus.json",
            "/api/v1/profile",
            "/api/v1/profile/",
            "/api/v1/profile.json",
        )
    ],
    # DELETEs whose filters match nothing: the world's records stay for the other rows
    *[
        RouteCase(
            method="DELETE",
            path=route,
            access="uploader",
            fill=one(Req(method="DELETE", path=path, about=frozenset("ABC"))),
        )
        for route, path in (
            ("/api/v1/entries", "/api/v1/entries?find[sgv][$gt]=1000"),
            ("/api/v1/entries/", "/api/v1/entries/?find[sgv][$gt]=1000"),
            ("/api/v1/entries/{spec}", "/api/v1/entries/sgv?find[sgv][$gt]=1000"),
            ("/api/v1/treatments", "/api/v1/treatments?find[eventType]=Nothing"),
            ("/api/v1/treatments/", "/api/v1/treatments/?find[eventType]=Nothing"),
            ("/api/v1/treatments/{id}", "/api/v1/treatments/ffffffffffffffffffffffff"),
        )
    ],
    RouteCase(
        method="GET",
        path="/api/v2/authorization/request/{token}",
        access="uploader",
        # no access token in the world: refused for everyone (test_authorization.py grants)
        fill=one(Req(method="GET", path="/api/v2/authorization/request/nobody-0000", ok=401)),
    ),
    # the WebSocket: see test_websocket below
    RouteCase(method="GET", path="/ws", access="user", fill=lambda _: []),
]


def _days_ago_ms(days: int) -> int:
    return int((datetime.now(UTC) - timedelta(days=days)).timestamp() * 1000)


_V3_NOTE = (
    b'{"date": 1767225600000, "utcOffset": 0, "app": "AAPS", "eventType": "Note",'
    b' "notes": "matrix"}'
)
_V3_SGV = b'{"type": "sgv", "sgv": 120.0, "date": 1767225600000, "utcOffset": 0, "app": "AAPS"}'


# -- the rule -----------------------------------------------------------------------------


def expected_status(case: RouteCase, caller: Caller, req: Req) -> int:
    """The access rule, written out: the status `caller` must get for `req`."""
    if case.access == "public":
        return req.ok  # public routes ignore every credential
    if case.access == "uploader3":
        # lib/api3/security.js: a Bearer token or 401; a missing permission is 403
        if caller.credential != "nightscout bearer":
            return 401
        return 403 if req.method != "GET" else req.ok
    if case.access == "uploader":
        if req.path == "/api/v1/verifyauth":
            return 200  # lib/api/verifyauth.js: the body says what the credential may do
        if caller.credential not in UPLOADER_CREDENTIALS:
            return 401
        if req.method in ("POST", "PUT", "DELETE") and caller.credential != "api-secret":
            return 401  # B's secret is read-only
        return req.ok
    if caller.credential in ("bad token", "nightscout bearer"):
        return 401
    if caller.credential == "token" and not case.token_ok:
        return 401  # tokens only where the route accepts them
    if caller.role is None:  # anonymous, or a cookie that is no session
        wants_json = req.json or req.path.startswith(("/api/", "/fhir/"))
        page = req.method == "GET" and not wants_json and req.path != "/ws"
        return 303 if page else 401  # a page sends the browser to /login
    allowed = {
        "user": ("admin", "clinician", "patient"),
        "clinician": ("clinician",),
        "patient": ("patient",),
    }[case.access]
    if caller.role not in allowed:
        return 403
    if req.about is not None and not req.about & caller.sees:
        return 404  # the same as for a patient (or batch) that does not exist
    if caller.role == "patient" and req.patient_ok is not None:
        return req.patient_ok
    return req.ok


def forbidden_markers(case: RouteCase, caller: Caller) -> dict[str, str]:
    """label -> marker for everything of every patient the caller may not see."""
    hidden = ALL if case.access == "public" else ALL - caller.sees
    return {
        f"patient {key}'s {label}": marker
        for key in sorted(hidden)
        for label, marker in MARKERS[key].labelled().items()
    }


def _headers(served: Served, caller: Caller, session: Session | None) -> dict[str, str]:
    if caller.credential == "cookie":
        assert session is not None
        return {"Cookie": f"gh_session={session.cookie}"}
    if caller.credential == "bad cookie":
        return {"Cookie": "gh_session=bm90LWEtc2Vzc2lvbi1hdC1hbGwtMTIzNDU2"}
    if caller.credential == "token":
        assert caller.username is not None
        return {"Authorization": f"Bearer {served.world.tokens[caller.username]}"}
    if caller.credential == "bad token":
        return {"Authorization": "Bearer ghk_bm90LWEtdG9rZW4tYXQtYWxsLTEyMzQ1Njc4OTA"}
    if caller.credential == "api-secret":
        secret = served.world.nightscout["A"]
        return {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}
    if caller.credential == "nightscout bearer":
        return {"Authorization": f"Bearer {served.world.nightscout['B']}"}
    return {}


async def send(served: Served, caller: Caller, req: Req) -> tuple[int, bytes]:
    session: Session | None = None
    if caller.credential == "cookie":
        assert caller.username is not None
        session = served.sessions[caller.username]
        if req.fresh_session:
            session = await login(served.url, caller.username)
    headers = _headers(served, caller, session)
    csrf = session.csrf if session is not None else ""
    data: dict[str, str] | None = None
    if req.json:
        headers["Accept"] = "application/json"
        if req.method == "POST" and csrf:
            headers["X-CSRF-Token"] = csrf
    if req.form is not None:
        data = {**req.form, "csrf_token": csrf} if csrf else dict(req.form)
    sent: dict[str, str] | bytes | None = data
    if req.body is not None:
        headers["Content-Type"] = "application/json"
        sent = req.body
    async with served.http.request(
        req.method, served.url + req.path, headers=headers, data=sent, allow_redirects=False
    ) as response:
        return response.status, await response.read()


def _without_echo(body: bytes, req: Req) -> bytes:
    """The body without the triage search box's echo of what the caller typed (`?q=`): their
    own words, whatever they are, tell them nothing. Everything else is checked."""
    query = parse_qs(urlsplit(req.path).query).get("q", [""])[0]
    if not query:
        return body
    return body.replace(f'name="q" value="{html.escape(query)}"'.encode(), b'name="q" value=""')


def _describe(caller: Caller, req: Req) -> str:
    return f"{req.method} {req.path}{' (JSON)' if req.json else ''} as {caller.name}"


# -- the tests ----------------------------------------------------------------------------


def _case_id(case: RouteCase) -> str:
    return f"{case.method} {case.path}"


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c.name)
@pytest.mark.parametrize("case", [c for c in ROUTES if c.path != "/ws"], ids=_case_id)
async def test_route(served: Served, case: RouteCase, caller: Caller) -> None:
    problems: list[str] = []
    forbidden = forbidden_markers(case, caller)
    requests = case.fill(served)
    assert requests, f"{_case_id(case)} has no request to send"
    for req in requests:
        status, body = await send(served, caller, req)
        what = _describe(caller, req)
        want = expected_status(case, caller, req)
        if status != want:
            problems.append(f"{what}: status {status}, the access rule says {want}")
        for label, marker, where in find_markers(_without_echo(body, req), forbidden):
            problems.append(f"LEAK {what} (status {status}): {label} {marker!r} in the {where}")
        if status == 200 and req.about is not None and req.shows:
            for key in sorted(req.about & caller.sees):
                labelled = MARKERS[key].labelled()
                wanted = {f"patient {key}'s {x}": labelled[x] for x in req.shows}
                shown = {label for label, _, _ in find_markers(body, wanted)}
                for label in sorted(set(wanted) - shown):
                    problems.append(f"{what}: {label} missing from a 200 it should be in")
    assert not problems, "\n".join(problems)


async def _live_round(served: Served) -> None:
    """A reading and an alert for every patient: a sensor error raised, then cleared by the
    patient's next CGM reading (two alert transitions) and the reading itself."""
    now = datetime.now(UTC)
    readings: list[Reading] = []
    events: list[DeviceEvent] = []
    for key, m in MARKERS.items():
        seq = served.world.live_seq[key] = served.world.live_seq[key] + 1
        events.append(
            DeviceEvent(
                patient_id=m.patient_id,
                device_id=m.cgm_id,
                kind=DeviceEventKind.SENSOR_ERROR,
                time=now - timedelta(seconds=2),
            )
        )
        readings.append(
            Reading(
                patient_id=m.patient_id,
                device_id=m.cgm_id,
                kind=ReadingKind.CGM_GLUCOSE,
                value=float(m.live_glucose),
                unit=Unit.MG_DL,
                time=now,
                source=Source.MQTT,
                seq=seq,
            )
        )
    origin = Origin(source=Source.MQTT, topic="access-matrix")
    outcome = await served.running.hub.submit(origin=origin, readings=readings, events=events)
    assert outcome.accepted == len(MARKERS)


@pytest.mark.parametrize("caller", CALLERS, ids=lambda c: c.name)
async def test_websocket(served: Served, caller: Caller) -> None:
    """GET /ws: connect, let every patient produce a reading and alerts, listen for a bounded
    time; only the caller's own patients may come through (session cookies only: no tokens)."""
    (case,) = [c for c in ROUTES if c.path == "/ws"]
    req = Req(method="GET", path="/ws", ok=101)
    want = expected_status(case, caller, req)
    session = served.sessions.get(caller.username or "") if caller.credential == "cookie" else None
    headers = _headers(served, caller, session)
    what = _describe(caller, req)
    try:
        ws = await served.http.ws_connect(served.url + "/ws", headers=headers)
    except aiohttp.WSServerHandshakeError as exc:
        assert exc.status == want, f"{what}: status {exc.status}, the access rule says {want}"
        return
    assert want == 101, f"{what}: connected, the access rule says {want}"
    received: list[str] = []
    try:
        await asyncio.sleep(0.2)  # the viewer registers before anything is published
        await _live_round(served)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WS_LISTEN_S
        while (left := deadline - loop.time()) > 0:
            try:
                message = await ws.receive(timeout=left)
            except TimeoutError:
                break
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            received.append(message.data)
    finally:
        await ws.close()
    body = "\n".join(received).encode()
    problems = [
        f"LEAK {what}: {label} {marker!r} in the {where} of a live message"
        for label, marker, where in find_markers(body, forbidden_markers(case, caller))
    ]
    for key in sorted(caller.sees):
        m = MARKERS[key]
        if m.live_glucose not in body.decode() or m.cgm_id not in body.decode():
            problems.append(f"{what}: patient {key}'s live reading and alert never arrived")
    assert not problems, "\n".join(problems)


async def test_the_matrix_covers_every_route(served: Served) -> None:
    """A route added to the app without a row here fails; so does a row for a removed route."""
    covered = {(c.method, c.path) for c in ROUTES}
    missing = sorted(served.routes - covered)
    stale = sorted(covered - served.routes)
    assert not missing, f"routes with no row in the access matrix: {missing}"
    assert not stale, f"rows in the access matrix for routes the app does not have: {stale}"


@pytest.mark.parametrize(
    ("path", "shows"),
    [
        ("/me/readings.csv", ("patient id", "CGM device id", "glucose value", "meter mg/dL value")),
        ("/me/glucose.fhir.json", ("patient id", "CGM device id", "meter device id")),
    ],
)
async def test_a_patients_downloads_hold_their_own_record(
    served: Served, path: str, shows: tuple[str, ...]
) -> None:
    """test_route proves no one else's data is in them; this, that the patient's own is."""
    for caller in CALLERS:
        if caller.role != "patient" or caller.credential != "cookie":
            continue
        status, body = await send(served, caller, Req(method="GET", path=path))
        assert status == 200, (path, caller.name)
        (key,) = caller.sees
        labelled = MARKERS[key].labelled()
        wanted = {label: labelled[label] for label in shows}
        found = {label for label, _, _ in find_markers(body, wanted)}
        assert found == set(shows), (path, caller.name, set(shows) - found)


def _triage_matches(query: str) -> set[str]:
    """The patient keys a triage query selects, worked out from the world's data."""
    matches = set(MARKERS)
    for part in query.lstrip("?").split("&"):
        name, _, value = part.partition("=")
        value = unquote(value)
        if name == "q" and value:
            matches &= {
                k
                for k, m in MARKERS.items()
                if value.casefold() in m.display_name.casefold() or value in m.patient_id
            }
        elif name == "team" and value:
            matches &= set(MARKERS) if value == CARE_TEAM else set()
        elif name == "ward" and value:
            matches &= {k for k in MARKERS if WARDS[k] == value}
    return matches


@pytest.mark.parametrize("path", ["/", "/partials/triage"])
async def test_triage_queries_show_exactly_the_visible_matches(served: Served, path: str) -> None:
    """test_route proves no hidden patient's data is on the list; this, that each visible
    patient a search or filter selects is there, and no ward of a hidden patient is offered."""
    problems = []
    for caller in CALLERS:
        if caller.credential != "cookie" or (path == "/" and caller.role == "patient"):
            continue
        for query in _triage_queries():
            status, body = await send(served, caller, Req(method="GET", path=path + query))
            if status != 200:
                problems.append(f"{caller.name} {path}{query}: status {status}")
                continue
            text = body.decode()
            wanted = _triage_matches(query) & caller.sees
            shown = {k for k, m in MARKERS.items() if m.display_name in text}
            if shown != wanted:
                problems.append(f"{caller.name} {path}{query}: shows {shown}, expected {wanted}")
            if path == "/":
                # The count and the pages are of the visible matches only (ranked in SQL).
                count = (
                    f"Patients 1–{len(wanted)} of {len(wanted)}, most urgent first"
                    if wanted
                    else "No patients"
                )
                if f'<p class="sub" id="triage-count">{count}</p>' not in text:
                    problems.append(f"{caller.name} {query}: not counted as {count!r}")
                offered = {w for w in set(WARDS.values()) if f"<option>{w}</option>" in text}
                offered |= {
                    w for w in set(WARDS.values()) if f"<option selected>{w}</option>" in text
                }
                expected_wards = {WARDS[k] for k in caller.sees}
                if offered != expected_wards:
                    problems.append(f"{caller.name} {query}: wards offered {offered}")
    assert not problems, "\n".join(problems)


async def test_the_world_has_the_batches_the_matrix_needs(served: Served) -> None:
    """The leak needs these shapes: a batch mixing A and B, and a batch with no readings."""
    batches = served.world.batch_patients
    assert any({"A", "B"} <= keys for keys in batches.values())
    assert any(not served.world.batch_has_readings[seq] for seq in batches)
    assert any(keys == {"A"} for keys in batches.values())
