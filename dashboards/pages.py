"""Server-rendered HTML: each page's context for its autoescaped Jinja2 template
(`dashboards/templates`). A few small pieces are still assembled here (the live sections'
latest value and "now", the metrics table), every interpolated value through `esc`; SVG from
charts.py is built from numbers and escaped labels. No inline scripts or styles: the CSP
forbids them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from html import escape

from markupsafe import Markup

from dashboards import jinja, timefmt, triage
from dashboards.accounts import AuditEntry, Grant, Note, Role, User
from dashboards.alerttext import alert_text, kind_label
from dashboards.bands import BY_NAME, GlucoseBand, band_of
from dashboards.glycemia import HIGH_ABOVE, LOW_BELOW, format_glucose, trend_words
from dashboards.treatmentmarks import describe
from dashboards.triage import PatientState
from dashboards.triagelist import Paged, TriageQuery
from gateway.clinical.metrics import BANDS, GlucoseMetrics
from gateway.clinical.report import band_label, band_target
from gateway.model import (
    Alert,
    AlertLevel,
    AlertState,
    Batch,
    Device,
    Patient,
    Reading,
    Treatment,
)
from gateway.protocols import QuarantinedRecord
from gateway.units import Unit


def _time(t: datetime | None, tz: tzinfo = UTC, *, now: datetime | None = None) -> str:
    """Every time on the pages: in `tz` (the patient's zone, else UTC) with the zone named."""
    return timefmt.time_html(t, tz, now=now)


def nav(user: User | None, csrf: str = "") -> str:
    """The top navigation of every signed-in page, empty without a user (templates/nav.html)."""
    if user is None:
        return ""
    return jinja.render(
        "nav.html",
        {
            "user": user,
            "own_patient": user.patient_id if user.role is Role.PATIENT else None,
            "other_unit": (Unit.MMOL_L if user.unit is Unit.MG_DL else Unit.MG_DL).value,
            "csrf": csrf,
        },
    )


def layout(
    title: str,
    body: str,
    *,
    user: User | None,
    csrf: str = "",
    live: str = "",
    live_patient: str = "",
) -> str:
    """A page: `body` (HTML) in the frame every page shares (templates/page.html)."""
    return jinja.render(
        "page.html",
        {
            "title": title,
            "body": Markup(body),
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": live,
            "live_patient": live_patient,
        },
    )


def login_page(*, csrf: str, error: str = "", username: str = "", next_path: str = "") -> str:
    return jinja.render(
        "login.html",
        {
            "title": "Log in",
            "nav": "",
            "csrf": "",
            "login_csrf": csrf,
            "error": error,
            "username": username,
            "next_path": next_path,
        },
    )


def error_page(status: int, reason: str, user: User | None = None, csrf: str = "") -> str:
    return jinja.render(
        "error.html",
        {"title": f"{status} {reason}", "nav": Markup(nav(user, csrf)), "csrf": csrf},
    )


# -- triage --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageRow:
    state: PatientState
    trend: str
    sparkline: str


def _range_labels(unit: Unit) -> tuple[str, str]:
    """The triage list's 14-day columns, named with their limits in the viewer's unit: the
    table's headings and, on a phone, each card's labels."""
    low, high = format_glucose(LOW_BELOW, unit), format_glucose(HIGH_ABOVE, unit)
    return f"In range {low}–{high} {unit.value}, 14 d", f"Below {low} {unit.value}, 14 d"


def triage_rows(
    rows: Sequence[TriageRow],
    *,
    now: datetime,
    unit: Unit,
    empty: str = "No patients have shared their data with you.",
) -> str:
    """One row per patient, most urgent first; the row's class and its reason (in words, so
    colour is never the only signal) come from `dashboards.triage` (templates/triage_rows.html)."""
    shown = []
    for row in rows:
        s = row.state
        p = s.patient
        band = None if s.latest is None else band_of(s.latest.value)
        priority = s.priority(now)
        shown.append(
            {
                "p": p,
                "priority": priority,
                "css": triage.css(priority),
                "reason": s.reason(now, unit),
                "band": band,
                "value": None if s.latest is None else format_glucose(s.latest.value, unit),
                "unit": unit.value,
                "trend": row.trend,
                "since": "never"
                if s.latest is None
                else Markup(_time(s.latest.time, timefmt.patient_zone(p.timezone), now=now)),
                "sparkline": Markup(row.sparkline),
                "tir": "—" if s.in_range_pct is None else f"{s.in_range_pct:.0f}%",
                "tbr": "—" if s.below_range_pct is None else f"{s.below_range_pct:.1f}%",
                "open_alerts": len(s.open_alerts),
            }
        )
    in_range, below = _range_labels(unit)
    return jinja.render(
        "triage_rows.html", {"rows": shown, "empty": empty, "in_range": in_range, "below": below}
    )


def triage_page(
    rows_html: str,
    *,
    user: User,
    csrf: str,
    paged: Paged,
    query: TriageQuery,
    teams: Sequence[str],
    wards: Sequence[str],
) -> str:
    """The patients list, most urgent first, a page at a time, with the search and the team
    and ward filters (templates/triage.html)."""
    in_range, below = _range_labels(user.unit)
    return jinja.render(
        "triage.html",
        {
            "title": "Patients",
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": "triage",
            "in_range": in_range,
            "below": below,
            "rows": Markup(rows_html),
            "paged": paged,
            "query": query,
            "teams": teams,
            "wards": wards,
            "previous": query.url(paged.number - 1) if paged.number > 1 else None,
            "next": query.url(paged.number + 1) if paged.number < paged.pages else None,
            "clear": "/" if query.filtered else None,
        },
    )


# -- patient --------------------------------------------------------------------------------


def alert_rows(
    alerts: Sequence[Alert],
    *,
    unit: Unit,
    names: dict[str, str],
    csrf: str,
    zones: Mapping[str, tzinfo],
    now: datetime,
) -> str:
    """The alerts' table rows (templates/alert_rows.html); `zones`: each patient's own time
    zone (UTC for one not listed)."""
    rows = []
    for a in alerts:
        zone = zones.get(a.patient_id, UTC)
        by = Markup()
        if a.acknowledged_by:
            by = Markup(" by {}").format(a.acknowledged_by)
            if a.acknowledged_at is not None:
                by += Markup(", ") + Markup(_time(a.acknowledged_at, zone, now=now))
        if a.state is AlertState.RAISED and a.patient_acknowledged_by:
            by = Markup(" (seen by the patient, {}").format(a.patient_acknowledged_by)
            if a.patient_acknowledged_at is not None:
                by += Markup(", ") + Markup(_time(a.patient_acknowledged_at, zone, now=now))
            by += Markup(")")
        rows.append(
            {
                "a": a,
                "level": "urgent"
                if a.level in (AlertLevel.URGENT, AlertLevel.ESCALATED)
                else a.level.value,
                "name": names.get(a.patient_id, a.patient_id),
                "swatch": Markup(
                    _swatch(None if a.glucose_mg_dl is None else band_of(a.glucose_mg_dl).css)
                ),
                "kind": kind_label(a.kind),
                "message": alert_text(a, unit),
                "raised": Markup(_time(a.raised_at, zone, now=now)),
                "by": by,
                "may_ack": a.state is AlertState.RAISED,
                "may_snooze": a.state is not AlertState.RESOLVED,
            }
        )
    return jinja.render("alert_rows.html", {"rows": rows, "csrf": csrf})


def alerts_table(rows_html: str) -> str:
    return jinja.render("alerts_table.html", {"rows": Markup(rows_html)})


def alerts_page(rows_html: str, *, user: User, csrf: str) -> str:
    """Open and recent alerts of the patients the user sees (templates/alerts.html)."""
    return jinja.render(
        "alerts.html",
        {
            "title": "Alerts",
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": "alerts",
            "table": Markup(alerts_table(rows_html)),
        },
    )


def metrics_table(
    metrics: Sequence[GlucoseMetrics], unit: Unit, *, fingersticks: Sequence[int] = ()
) -> str:
    """Consensus metrics side by side (e.g. 7/14/30 days), glucose in the viewer's unit.

    The metrics are from CGM readings only; `fingersticks` (meter readings per column) are
    counted in a row of their own below them.
    """

    def pct(value: float | None, digits: int = 1) -> str:
        return "—" if value is None else f"{value:.{digits}f}%"

    def glucose(value: float | None) -> str:
        return "—" if value is None else format_glucose(value, unit)

    rows: list[tuple[str, str | None, list[str]]] = [
        ("CGM readings", None, [f"{m.readings}" for m in metrics]),
        ("CGM active (≥ 70%)", None, [pct(m.active_percent, 0) for m in metrics]),
        (f"Mean glucose ({unit.value})", None, [glucose(m.mean_mg_dl) for m in metrics]),
        ("GMI", None, [pct(m.gmi_percent) for m in metrics]),
        ("CV (≤ 36%)", None, [pct(m.cv_percent) for m in metrics]),
    ]
    for band in BANDS[::-1]:
        target = band_target(band.name, unit)
        label = f"{BY_NAME[band.name].label} {band_label(band.name, unit)} ({target})"
        rows.append(
            (label, BY_NAME[band.name].css, [pct(m.range_percent(band.name)) for m in metrics])
        )
    if fingersticks:
        rows.append(
            (
                "Fingerstick readings (meter, not in the metrics)",
                None,
                [str(n) for n in fingersticks],
            )
        )
    return jinja.render(
        "metrics_table.html", {"columns": [f"{m.days} days" for m in metrics], "rows": rows}
    )


def _swatch(css: str | None) -> str:
    """A small square of a band's colour beside the band's name (the name says it too)."""
    return "" if css is None else f'<span class="swatch {css}" aria-hidden="true"></span>'


@dataclass(frozen=True, slots=True, kw_only=True)
class PatientView:
    patient: Patient
    latest_html: str
    day_chart: str
    agp: str
    agp_days: int
    tir_bar: str
    metrics: str
    devices: Sequence[tuple[Device, datetime | None]]
    alerts_html: str
    batches: Sequence[Batch] = ()
    signed_size: int = 0  # tree size of the latest signed checkpoint
    batch_path: str = "/log/batch"  # its batches: {batch_path}/{seq}[/proof]
    log_key: str = ""  # the log's verifier key, where the page names it (a clinic)
    archived: bool = False  # a batch's time is when a clinic archived it, not sealed it
    notes: Sequence[Note] = ()
    battery_low: Mapping[str, datetime] = field(default_factory=dict)
    treatments: Sequence[Treatment] = ()  # the last 24 hours', newest first
    wearables: str = ""  # the heart-rate and blood-pressure section, already HTML


def patient_live(view: PatientView) -> str:
    """The part of the patient page that live updates refetch."""
    return (
        f'<section class="now">{view.latest_html}</section>'
        f"<section><h2>Last 24 hours</h2>{view.day_chart}</section>"
        f"<section><h2>Alerts</h2>{alerts_table(view.alerts_html)}</section>"
    )


def patient_page(view: PatientView, *, user: User, csrf: str, tz: tzinfo) -> str:
    """The patient page (templates/patient.html); the parts that arrive as HTML (charts,
    metrics table, live section, wearables) are built from numbers and escaped text."""
    p = view.patient
    return jinja.render(
        "patient.html",
        {
            "title": p.display_name,
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": "patient",
            "live_patient": p.patient_id,
            "p": p,
            "view": view,
            "live_html": Markup(patient_live(view)),
            "treatments": Markup(_treatments(view.treatments, tz)),
            "agp": Markup(view.agp),
            "tir_bar": Markup(view.tir_bar),
            "metrics": Markup(view.metrics),
            "wearables": Markup(view.wearables),
            "devices": [
                (
                    d,
                    Markup(_battery(view.battery_low.get(d.device_id), tz)),
                    Markup(_time(seen, tz)),
                )
                for d, seen in view.devices
            ],
            "notes": Markup(_notes(view, user, csrf, tz)),
            "batches": [(b, Markup(_time(b.sealed_at, tz))) for b in view.batches],
            "may_fetch": user.role is not Role.ADMIN,  # the admin receives no records
        },
    )


def _treatments(treatments: Sequence[Treatment], tz: tzinfo) -> str:
    """The last 24 hours' treatments, newest first (those on the chart, in words)."""
    if not treatments:
        return ""
    rows = [
        (Markup(_time(t.time, tz)), what, how, t.notes, t.entered_by)
        for t in treatments
        for what, how in (describe(t),)
    ]
    return jinja.render("treatments_table.html", {"rows": rows})


def _battery(low_since: datetime | None, tz: tzinfo) -> str:
    return (
        "no warning"
        if low_since is None
        else f'<span class="warn">low ({_time(low_since, tz)})</span>'
    )


def _note_time(note: Note, tz: tzinfo) -> str:
    at = timefmt.parse_stored(note.created_at)
    return escape(note.created_at, quote=True) if at is None else _time(at, tz)


def _notes(view: PatientView, user: User, csrf: str, tz: tzinfo) -> str:
    """The clinical notes thread, newest first; clinicians add to it (templates/notes.html)."""
    return jinja.render(
        "notes.html",
        {
            "notes": [(n, Markup(_note_time(n, tz))) for n in view.notes],
            "patient_id": view.patient.patient_id,
            "may_write": user.role is Role.CLINICIAN,
            "csrf": csrf,
        },
    )


# -- consent and access log (the patient's own view) ----------------------------------------


def consent_page(
    grants: Sequence[Grant],
    log: Sequence[AuditEntry],
    *,
    user: User,
    csrf: str,
    tz: tzinfo,
    message: str = "",
) -> str:
    """Who may see the patient's data (grant, revoke) and who looked (templates/consent.html),
    times on the patient's clock (`tz`) and what was looked at in words, as on their own page."""
    return jinja.render(
        "consent.html",
        {
            "title": "Sharing and access log",
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "message": message,
            "grants": [(g, Markup(_time(g.granted_at, tz))) for g in grants],
            "log": [
                (e, Markup(_time(e.time, tz)), _ACTION_WORDS.get(e.action, e.action)) for e in log
            ],
        },
    )


# -- the patient's own view -----------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class MyView:
    """What a signed-in patient sees about themselves, in plain words."""

    patient: Patient
    latest: Reading | None
    trend: str  # the arrow
    week: GlucoseMetrics  # the last 7 days
    day_chart: str
    alerts_html: str
    devices: Sequence[tuple[Device, datetime | None]]
    battery_low: Mapping[str, datetime]
    grants: Sequence[Grant]
    views: Sequence[AuditEntry]  # who else looked at the record, newest first
    now: datetime
    tz: tzinfo


_ACTION_WORDS = {
    "page": "your record",
    "triage": "your latest glucose in their patient list",
    "report": "your AGP report",
    "fhir": "your readings (FHIR)",
    "api.readings": "your readings (API)",
    "api.patient": "your details (API)",
}


def my_live(view: MyView, unit: Unit) -> str:
    """The part of the patient's own view that live updates refetch (templates/my_live.html)."""
    latest = view.latest
    now = None
    if latest is not None:
        now = {
            "value": format_glucose(latest.value, unit),
            "band": band_of(latest.value),
            "trend": view.trend,
            "trend_words": trend_words(view.trend),
            "ago": timefmt.ago(latest.time, view.now),
            "at": Markup(_time(latest.time, view.tz)),
        }
    week = view.week
    in_week = None
    if week.readings:
        in_week = {
            "low": format_glucose(LOW_BELOW, unit),
            "high": format_glucose(HIGH_ABOVE, unit),
            "in_range": week.range_percent("in_range"),
            "below": week.range_percent("very_low") + week.range_percent("low"),
            "above": week.range_percent("high") + week.range_percent("very_high"),
        }
    return jinja.render(
        "my_live.html",
        {
            "latest": now,
            "week": in_week,
            "unit": unit.value,
            "day_chart": Markup(view.day_chart),
            "alerts": Markup(alerts_table(view.alerts_html)),
        },
    )


def my_page(
    view: MyView, *, user: User, csrf: str, message: str = "", can_forget: bool = False
) -> str:
    """The patient's own view (templates/my.html); `message` says what an action did,
    `can_forget` offers to forget each device."""
    devices = []
    for device, seen in view.devices:
        low_since = view.battery_low.get(device.device_id)
        devices.append(
            {
                "id": device.device_id,
                "name": device.name or device.device_id,
                "kind": device.kind.value.replace("_", " "),
                "seen": None if seen is None else Markup(_time(seen, view.tz, now=view.now)),
                "low_since": None if low_since is None else Markup(_time(low_since, view.tz)),
            }
        )
    return jinja.render(
        "my.html",
        {
            "title": "My glucose",
            "message": message,
            "can_forget": can_forget,
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": "mine",
            "live_patient": view.patient.patient_id,
            "live_html": Markup(my_live(view, user.unit)),
            "devices": devices,
            "clinicians": [g.clinician for g in view.grants],
            "unit": user.unit.value,
            "zone": timefmt.zone_name(view.tz),
            "views": [
                (e, Markup(_time(e.time, view.tz)), _ACTION_WORDS.get(e.action, e.action))
                for e in view.views
            ],
        },
    )


# -- ledger ---------------------------------------------------------------------------------


def ledger_page(
    batches: Sequence[Batch],
    *,
    checkpoint: str | None,
    verifier_key: str,
    quarantined: Sequence[QuarantinedRecord] = (),
    user: User,
    csrf: str,
) -> str:
    """The ledger: the latest checkpoint and its signers, the batches, quarantined records
    (templates/ledger.html)."""
    return jinja.render(
        "ledger.html",
        {
            "title": "Ledger",
            "nav": Markup(nav(user, csrf)),
            "csrf": csrf,
            "live": "ledger",
            "checkpoint": checkpoint,
            "signers": signature_names(checkpoint or ""),
            "verifier_key": verifier_key,
            "batches": [
                (
                    b,
                    Markup(_time(b.first_time)),
                    Markup(_time(b.last_time)),
                    Markup(_time(b.sealed_at)),
                )
                for b in batches
            ],
            "may_fetch": user.role is not Role.ADMIN,  # the admin sees no health data
            "quarantined": quarantined,
        },
    )


def signature_names(note: str) -> list[str]:
    """Key names of a signed note's signature lines, in order (C2SP signed-note: after the
    blank line, each line is "— NAME BASE64"); the first is the log's own signature."""
    _, sep, signatures = note.partition("\n\n")
    if not sep:
        return []
    return [
        line[2:].rsplit(" ", 1)[0]
        for line in signatures.splitlines()
        if line.startswith("— ") and " " in line[2:]
    ]


def latest_html(
    value: str,
    unit: Unit,
    trend: str,
    minutes: float | None,
    *,
    at: datetime | None = None,
    tz: tzinfo = UTC,
    band: GlucoseBand | None = None,
) -> str:
    since = "no readings" if minutes is None else timefmt.ago_minutes(minutes)
    return jinja.render(
        "latest.html",
        {
            "value": value,
            "unit": unit.value,
            "band": band,
            "trend": trend,
            "since": since,
            "when": None if at is None else Markup(_time(at, tz)),
        },
    )
