"""The app's typed state (AppKeys, RequestKeys) and the helpers every handler module shares."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from dashboards.access import Rule
from dashboards.accounts import Accounts, Session, User
from dashboards.live import Broadcaster
from gateway.clock import Clock
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

SESSION_COOKIE = "gh_session"
LOGIN_COOKIE = "gh_login"  # the login form's CSRF token, before there is a session
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"


@dataclass(slots=True, kw_only=True)
class Deps:
    settings: DashboardSettings
    read_model: ReadModel
    live: LiveFeed
    alerts: AlertControl
    ledger: LedgerView
    status: HubStatus
    accounts: Accounts
    clock: Clock
    viewer_queue_size: int
    sink: ReadingSink | None = None  # where Nightscout uploads go; None: uploads are refused
    treatments: TreatmentLog | None = None  # None: no treatments are taken or shown
    devices: DeviceControl | None = None  # None: patients cannot forget devices here
    documents: DocumentLog | None = None  # Nightscout devicestatus, profiles, deletions
    hub_logs: HubLogs | None = None  # a clinic's: every hub's log; None: a hub's own (ledger)
    storage: StorageLocation | None = None  # where the report worker reads readings itself
    broadcaster: Broadcaster = field(default_factory=Broadcaster)
    rules: dict[web.AbstractRoute, Rule] = field(default_factory=dict)
    sockets: set[web.WebSocketResponse] = field(default_factory=set)

    @property
    def secure_cookies(self) -> bool:
        return bool(self.settings.tls_cert) or self.settings.public_url.startswith("https://")


DEPS = web.AppKey("deps", Deps)
USER = web.RequestKey("user", User)
SESSION = web.RequestKey("session", Session)
VISIBLE = web.RequestKey("visible", frozenset)


def deps(request: web.Request) -> Deps:
    return request.app[DEPS]


def current_user(request: web.Request) -> User:
    """The logged-in user; only call from routes whose rule is not PUBLIC."""
    return request[USER]


def visible(request: web.Request) -> frozenset[str]:
    found: frozenset[str] = request.get(VISIBLE, frozenset())
    return found


def csrf_token(request: web.Request) -> str:
    session = request.get(SESSION)
    return session.csrf_token if session is not None else ""


def add_route(
    app: web.Application,
    method: str,
    path: str,
    handler: Handler,
    rule: Rule,
    *,
    name: str | None = None,
) -> None:
    """Register a route together with its access rule; the guard refuses routes without one."""
    route = app.router.add_route(method, path, handler, name=name)
    app[DEPS].rules[route] = rule
