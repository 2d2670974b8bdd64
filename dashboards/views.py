"""HTML pages: login, triage, patient, report, alerts, ledger, consent, and their live fragments."""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import math
import secrets
from datetime import UTC, datetime, timedelta, tzinfo

from aiohttp import web
from markupsafe import Markup

from dashboards import (
    charts,
    export,
    fhir,
    hublogs,
    offload,
    pages,
    templating,
    timefmt,
    triagelist,
    triageranges,
    wearables,
)
from dashboards.access import Access, Rule
from dashboards.accounts import AccountError, Note, Role, TooManyAttempts, User
from dashboards.agppdf import MissingFont
from dashboards.bands import band_of
from dashboards.context import (
    CSRF_FIELD,
    DEPS,
    LOGIN_COOKIE,
    SESSION,
    SESSION_COOKIE,
    Deps,
    add_route,
    csrf_token,
    current_user,
    deps,
    visible,
)
from dashboards.glycemia import format_glucose, slope_mg_dl_per_min, trend_arrow
from dashboards.live import as_seen_by
from dashboards.redirects import local_path
from dashboards.triage import PatientState, rank
from gateway.clinical.errors import ClinicalError
from gateway.clinical.metrics import GlucoseMetrics, fingersticks
from gateway.clinical.report import agp_svg, tir_bar_svg
from gateway.errors import InputError
from gateway.model import (
    Alert,
    AlertKind,
    AlertState,
    Batch,
    Device,
    DeviceEvent,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Treatment,
)
from gateway.protocols import TriageSummary
from gateway.units import Unit

log = logging.getLogger(__name__)

GLUCOSE_KINDS = (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE)
AGP_CHOICES = (7, 14, 30)

_DEVICE_KINDS: dict[DeviceKind, tuple[ReadingKind, ...]] = {
    DeviceKind.CGM: (ReadingKind.CGM_GLUCOSE,),
    DeviceKind.METER: (ReadingKind.GLUCOSE,),
    DeviceKind.HEART_RATE: (ReadingKind.HEART_RATE,),
    DeviceKind.BLOOD_PRESSURE: (ReadingKind.BLOOD_PRESSURE_SYSTOLIC,),
    DeviceKind.SCALE: (ReadingKind.BODY_WEIGHT,),
    DeviceKind.THERMOMETER: (ReadingKind.BODY_TEMPERATURE,),
    DeviceKind.UPLOADER: tuple(ReadingKind),
}


def html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def wants_json(request: web.Request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def patient_tz(patient: Patient) -> tzinfo:
    return timefmt.patient_zone(patient.timezone)


def glucose_points(readings: list[Reading]) -> list[tuple[datetime, float]]:
    """CGM points when the patient has any, else meter points; in time order."""
    return kind_points(readings, ReadingKind.CGM_GLUCOSE) or kind_points(
        readings, ReadingKind.GLUCOSE
    )


def kind_points(readings: list[Reading], kind: ReadingKind) -> list[tuple[datetime, float]]:
    return sorted((r.time, r.value) for r in readings if r.kind is kind)


# -- login and logout ---------------------------------------------------------------------


def _login_form(
    request: web.Request,
    *,
    error: str = "",
    username: str = "",
    status: int = 200,
    next_path: str | None = None,
) -> web.Response:
    token = secrets.token_urlsafe(32)
    next_path = local_path(request.query.get("next") if next_path is None else next_path, "")
    body = pages.login_page(csrf=token, error=error, username=username, next_path=next_path)
    response = html(body, status)
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        path="/login",
        max_age=3600,
        httponly=True,
        samesite="Strict",
        secure=deps(request).secure_cookies,
    )
    return response


async def login_get(request: web.Request) -> web.StreamResponse:
    return _login_form(request)


async def login_post(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    form = await request.post()
    username = str(form.get("username", "")).strip().lower()
    password = str(form.get("password", ""))
    sent = str(form.get(CSRF_FIELD, ""))
    next_path = str(form.get("next", ""))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        return _login_form(
            request, error="The form expired; please log in again.", status=403, next_path=next_path
        )
    try:
        result = await d.accounts.login(
            username,
            password,
            source=request.remote,
            replaces=request.cookies.get(SESSION_COOKIE),
        )
    except TooManyAttempts as refused:
        response = _login_form(
            request,
            error="Too many failed attempts; try again later.",
            username=username,
            status=429,
            next_path=next_path,
        )
        response.headers["Retry-After"] = str(max(1, math.ceil(refused.retry_after_s)))
        return response
    if result is None:
        return _login_form(
            request,
            error="Wrong username or password.",
            username=username,
            status=401,
            next_path=next_path,
        )
    session, user = result
    default = "/me" if user.role is Role.PATIENT else "/"
    target = local_path(next_path, default)
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        SESSION_COOKIE,
        session.session_id,
        path="/",
        max_age=int((session.expires_at - d.clock.now()).total_seconds()),
        httponly=True,
        samesite="Strict",
        secure=d.secure_cookies,
    )
    response.del_cookie(LOGIN_COOKIE, path="/login")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    session = request[SESSION]
    await d.accounts.logout(session.session_id)
    d.broadcaster.close_session(session.session_id)
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def prefs(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        unit = Unit(str(form.get("unit", "")))
        await deps(request).accounts.set_unit(current_user(request).username, unit)
    except (ValueError, AccountError):
        raise web.HTTPBadRequest() from None
    raise web.HTTPSeeOther(local_path(_referer_path(request)))


def _referer_path(request: web.Request) -> str | None:
    referer = request.headers.get("Referer")
    if not referer:
        return None
    url = request.url.with_path("/")
    if not referer.startswith(str(url.origin())):
        return None
    return referer[len(str(url.origin())) :] or "/"


# -- triage -------------------------------------------------------------------------------


async def _triage_rows(
    app: web.Application,
    states: list[PatientState],
    never: list[TriageSummary],
    now: datetime,
) -> list[pages.TriageRow]:
    """The page's rows: the shares of the page's patients in `never` (never computed: a new
    or just-migrated patient) computed now, sparklines and trends from one query over the
    page's patients, and the devices of battery warnings named."""
    rm = app[DEPS].read_model
    if never:
        fresh = await triageranges.refresh(app, never, now)
        states = rank(
            [
                dataclasses.replace(
                    s,
                    below_range_pct=fresh[pid].below_range_pct,
                    in_range_pct=fresh[pid].in_range_pct,
                )
                if (pid := s.patient.patient_id) in fresh
                else s
                for s in states
            ],
            now,
        )
    spark_start = now - timedelta(hours=3)
    recent = await rm.recent_glucose([s.patient.patient_id for s in states], spark_start)
    by_patient: dict[str, list[Reading]] = {}
    for reading in recent:
        by_patient.setdefault(reading.patient_id, []).append(reading)
    rows = []
    for state in states:
        if state.battery_low:
            names = {
                dev.device_id: dev.name or dev.device_id
                for dev in await rm.list_devices(state.patient.patient_id)
            }
            state = dataclasses.replace(
                state, battery_low=tuple(names.get(d, d) for d in state.battery_low)
            )
        points = glucose_points(by_patient.get(state.patient.patient_id, []))
        spark = charts.sparkline_svg(points, start=spark_start, end=now)
        latest = state.latest
        near = [
            p for p in points if latest is not None and p[0] >= latest.time - timedelta(minutes=15)
        ]
        rows.append(
            pages.TriageRow(
                state=state, trend=trend_arrow(slope_mg_dl_per_min(near)), sparkline=spark
            )
        )
    return rows


async def _triage_view(
    request: web.Request,
) -> tuple[str, triagelist.Paged, triagelist.TriageQuery]:
    d = deps(request)
    now = d.clock.now()
    query = triagelist.TriageQuery.parse(request.query)
    # Ranked and paged by the store, over the patients this viewer may see: nobody else is
    # on the page, in the count or in the number of pages.
    page = await d.read_model.triage_page(
        allowed=visible(request),
        now=now,
        offset=query.offset,
        limit=triagelist.PAGE_SIZE,
        team=query.team,
        ward=query.ward,
        search=query.search,
    )
    paged = triagelist.paged(page, now)
    never = [s for s in page.summaries if s.latest is not None and s.ranges_at is None]
    rows = await _triage_rows(request.app, paged.states, never, now)
    empty = (
        "No patients match this search or filter."
        if query.filtered
        else "No patients have shared their data with you."
    )
    rows_html = pages.triage_rows(rows, now=now, unit=current_user(request).unit, empty=empty)
    return rows_html, paged, query


async def triage(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    if user.role is Role.PATIENT and user.patient_id:
        raise web.HTTPSeeOther("/me")
    d = deps(request)
    (rows_html, paged, query), names = await asyncio.gather(
        _triage_view(request), d.read_model.care_unit_names(visible(request))
    )
    # The list shows each patient's latest glucose: a view of each, recorded in one commit.
    await d.accounts.record_views(user, [s.patient.patient_id for s in paged.states], "triage")
    teams, wards = triagelist.care_unit_choices(names)
    return html(
        pages.triage_page(
            rows_html,
            user=user,
            csrf=csrf_token(request),
            paged=paged,
            query=query,
            teams=teams,
            wards=wards,
        )
    )


async def triage_partial(request: web.Request) -> web.StreamResponse:
    rows_html, _, _ = await _triage_view(request)
    return html(rows_html)


# -- patient ------------------------------------------------------------------------------


def _days(request: web.Request) -> int:
    try:
        days = int(request.query.get("days", "14"))
    except ValueError:
        return 14
    return days if days in AGP_CHOICES else 14


async def _patient(request: web.Request) -> Patient:
    patient = await deps(request).read_model.get_patient(request.match_info["id"])
    if patient is None:
        raise web.HTTPNotFound()
    return patient


LEDGER_ROWS = 20  # the patient's newest batches on their page


def _battery_warnings(events: list[DeviceEvent], now: datetime) -> dict[str, datetime]:
    """device_id -> when it last reported a low battery (within the last week)."""
    since = now - timedelta(days=triagelist.BATTERY_WARNING_DAYS)
    found: dict[str, datetime] = {}
    for event in events:
        if event.kind is DeviceEventKind.BATTERY_LOW and event.time >= since:
            found[event.device_id] = max(event.time, found.get(event.device_id, event.time))
    return found


async def _patient_view(
    request: web.Request, patient: Patient, *, full: bool = True
) -> pages.PatientView:
    """Everything on the patient page; `full=False` only what the live fragment shows."""
    d = deps(request)
    rm = d.read_model
    user = current_user(request)
    now = d.clock.now()
    tz = patient_tz(patient)
    pid = patient.patient_id
    days = _days(request)
    day_start = now - timedelta(hours=24)
    readings, latest, alerts, devices = await asyncio.gather(
        rm.readings(pid, since=now - timedelta(days=30 if full else 1), kinds=GLUCOSE_KINDS),
        rm.latest_reading(pid, GLUCOSE_KINDS),
        rm.alerts(pid),
        rm.list_devices(pid),
    )
    points = glucose_points(readings)
    agp = tir_bar = metrics_html = ""
    seen: list[tuple[Device, datetime | None]] = []
    batches: list[Batch] = []
    signed_size = 0
    batch_path, log_key = "/log/batch", ""
    notes: list[Note] = []
    battery: dict[str, datetime] = {}
    worn = ""
    if full:
        # CGM readings only; the meter's fingersticks are counted apart, never mixed in.
        metrics = [
            await _metrics(request.app, readings, now=now, days=n, patient=patient)
            for n in AGP_CHOICES
        ]
        chosen = metrics[AGP_CHOICES.index(days)]
        agp, tir_bar = agp_svg(chosen, unit=user.unit), tir_bar_svg(chosen, unit=user.unit)
        sticks = [len(fingersticks(readings, now=now, days=n)) for n in AGP_CHOICES]
        metrics_html = pages.metrics_table(metrics, user.unit, fingersticks=sticks)
        seen = [(dev, await _last_seen(d, dev, readings)) for dev in devices]
        if d.hub_logs is None:
            batches = await rm.patient_batches(pid, LEDGER_ROWS)
            note = await d.ledger.checkpoint_note()
            # C2SP tlog-checkpoint: origin, then the tree size, then the root.
            signed_size = int(note.splitlines()[1]) if note else 0
        else:  # a clinic: the patient's batches of their hub's log
            held = await hublogs.patient_ledger(d.hub_logs, pid, LEDGER_ROWS)
            batches, signed_size = held.batches, held.signed_size
            batch_path, log_key = held.batch_path, held.log_key
        notes = await d.accounts.notes(pid)
        battery = _battery_warnings(await rm.device_events(pid), now)
        worn = await _wearables(request, pid, now=now, tz=tz)
    treatments = await _day_treatments(d, pid, day_start, now)
    recent_alerts = [
        as_seen_by(a, user)
        for a in alerts
        if a.state is not AlertState.RESOLVED or a.updated_at >= day_start
    ]
    recent_alerts.sort(key=lambda a: a.raised_at, reverse=True)
    trend = trend_arrow(
        slope_mg_dl_per_min(
            [p for p in points if latest and p[0] >= latest.time - timedelta(minutes=15)]
        )
    )
    minutes = None if latest is None else max(0.0, (now - latest.time).total_seconds() / 60)
    value = "—" if latest is None else format_glucose(latest.value, user.unit)
    return pages.PatientView(
        patient=patient,
        latest_html=pages.latest_html(
            value,
            user.unit,
            trend,
            minutes,
            at=None if latest is None else latest.time,
            tz=tz,
            band=None if latest is None else band_of(latest.value),
        ),
        day_chart=charts.day_chart_svg(
            [p for p in kind_points(readings, ReadingKind.CGM_GLUCOSE) if p[0] >= day_start],
            [a for a in alerts if a.raised_at >= day_start],
            start=day_start,
            end=now,
            unit=user.unit,
            tz=tz,
            meter=[p for p in kind_points(readings, ReadingKind.GLUCOSE) if p[0] >= day_start],
            treatments=treatments,
        ),
        treatments=treatments[:TREATMENT_ROWS],
        agp=agp,
        agp_days=days,
        tir_bar=tir_bar,
        metrics=metrics_html,
        batches=batches,
        signed_size=signed_size,
        batch_path=batch_path,
        log_key=log_key,
        archived=d.hub_logs is not None,
        notes=notes,
        battery_low=battery,
        wearables=worn,
        devices=seen,
        alerts_html=pages.alert_rows(
            recent_alerts,
            unit=user.unit,
            names={pid: patient.display_name},
            csrf=csrf_token(request),
            zones={pid: tz},
            now=now,
        ),
    )


async def _wearables(request: web.Request, pid: str, *, now: datetime, tz: tzinfo) -> str:
    """The heart-rate and blood-pressure section, or "" when the patient has neither."""
    rm = deps(request).read_model
    heart, pressure = await asyncio.gather(
        rm.readings(pid, since=now - timedelta(hours=24), kinds=wearables.HEART_KINDS),
        rm.readings(pid, since=now - timedelta(days=14), kinds=wearables.PRESSURE_KINDS),
    )
    if not heart and not pressure:
        return ""
    # A day of beat-to-beat intervals is ~100,000 readings: off the loop.
    worn = await asyncio.to_thread(wearables.wearables, heart, pressure, now=now, tz=tz)
    if worn.empty:
        return ""
    return templating.fragment(
        request,
        "wearables.html",
        {
            "w": worn,
            "heart_svg": Markup(worn.heart_svg),  # drawn from numbers, labels escaped
            "pressure_svg": Markup(worn.pressure_svg),
        },
    )


async def _last_seen(d: Deps, device: Device, glucose: list[Reading]) -> datetime | None:
    own = [r.time for r in glucose if r.device_id == device.device_id]
    if own:
        return max(own)
    latest = await d.read_model.latest_reading(device.patient_id, _DEVICE_KINDS[device.kind])
    return latest.time if latest is not None and latest.device_id == device.device_id else None


async def patient_page(request: web.Request) -> web.StreamResponse:
    patient = await _patient(request)
    view = await _patient_view(request, patient)
    return html(
        pages.patient_page(
            view, user=current_user(request), csrf=csrf_token(request), tz=patient_tz(patient)
        )
    )


async def patient_partial(request: web.Request) -> web.StreamResponse:
    patient = await _patient(request)
    return html(pages.patient_live(await _patient_view(request, patient, full=False)))


async def _metrics(
    app: web.Application, readings: list[Reading], *, now: datetime, days: int, patient: Patient
) -> GlucoseMetrics:
    """The consensus metrics from the patient's stored readings: `compute_metrics` keeps the CGM
    ones, as for the report and the FHIR summary. Computed in the report worker: pandas
    (~45 MiB) stays out of the hub's process."""
    return await offload.metrics(
        app, readings, now=now, days=days, timezone=patient.timezone, patient_id=patient.patient_id
    )


_REPORT_TYPES = {"html": "text/html", "pdf": "application/pdf", "json": "application/json"}


async def report(request: web.Request) -> web.StreamResponse:
    """The AGP report: the page (`?format=html`, the default), its PDF or its data as JSON."""
    fmt = request.query.get("format", "html")
    if fmt not in _REPORT_TYPES:
        raise web.HTTPBadRequest()
    if fmt == "pdf":
        return await report_pdf(request)
    patient = await _patient(request)
    d = deps(request)
    now = d.clock.now()
    days = _days(request)
    unit = current_user(request).unit
    readings = await offload.source(
        request.app, d.read_model, patient.patient_id, since=now - timedelta(days=days),
        until=now, kinds=GLUCOSE_KINDS,
    )  # fmt: skip
    treatments = await _day_treatments(d, patient.patient_id, now - timedelta(days=days), now)
    try:
        if fmt == "html":
            article = await offload.report_page(
                request.app, patient, readings, days=days, now=now, unit=unit,
                treatments=treatments, day_choices=AGP_CHOICES,
            )  # fmt: skip
            return templating.render(
                "report.html",
                request,
                {"title": f"AGP report: {patient.display_name}", "article": article},
            )
        body = await offload.report(
            request.app, patient, readings, days=days, now=now, fmt="json", unit=unit,
            treatments=treatments,
        )  # fmt: skip
    except ClinicalError:
        raise web.HTTPInternalServerError() from None
    return web.Response(body=body, content_type=_REPORT_TYPES[fmt])


async def report_pdf(request: web.Request) -> web.StreamResponse:
    """The AGP report as an A4 PDF (`dashboards.agppdf`), in the viewer's unit."""
    patient = await _patient(request)
    d = deps(request)
    now = d.clock.now()
    days = _days(request)
    readings = await offload.source(
        request.app, d.read_model, patient.patient_id, since=now - timedelta(days=days),
        until=now, kinds=GLUCOSE_KINDS,
    )  # fmt: skip
    treatments = await _day_treatments(d, patient.patient_id, now - timedelta(days=days), now)
    try:
        body = await offload.report_pdf(
            request.app, patient, readings, days=days, now=now, unit=current_user(request).unit,
            treatments=treatments,
        )  # fmt: skip
    except MissingFont as missing:
        log.error("%s", missing)
        raise web.HTTPServiceUnavailable(text=f"PDF report unavailable: {missing}") from None
    except ClinicalError:
        raise web.HTTPInternalServerError() from None
    name = f"glucohub-{patient.patient_id}-{days}d.pdf".replace('"', "")
    return web.Response(
        body=body,
        content_type="application/pdf",
        headers={"Content-Disposition": f'inline; filename="{name}"'},
    )


async def snooze(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    try:
        kind = AlertKind(str(form.get("kind", "")))
        minutes = int(str(form.get("minutes", "")))
    except ValueError:
        raise web.HTTPBadRequest() from None
    if not 1 <= minutes <= 24 * 60:
        raise web.HTTPBadRequest()
    pid = request.match_info["id"]
    user = current_user(request)
    await deps(request).alerts.snooze(
        pid, kind, minutes=minutes, by=user.username, by_patient=user.role is Role.PATIENT
    )
    if wants_json(request):
        return web.json_response({"snoozed": kind.value, "minutes": minutes})
    raise web.HTTPSeeOther(local_path(_referer_path(request), f"/patients/{pid}"))


async def add_note(request: web.Request) -> web.StreamResponse:
    """A clinician's entry in the patient's notes thread."""
    form = await request.post()
    pid = request.match_info["id"]
    try:
        await deps(request).accounts.add_note(current_user(request), pid, str(form.get("body", "")))
    except AccountError:
        raise web.HTTPBadRequest(text="a note has 1 to 4000 characters") from None
    raise web.HTTPSeeOther(f"/patients/{pid}#notes")


# -- alerts -------------------------------------------------------------------------------


async def visible_open_alerts(request: web.Request) -> list[Alert]:
    """Open alerts of the patients the user may see, as the user's view shows them."""
    allowed = visible(request)
    if not allowed:
        return []
    user = current_user(request)
    found = await deps(request).read_model.alerts(None, open_only=True)
    mine = [
        as_seen_by(a, user)
        for a in found
        if a.patient_id in allowed and a.state is not AlertState.RESOLVED
    ]
    mine.sort(
        key=lambda a: (a.state is not AlertState.RAISED, a.level.value != "urgent", a.raised_at)
    )
    return mine


async def _visible_patients(request: web.Request) -> list[Patient]:
    allowed = visible(request)
    return [p for p in await deps(request).read_model.list_patients() if p.patient_id in allowed]


async def _alert_rows_html(request: web.Request) -> str:
    alerts = await visible_open_alerts(request)
    patients = await _visible_patients(request)
    return pages.alert_rows(
        alerts,
        unit=current_user(request).unit,
        names={p.patient_id: p.display_name for p in patients},
        csrf=csrf_token(request),
        zones={p.patient_id: patient_tz(p) for p in patients},
        now=deps(request).clock.now(),
    )


async def alerts_page(request: web.Request) -> web.StreamResponse:
    rows = await _alert_rows_html(request)
    return html(pages.alerts_page(rows, user=current_user(request), csrf=csrf_token(request)))


async def alerts_partial(request: web.Request) -> web.StreamResponse:
    return html(await _alert_rows_html(request))


async def acknowledge_visible(request: web.Request, alert_id: str) -> Alert:
    """Acknowledge an open alert of a patient the user may see; 404 for any other id."""
    if not any(a.alert_id == alert_id for a in await visible_open_alerts(request)):
        raise web.HTTPNotFound()
    user = current_user(request)
    updated = await deps(request).alerts.acknowledge(
        alert_id, by=user.username, by_patient=user.role is Role.PATIENT
    )
    if updated is None:
        raise web.HTTPNotFound()
    return as_seen_by(updated, user)


async def acknowledge(request: web.Request) -> web.StreamResponse:
    updated = await acknowledge_visible(request, request.match_info["alert_id"])
    if wants_json(request):
        return web.json_response({"alert_id": updated.alert_id, "state": updated.state.value})
    raise web.HTTPSeeOther(local_path(_referer_path(request), "/alerts"))


# -- ledger -------------------------------------------------------------------------------


async def ledger_page(request: web.Request) -> web.StreamResponse:
    d = deps(request)
    user = current_user(request)
    if user.role is Role.ADMIN:  # runs the hub: every batch, none of their records
        batches = await d.read_model.latest_batches(50)
    else:  # batches holding records of patients this user may see, counting only those
        found: dict[int, Batch] = {}
        for pid in sorted(visible(request)):
            for part in await d.read_model.patient_batches(pid, 50):
                seen = found.get(part.seq)
                found[part.seq] = (
                    part
                    if seen is None
                    else dataclasses.replace(
                        seen,
                        reading_count=seen.reading_count + part.reading_count,
                        first_time=min(seen.first_time, part.first_time),
                        last_time=max(seen.last_time, part.last_time),
                    )
                )
        batches = sorted(found.values(), key=lambda b: -b.seq)[:50]
    checkpoint = await d.ledger.checkpoint_note()
    return html(
        pages.ledger_page(
            batches,
            checkpoint=checkpoint,
            verifier_key=d.ledger.verifier_key(),
            quarantined=await d.ledger.quarantined(),
            user=user,
            csrf=csrf_token(request),
        )
    )


def _batch_seq(request: web.Request) -> int:
    text = request.match_info["seq"]
    if not text.isdigit() or len(text) > 18:  # a sequence number fits in SQLite's INTEGER
        raise web.HTTPNotFound()
    return int(text)


async def _audit(request: web.Request, patients: frozenset[str], action: str) -> None:
    user = current_user(request)
    for pid in sorted(patients):
        await deps(request).accounts.record_view(user, pid, action)


async def batch_body(request: web.Request) -> web.StreamResponse:
    """A batch as this user may see it: its JWS (which signs a root over the records, none
    of their content) and only the records of patients visible to them, each provable
    against that root. 404 when it holds nothing of theirs, as for a missing batch."""
    seq = _batch_seq(request)
    view = await deps(request).ledger.batch_view(seq, visible(request))
    if view is None:
        raise web.HTTPNotFound()
    await _audit(request, view.patients, f"batch:{seq}")
    return web.Response(text=view.text, content_type="application/json")


async def batch_proof(request: web.Request) -> web.StreamResponse:
    """The offline inclusion proof of a batch with the user's visible records of it."""
    seq = _batch_seq(request)
    try:
        proof = await deps(request).ledger.inclusion_proof_file(seq, visible(request))
    except InputError:
        raise web.HTTPConflict(text="batch not yet covered by a signed checkpoint") from None
    if proof is None:
        raise web.HTTPNotFound()
    await _audit(request, proof.patients, f"proof:{seq}")
    return web.Response(
        text=proof.text,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="glucohub-batch-{seq}-proof.json"'},
    )


# -- the patient's own view ------------------------------------------------------------------

MY_VIEWS_SHOWN = 10  # the newest views of the record by others; /consent has the full log
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # "every stored reading"


async def _own_patient(request: web.Request) -> Patient:
    pid = current_user(request).patient_id
    assert pid is not None  # Access.PATIENT guarantees it
    patient = await deps(request).read_model.get_patient(pid)
    if patient is None:
        raise web.HTTPNotFound()
    return patient


async def _my_view(request: web.Request) -> pages.MyView:
    """The signed-in patient's own summary in plain words (their record only)."""
    d = deps(request)
    rm = d.read_model
    user = current_user(request)
    patient = await _own_patient(request)
    pid = patient.patient_id
    now = d.clock.now()
    tz = patient_tz(patient)
    day_start = now - timedelta(hours=24)
    readings, latest, alerts, devices, events = await asyncio.gather(
        rm.readings(pid, since=now - timedelta(days=7), kinds=GLUCOSE_KINDS),
        rm.latest_reading(pid, GLUCOSE_KINDS),
        rm.alerts(pid),
        rm.list_devices(pid),
        rm.device_events(pid),
    )
    week = await _metrics(request.app, readings, now=now, days=7, patient=patient)
    grants = await d.accounts.grants_for_patient(pid)
    log = await d.accounts.access_log(pid)
    points = glucose_points(readings)
    trend = trend_arrow(
        slope_mg_dl_per_min(
            [p for p in points if latest and p[0] >= latest.time - timedelta(minutes=15)]
        )
    )
    recent_alerts = sorted(
        (
            as_seen_by(a, user)
            for a in alerts
            if a.state is not AlertState.RESOLVED or a.updated_at >= day_start
        ),
        key=lambda a: a.raised_at,
        reverse=True,
    )
    return pages.MyView(
        patient=patient,
        latest=latest,
        trend=trend,
        week=week,
        day_chart=charts.day_chart_svg(
            [p for p in kind_points(readings, ReadingKind.CGM_GLUCOSE) if p[0] >= day_start],
            [a for a in alerts if a.raised_at >= day_start],
            start=day_start,
            end=now,
            unit=user.unit,
            tz=tz,
            meter=[p for p in kind_points(readings, ReadingKind.GLUCOSE) if p[0] >= day_start],
            treatments=await _day_treatments(d, pid, day_start, now),
        ),
        alerts_html=pages.alert_rows(
            recent_alerts,
            unit=user.unit,
            names={pid: "You"},
            csrf=csrf_token(request),
            zones={pid: tz},
            now=now,
        ),
        devices=[(dev, await _last_seen(d, dev, readings)) for dev in devices if dev.active],
        battery_low=_battery_warnings(events, now),
        grants=grants,
        views=[e for e in log if e.viewer != user.username][:MY_VIEWS_SHOWN],
        now=now,
        tz=tz,
    )


async def my_page(request: web.Request) -> web.StreamResponse:
    view = await _my_view(request)
    can_forget = deps(request).devices is not None
    return html(
        pages.my_page(
            view, user=current_user(request), csrf=csrf_token(request), can_forget=can_forget
        )
    )


async def forget_device(request: web.Request) -> web.StreamResponse:
    """The patient stops a device of theirs sending (history kept; pairing again undoes it).
    Anything but an active device of theirs is a 404, whoever's it is."""
    user = current_user(request)
    assert user.patient_id is not None  # Access.PATIENT guarantees it
    control = deps(request).devices
    if control is None:
        raise web.HTTPNotFound()
    device = await control.forget(user.patient_id, request.match_info["device_id"])
    if device is None:
        raise web.HTTPNotFound()
    view = await _my_view(request)
    name = device.name or device.device_id
    message = (
        f"{name} is forgotten: the hub no longer takes readings from it. The readings it "
        "already sent stay in your record. To use it again, pair it again."
    )
    return html(
        pages.my_page(view, user=user, csrf=csrf_token(request), message=message, can_forget=True)
    )


async def my_partial(request: web.Request) -> web.StreamResponse:
    view = await _my_view(request)
    return html(pages.my_live(view, current_user(request).unit))


async def my_readings_csv(request: web.Request) -> web.StreamResponse:
    """Every reading stored for the signed-in patient, as CSV (never anyone else's)."""
    patient = await _own_patient(request)
    readings = await deps(request).read_model.readings(patient.patient_id, since=_EPOCH)
    text = await asyncio.to_thread(
        export.readings_csv, readings, tz=patient_tz(patient), unit=current_user(request).unit
    )
    name = f"glucohub-{patient.patient_id}-readings.csv".replace('"', "")
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def my_glucose_fhir(request: web.Request) -> web.StreamResponse:
    """The signed-in patient's glucose readings as a FHIR R4 searchset of Observations, as
    `GET /fhir/Observation` gives them, with every stored reading rather than the last day."""
    patient = await _own_patient(request)
    readings = await deps(request).read_model.readings(
        patient.patient_id, since=_EPOCH, kinds=GLUCOSE_KINDS
    )
    base_url = str(request.url.with_path("/fhir").with_query(None))
    self_url = str(request.url.with_query(None))

    def build() -> str:
        return json.dumps(fhir.bundle(readings, base_url=base_url, self_url=self_url))

    text = await asyncio.to_thread(build)
    name = f"glucohub-{patient.patient_id}-glucose.fhir.json".replace('"', "")
    return web.Response(
        text=text,
        content_type="application/fhir+json",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- consent (patient's own view) ------------------------------------------------------------


async def consent_page(
    request: web.Request, message: str = "", status: int = 200
) -> web.StreamResponse:
    user = current_user(request)
    assert user.patient_id is not None  # Access.PATIENT guarantees it
    d = deps(request)
    grants = await d.accounts.grants_for_patient(user.patient_id)
    log = await d.accounts.access_log(user.patient_id)
    patient = await d.read_model.get_patient(user.patient_id)
    tz = UTC if patient is None else patient_tz(patient)
    return html(
        pages.consent_page(
            grants, log, user=user, csrf=csrf_token(request), tz=tz, message=message
        ),
        status,
    )


async def consent_get(request: web.Request) -> web.StreamResponse:
    return await consent_page(request)


async def consent_change(request: web.Request) -> web.StreamResponse:
    user: User = current_user(request)
    assert user.patient_id is not None
    form = await request.post()
    clinician = str(form.get("clinician", "")).strip().lower()
    accounts = deps(request).accounts
    granting = request.path.endswith("/grant")
    try:
        if granting:
            changed = await accounts.grant(user.patient_id, clinician, by=user.username)
        else:
            changed = await accounts.revoke(user.patient_id, clinician, by=user.username)
    except AccountError:
        # The same words whether the name is unknown or not a clinician.
        return await consent_page(request, "No clinician with that username.", 400)
    verb = "can now see" if granting else "can no longer see"
    message = f"{clinician} {verb} your data." if changed else "Nothing changed."
    return await consent_page(request, message)


def add_routes(app: web.Application) -> None:
    public = Rule(access=Access.PUBLIC)
    user = Rule(access=Access.USER)
    own = Rule(access=Access.PATIENT)
    scoped = Rule(access=Access.USER, patient_from="match:id")
    offload.install(app, app[DEPS].storage)  # the worker process for reports and FHIR summaries
    templating.install(app)
    add_route(app, "GET", "/login", login_get, public)
    add_route(app, "POST", "/login", login_post, public)
    add_route(app, "POST", "/logout", logout, user)
    add_route(app, "POST", "/prefs", prefs, user)
    add_route(app, "GET", "/", triage, user)
    add_route(app, "GET", "/partials/triage", triage_partial, user)
    add_route(app, "GET", "/alerts", alerts_page, user)
    add_route(app, "GET", "/partials/alerts", alerts_partial, user)
    add_route(app, "POST", "/alerts/{alert_id}/ack", acknowledge, user)
    add_route(
        app, "GET", "/patients/{id}", patient_page,
        Rule(access=Access.USER, patient_from="match:id", audit="page"),
    )  # fmt: skip
    add_route(app, "GET", "/patients/{id}/live", patient_partial, scoped)
    add_route(
        app, "GET", "/patients/{id}/report", report,
        Rule(access=Access.USER, patient_from="match:id", audit="report"),
    )  # fmt: skip
    add_route(
        app, "GET", "/patients/{id}/report.pdf", report_pdf,
        Rule(access=Access.USER, patient_from="match:id", audit="report"),
    )  # fmt: skip
    add_route(app, "POST", "/patients/{id}/snooze", snooze, scoped)
    add_route(
        app, "POST", "/patients/{id}/notes", add_note,
        Rule(access=Access.CLINICIAN, patient_from="match:id"),
    )  # fmt: skip
    if app[DEPS].hub_logs is not None:  # a clinic: each hub's log, batches by hub and seq
        hublogs.add_routes(app)
    else:
        add_route(app, "GET", "/ledger", ledger_page, user)
        # A batch number is 1 to 18 ASCII digits (it fits SQLite's INTEGER); any other path
        # segment is a 404 from the router, like a batch that does not exist. Any signed-in
        # user: what is served is filtered to the patients they may see.
        seq = "{seq:[0-9]{1,18}}"
        add_route(app, "GET", f"/log/batch/{seq}", batch_body, user)
        add_route(app, "GET", f"/log/batch/{seq}/proof", batch_proof, user)
    add_route(app, "GET", "/me", my_page, own)
    add_route(app, "GET", "/me/live", my_partial, own)
    add_route(app, "POST", "/me/devices/{device_id}/forget", forget_device, own)
    add_route(app, "GET", "/me/readings.csv", my_readings_csv, own)
    add_route(app, "GET", "/me/glucose.fhir.json", my_glucose_fhir, own)
    add_route(app, "GET", "/consent", consent_get, own)
    add_route(app, "POST", "/consent/grant", consent_change, own)
    add_route(app, "POST", "/consent/revoke", consent_change, own)


TREATMENT_ROWS = 50  # the patient page's treatments table: the newest of the day


async def _day_treatments(d: Deps, pid: str, since: datetime, now: datetime) -> list[Treatment]:
    """The patient's treatments from `since` (the day chart's, the report's), none when the
    hub keeps none."""
    if d.treatments is None:
        return []
    return await d.treatments.query(pid, since=since, until=now)
