"""The one rule for times on the dashboards: an instant is shown in the patient's own IANA zone
with the zone named ("2026-07-01 14:00 CEST"); times tied to no patient say UTC. Where
clinicians scan (triage, latest reading, alerts) a relative age is shown too ("4 min ago")."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from html import escape
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.clock import to_rfc3339


def patient_zone(name: str) -> tzinfo:
    """The patient's IANA zone; UTC (and so labelled) for a name the database does not know."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def zone_label(local: datetime) -> str:
    """The zone's abbreviation at that instant ("CEST", "GMT"), or its offset where the zone
    has no abbreviation ("UTC+04:00" rather than tzdata's numeric "+04")."""
    name = local.tzname() or ""
    if name and name[0] not in "+-":
        return name
    offset = local.utcoffset()
    total = 0 if offset is None else int(offset.total_seconds()) // 60
    sign = "+" if total >= 0 else "-"
    return f"UTC{sign}{abs(total) // 60:02d}:{abs(total) % 60:02d}"


def local_text(t: datetime, tz: tzinfo) -> str:
    """ "2026-07-01 14:00 CEST": the instant in `tz`, the zone named."""
    local = t.astimezone(tz)
    return f"{local:%Y-%m-%d %H:%M} {zone_label(local)}"


def zone_name(tz: tzinfo) -> str:
    return tz.key if isinstance(tz, ZoneInfo) else str(tz)


def ago(t: datetime, now: datetime) -> str:
    """A relative age for scanning: "just now", "4 min ago", "3 h ago", "2 days ago"."""
    return ago_minutes((now - t).total_seconds() / 60)


def ago_minutes(elapsed: float) -> str:
    minutes = max(0, int(elapsed))
    if minutes < 1:
        return "just now"
    if minutes < 120:
        return f"{minutes} min ago"
    hours = minutes // 60
    if hours < 48:
        return f"{hours} h ago"
    return f"{hours // 24} days ago"


def time_html(t: datetime | None, tz: tzinfo, *, now: datetime | None = None) -> str:
    """A <time> element: the local time with its zone (the zone's full name on hover), and
    with `now`, the relative age after it."""
    if t is None:
        return "—"
    text = local_text(t, tz)
    title = f"{text} ({zone_name(tz)})"
    relative = "" if now is None else f' <span class="ago">· {escape(ago(t, now))}</span>'
    return (
        f'<time datetime="{to_rfc3339(t)}" title="{escape(title)}">{escape(text)}</time>{relative}'
    )


def utc_html(t: datetime | None) -> str:
    """A time tied to no patient (ledger, access log): in UTC, saying so."""
    return time_html(t, UTC)


def parse_stored(text: str) -> datetime | None:
    """An RFC 3339 time as the account tables store it; None if it is not one."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
