"""First-run setup: a hub with no patient serves /setup, reachable only with a one-time code.

The code is printed on the console (the systemd journal) when the hub starts; only its hash is
kept, compared in constant time, and wrong guesses slow down. Entering it opens a setup
session (a cookie, plus a token in every form). The steps: who the hub is for (a patient and
their dashboard account), the clinic (nothing to configure here yet), the devices (scan, pair,
first reading) and, optionally, a phone app (xDrip+, Juggluco: the hub's Nightscout address
and a new secret, as text and a QR code). Finishing ends the session and the code; every
/setup route is then a 404, and after a restart they are not even registered (the hub has
a patient).

Bluetooth is not this module's business: a `SetupBackend` (wired in glucohub/) scans, pairs
and fetches the first records, and says what went wrong in plain words (`SetupProblem`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import io
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import segno
from aiohttp import web
from markupsafe import Markup

from dashboards import jinja, timefmt
from dashboards.access import Access, Rule
from dashboards.accounts import AccountError, Role, check_password_strength
from dashboards.context import DEPS, add_route
from dashboards.nightscout.links import links
from gateway.clock import Clock
from gateway.errors import UnknownUnit
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind
from gateway.units import Unit, format_glucose, glucose_unit

CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off a screen
CODE_LENGTH = 8
FREE_ATTEMPTS = 3  # wrong codes before each further attempt must wait
MAX_WAIT_S = 300.0
SESSION_COOKIE = "gh_setup"
TOKEN_FIELD = "setup_token"
SCAN_SECONDS = 5.0
PASSKEY_DIGITS = 6

_KIND_NOUN = {DeviceKind.METER: "meter", DeviceKind.CGM: "sensor"}


class SetupProblem(Exception):
    """Something a patient must fix (Bluetooth off, device out of range…), in plain words."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NearbyDevice:
    address: str
    name: str
    label: str  # "Contour Next One glucose meter"


class SetupBackend(Protocol):
    """What setup needs of the hub; every method raises `SetupProblem` with advice on failure."""

    async def add_patient(self, patient: Patient) -> None: ...

    async def save_progress(self, patient: Patient, username: str, unit: Unit) -> None:
        """Keep what step 1 set up, so a hub restarted before "Finish setup" resumes it."""

    async def scan(self, seconds: float) -> Sequence[NearbyDevice]: ...

    async def pair(
        self,
        address: str,
        name: str,
        patient: Patient,
        ask_passkey: Callable[[], Awaitable[int | None]],
    ) -> Device:
        """Bond with the device and register it for `patient`; `ask_passkey` when the device
        wants the number it shows."""

    async def first_download(self, device: Device, patient: Patient) -> Reading | None:
        """Fetch the device's stored records into the hub; the newest stored reading."""

    async def finished(self, devices: Sequence[Device]) -> None:
        """Setup is over: start collecting from `devices` for good."""

    async def phone_app(self, patient: Patient) -> str:
        """Register the patient's Nightscout uploader and make it a secret (returned once)."""

    async def enrol(self, link: str) -> str:
        """Redeem the clinic's enrolment link (`URL#TOKEN`) and start forwarding to the
        clinic; its name."""


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def normalize_code(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch.isalnum())


def shown_code(code: str) -> str:
    return f"{code[:4]}-{code[4:]}"


@dataclass(slots=True, kw_only=True)
class PairedDevice:
    device: Device
    label: str
    reading: Reading | None
    downloaded: bool = False


@dataclass(slots=True, kw_only=True)
class Pending:
    """A pairing under way: it may stop to ask for the passkey the device shows."""

    label: str
    task: asyncio.Task[str] = field(init=False)
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    passkey: asyncio.Future[int | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass(slots=True)
class FirstRun:
    """One first-run setup: the code's hash, the setup session, and what was set up so far."""

    backend: SetupBackend
    clock: Clock
    code_hash: bytes = b""
    failures: int = 0
    next_attempt_at: float = 0.0
    session_hash: bytes = b""
    form_token: str = ""
    finished: bool = False
    patient: Patient | None = None
    username: str = ""
    unit: Unit = Unit.MMOL_L
    clinic_done: bool = False
    clinic_name: str = ""  # enrolled with this clinic during setup
    nearby: list[NearbyDevice] = field(default_factory=list)
    paired: list[PairedDevice] = field(default_factory=list)
    pending: Pending | None = None

    def new_code(self) -> str:
        """A fresh code (the old one stops working); returned once, only its hash is kept."""
        code = "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))
        self.code_hash = _digest(code)
        return code

    @property
    def active(self) -> bool:
        return not self.finished and bool(self.code_hash)

    def wait_s(self) -> float:
        return max(0.0, self.next_attempt_at - self.clock.monotonic())

    def try_code(self, text: str) -> str | None:
        """A new session id when `text` is the code, else None (and later tries must wait)."""
        if not self.active or self.wait_s() > 0:
            return None
        if hmac.compare_digest(_digest(normalize_code(text)), self.code_hash):
            self.failures = 0
            session = secrets.token_urlsafe(32)
            self.session_hash = _digest(session)
            self.form_token = secrets.token_urlsafe(32)
            return session
        self.failures += 1
        if self.failures >= FREE_ATTEMPTS:
            wait = min(MAX_WAIT_S, 2.0 ** (self.failures - FREE_ATTEMPTS + 1))
            self.next_attempt_at = self.clock.monotonic() + wait
        return None

    def has_session(self, session: str | None) -> bool:
        return (
            self.active
            and bool(session)
            and bool(self.session_hash)
            and hmac.compare_digest(_digest(session or ""), self.session_hash)
        )

    def finish(self) -> None:
        self.finished = True
        self.code_hash = b""
        self.session_hash = b""
        self.form_token = ""


FIRST_RUN = web.AppKey("first_run", FirstRun)


def add_routes(app: web.Application, first_run: FirstRun) -> None:
    app[FIRST_RUN] = first_run
    rule = Rule(access=Access.PUBLIC)  # the setup code and session are checked here instead
    add_route(app, "GET", "/setup", _page, rule)
    add_route(app, "POST", "/setup/code", _code, rule)
    add_route(app, "POST", "/setup/patient", _patient, rule)
    add_route(app, "POST", "/setup/clinic", _clinic, rule)
    add_route(app, "POST", "/setup/scan", _scan, rule)
    add_route(app, "POST", "/setup/pair", _pair, rule)
    add_route(app, "POST", "/setup/passkey", _passkey, rule)
    add_route(app, "POST", "/setup/phone", _phone, rule)
    add_route(app, "POST", "/setup/finish", _finish, rule)
    app.on_shutdown.append(_cancel_pairing)


# -- handlers --------------------------------------------------------------------------------


def _state(request: web.Request) -> FirstRun:
    first_run = request.app[FIRST_RUN]
    if not first_run.active:
        raise web.HTTPNotFound()
    return first_run


async def _form(request: web.Request, first_run: FirstRun) -> dict[str, str]:
    """The posted form of a setup session; the code page again without one."""
    if not first_run.has_session(request.cookies.get(SESSION_COOKIE)):
        raise web.HTTPSeeOther("/setup")
    form = {k: str(v) for k, v in (await request.post()).items()}
    sent = form.get(TOKEN_FIELD, "")
    if not sent or not hmac.compare_digest(sent.encode(), first_run.form_token.encode()):
        raise web.HTTPForbidden()
    return form


def _html(
    first_run: FirstRun, step: str, title: str, status: int = 200, **context: object
) -> web.Response:
    """A setup page: templates/setup.html at `step`, never cached."""
    page = jinja.render(
        "setup.html",
        {
            "title": title,
            "step": step,
            "nav": "",
            "csrf": "",
            "token_field": TOKEN_FIELD,
            "form_token": first_run.form_token,
            "error": "",
            **context,
        },
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-store"},
    )


async def _page(request: web.Request) -> web.Response:
    first_run = _state(request)
    if not first_run.has_session(request.cookies.get(SESSION_COOKIE)):
        return _code_page(first_run)
    return _step_page(first_run)


async def _code(request: web.Request) -> web.StreamResponse:
    first_run = _state(request)
    form = await request.post()
    wait = first_run.wait_s()
    if wait > 0:
        return _code_page(first_run, status=429, retry_after=wait)
    session = first_run.try_code(str(form.get("code", "")))
    if session is None:
        return _code_page(first_run, error="That setup code is not right.", status=403)
    response = web.HTTPSeeOther("/setup")
    response.set_cookie(
        SESSION_COOKIE,
        session,
        path="/setup",
        httponly=True,
        samesite="Strict",
        secure=request.app[DEPS].secure_cookies,
    )
    raise response


async def _patient(request: web.Request) -> web.Response:
    first_run = _state(request)
    form = await _form(request, first_run)
    name = " ".join(form.get("name", "").split())
    zone = form.get("timezone", "").strip()
    username = form.get("username", "").strip().lower()
    password = form.get("password", "")
    error = ""
    unit = Unit.MMOL_L
    try:
        unit = glucose_unit(form.get("unit", ""))
    except UnknownUnit:
        error = "Choose mmol/L or mg/dL."
    if not name:
        error = "Write the name of the person who uses the devices."
    elif not _valid_zone(zone):
        error = f"“{zone}” is not a time zone name. Write it like Europe/London or America/Denver."
    if not error and first_run.patient is None:
        patient_id = _slug(name)
        try:
            await asyncio.to_thread(  # zxcvbn takes a moment: off the event loop
                check_password_strength, password, username=username, context=[name, patient_id]
            )
        except AccountError as exc:
            error = str(exc)
        else:
            first_run.patient = Patient(patient_id=patient_id, display_name=name, timezone=zone)
            await first_run.backend.add_patient(first_run.patient)
            await first_run.backend.save_progress(first_run.patient, "", unit)
    if not error and first_run.patient is not None and not first_run.username:
        accounts = request.app[DEPS].accounts
        try:
            await accounts.add_user(username, Role.PATIENT, password, first_run.patient.patient_id)
            await accounts.set_unit(username, unit)
        except AccountError as exc:
            error = str(exc)
        else:
            first_run.username = username
            first_run.unit = unit
            await first_run.backend.save_progress(first_run.patient, username, unit)
    if error:
        return _step_page(first_run, error=error, status=400, values=form)
    return _step_page(first_run)


async def _clinic(request: web.Request) -> web.Response:
    first_run = _state(request)
    form = await _form(request, first_run)
    if first_run.patient is None or not first_run.username:
        return _step_page(first_run, error="Say who the hub is for first.")
    link = "".join(form.get("link", "").split())  # a pasted link may break across lines
    if "skip" not in form and not first_run.clinic_name:
        if not link:
            return _step_page(first_run, error="Paste the link your clinic gave you, or skip.")
        try:
            first_run.clinic_name = await first_run.backend.enrol(link) or "your clinic"
        except SetupProblem as exc:
            return _step_page(first_run, error=str(exc), status=400)
    first_run.clinic_done = True
    return _step_page(first_run)


async def _scan(request: web.Request) -> web.Response:
    first_run = _state(request)
    await _form(request, first_run)
    if first_run.pending is not None and not first_run.pending.task.done():
        return await _outcome(first_run)  # one radio job at a time: the pairing goes first
    try:
        first_run.nearby = list(await first_run.backend.scan(SCAN_SECONDS))
    except SetupProblem as exc:
        return _step_page(first_run, error=str(exc))
    if not first_run.nearby:
        return _step_page(
            first_run,
            error="No health devices found nearby. Put your meter or sensor in pairing mode "
            "(see its manual: often a long press of its Bluetooth button), keep it within a few "
            "metres of the hub, and look again.",
        )
    return _step_page(first_run)


async def _pair(request: web.Request) -> web.Response:
    first_run = _state(request)
    form = await _form(request, first_run)
    patient = first_run.patient
    chosen = next((n for n in first_run.nearby if n.address == form.get("address")), None)
    if patient is None or chosen is None:
        return _step_page(first_run, error="Look for devices again and choose one from the list.")
    if first_run.pending is None or first_run.pending.task.done():
        pending = Pending(label=chosen.label)
        pending.task = asyncio.create_task(
            _pair_and_download(first_run, chosen, patient, pending), name="setup-pairing"
        )
        first_run.pending = pending
    return await _outcome(first_run)


async def _passkey(request: web.Request) -> web.Response:
    first_run = _state(request)
    form = await _form(request, first_run)
    pending = first_run.pending
    if pending is None or pending.task.done() or pending.passkey.done():
        return await _outcome(first_run) if pending else _step_page(first_run)
    if "cancel" in form:
        pending.passkey.set_result(None)
        return await _outcome(first_run)
    text = "".join(form.get("passkey", "").split())
    if not text.isdigit() or len(text) > PASSKEY_DIGITS:
        return _passkey_page(
            first_run, pending, error="Type the number your device shows: up to six digits."
        )
    pending.passkey.set_result(int(text))
    return await _outcome(first_run)


async def _pair_and_download(
    first_run: FirstRun, chosen: NearbyDevice, patient: Patient, pending: Pending
) -> str:
    """Pair (unless a first download is being retried), register, fetch the stored records:
    "" when the first reading is in, else what to tell the patient."""

    async def ask_passkey() -> int | None:
        pending.wanted.set()
        return await pending.passkey

    paired = next((p for p in first_run.paired if p.device.address == chosen.address), None)
    if paired is None:  # "Try again" after a lost first download does not pair twice
        try:
            device = await first_run.backend.pair(chosen.address, chosen.name, patient, ask_passkey)
        except SetupProblem as exc:
            return str(exc)
        paired = PairedDevice(device=device, label=chosen.label, reading=None)
        first_run.paired.append(paired)
    try:
        paired.reading = await first_run.backend.first_download(paired.device, patient)
    except SetupProblem as exc:
        return f"{chosen.label} is paired. {exc}"
    paired.downloaded = True
    return ""


async def _outcome(first_run: FirstRun) -> web.Response:
    """Wait for the pairing to end or to ask for a passkey, and show which."""
    pending = first_run.pending
    assert pending is not None
    asked = asyncio.ensure_future(pending.wanted.wait())
    waits: set[asyncio.Future[Any]] = {pending.task}
    if not pending.passkey.done():  # the passkey is asked for once per pairing
        waits.add(asked)
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        asked.cancel()
    if not pending.task.done():
        return _passkey_page(first_run, pending)
    first_run.pending = None
    return _step_page(first_run, error=pending.task.result())


async def _cancel_pairing(app: web.Application) -> None:
    pending = app[FIRST_RUN].pending
    if pending is not None and not pending.task.done():
        pending.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pending.task


async def _phone(request: web.Request) -> web.Response:
    """A phone app's connection: the hub's Nightscout address and a new secret, shown once."""
    first_run = _state(request)
    await _form(request, first_run)
    if first_run.patient is None or not first_run.username:
        return _step_page(first_run, error="Say who the hub is for first.")
    try:
        secret = await first_run.backend.phone_app(first_run.patient)
    except SetupProblem as problem:
        return _step_page(first_run, error=str(problem))
    given = links(f"{request.scheme}://{request.host}", secret)
    return _html(
        first_run,
        "phone",
        "Add a phone app",
        xdrip_url=given.xdrip_url,
        qr_svg=Markup(_qr_svg(given.xdrip_url)),
        nightscout_url=given.nightscout_url,
        secret=given.secret,
    )


def _qr_svg(text: str) -> str:
    out = io.BytesIO()
    segno.make(text, error="m").save(
        out, kind="svg", scale=4, xmldecl=False, svgns=True, title="QR code of the address"
    )
    return out.getvalue().decode("ascii")


async def _finish(request: web.Request) -> web.Response:
    first_run = _state(request)
    await _form(request, first_run)
    if first_run.patient is None or not first_run.username:
        return _step_page(first_run, error="Say who the hub is for first.")
    username = first_run.username
    await _cancel_pairing(request.app)
    first_run.finish()
    await first_run.backend.finished([p.device for p in first_run.paired])
    response = _html(first_run, "done", "Your hub is ready", username=username)
    response.del_cookie(SESSION_COOKIE, path="/setup")
    return response


# -- pages -----------------------------------------------------------------------------------


def _code_page(
    first_run: FirstRun, *, error: str = "", status: int = 200, retry_after: float = 0.0
) -> web.Response:
    if retry_after > 0:
        error = (
            f"Too many wrong codes. Wait {int(retry_after) + 1} seconds, then type the code again."
        )
    response = _html(first_run, "code", "Set up your hub", status, error=error)
    if retry_after > 0:
        response.headers["Retry-After"] = str(int(retry_after) + 1)
    return response


def _passkey_page(first_run: FirstRun, pending: Pending, *, error: str = "") -> web.Response:
    return _html(
        first_run, "passkey", "Type the number on your device", error=error, label=pending.label
    )


def _step_page(
    first_run: FirstRun,
    *,
    error: str = "",
    status: int = 200,
    values: dict[str, str] | None = None,
) -> web.Response:
    patient = first_run.patient
    if patient is None or not first_run.username:
        values = values or {}
        return _html(
            first_run,
            "patient",
            "Step 1 of 3: who is this hub for?",
            status,
            error=error,
            locked=patient is not None,
            name=patient.display_name if patient else values.get("name", ""),
            zone=patient.timezone if patient else values.get("timezone", ""),
            unit=values.get("unit", first_run.unit.value),
            units=[Unit.MMOL_L.value, Unit.MG_DL.value],
            username=values.get("username", ""),
        )
    if not first_run.clinic_done:
        return _html(
            first_run, "clinic", "Step 2 of 3: connect to your clinic", status, error=error
        )
    connected = f"Connected to {first_run.clinic_name}." if first_run.clinic_name else ""
    state = {p.device.address: p.downloaded for p in first_run.paired}
    return _html(
        first_run,
        "devices",
        "Step 3 of 3: add your devices",
        status,
        error=error,
        connected=connected,
        working=[_reading_text(first_run, p) for p in first_run.paired if p.downloaded],
        nearby=[
            {"address": n.address, "label": n.label, "retry": n.address in state}
            for n in first_run.nearby
            if not state.get(n.address, False)
        ],
    )


def _reading_text(first_run: FirstRun, paired: PairedDevice) -> str:
    """ "Your meter sent 6.4 mmol/L at 08:12 — it works", in the patient's unit and zone."""
    noun = _KIND_NOUN.get(paired.device.kind, "device")
    reading = paired.reading
    if reading is None:
        return (
            f"{paired.label} is paired. It had no stored readings yet: take a reading and the "
            "hub will receive it."
        )
    tz = timefmt.patient_zone(first_run.patient.timezone if first_run.patient else "UTC")
    local = reading.time.astimezone(tz)
    today = first_run.clock.now().astimezone(tz).date()
    when = f"at {local:%H:%M}" if local.date() == today else f"on {local:%d %b} at {local:%H:%M}"
    if reading.kind in (ReadingKind.GLUCOSE, ReadingKind.CGM_GLUCOSE):
        value = f"{format_glucose(reading.value, first_run.unit)} {first_run.unit.value}"
    else:
        value = f"{reading.value:g} {reading.unit.value}"
    return f"Your {noun} sent {value} {when} — it works."


def _valid_zone(name: str) -> bool:
    if not name or name.startswith(("/", ".")) or ".." in name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _slug(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:32].strip("-")
    return slug or "patient"
