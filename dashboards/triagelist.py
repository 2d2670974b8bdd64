"""The triage list at clinic scale: what a request asks for (page, search, team, ward), and
the ranked, paged patients from the store's summaries. Pure: no I/O, `now` given.

Ranking is `dashboards.triage.rank` over every patient the viewer may see that matches the
filters, from one summary row each (a few thousand rows take milliseconds); only the page
shown then reads readings (its sparklines) — see `dashboards.views.triage`.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from dashboards.triage import PatientState, rank
from gateway.model import Alert, AlertState
from gateway.protocols import TriageSummary

PAGE_SIZE = 50
SEARCH_MAX = 100  # characters of a search kept
BATTERY_WARNING_DAYS = 7  # a device's battery-low report is shown this long


@dataclass(frozen=True, slots=True, kw_only=True)
class TriageQuery:
    page: int = 1
    search: str = ""
    team: str | None = None
    ward: str | None = None

    @classmethod
    def parse(cls, query: Mapping[str, str]) -> TriageQuery:
        """From the request's query string; anything malformed is read as not given."""
        raw = query.get("page", "1")
        page = int(raw) if raw.isdigit() and 0 < len(raw) <= 6 else 1
        return cls(
            page=max(1, page),
            search=" ".join(query.get("q", "").split())[:SEARCH_MAX],
            team=query.get("team", "").strip() or None,
            ward=query.get("ward", "").strip() or None,
        )

    def url(self, page: int) -> str:
        """This query on another page, as a link."""
        params = [("q", self.search), ("team", self.team or ""), ("ward", self.ward or "")]
        kept = [(k, v) for k, v in params if v]
        if page > 1:
            kept.append(("page", str(page)))
        return "/?" + urlencode(kept) if kept else "/"

    @property
    def filtered(self) -> bool:
        return bool(self.search or self.team or self.ward)


@dataclass(frozen=True, slots=True, kw_only=True)
class Paged:
    states: list[PatientState]  # this page's, most urgent first
    number: int  # 1-based; past the end is the last page
    pages: int  # at least 1
    total: int  # patients matching, over all pages

    @property
    def first(self) -> int:
        """1-based position of the page's first patient (0 for an empty list)."""
        return 0 if not self.total else (self.number - 1) * PAGE_SIZE + 1

    @property
    def last(self) -> int:
        return self.first + len(self.states) - 1 if self.states else 0


def battery_ids(summary: TriageSummary, now: datetime) -> tuple[str, ...]:
    since = now - timedelta(days=BATTERY_WARNING_DAYS)
    return tuple(sorted(d for d, at in summary.battery_low.items() if at >= since))


def ranked_page(
    summaries: Iterable[TriageSummary],
    open_alerts: Iterable[Alert],
    *,
    allowed: Collection[str],
    page: int,
    now: datetime,
) -> Paged:
    """The viewer's patients (`allowed`) among `summaries`, ranked, and page `page` of them.
    `PatientState.battery_low` holds device ids here; the caller names the page's devices."""
    mine = [s for s in summaries if s.patient.patient_id in allowed]
    alerts: dict[str, list[Alert]] = defaultdict(list)
    for alert in open_alerts:
        if alert.state is not AlertState.RESOLVED:
            alerts[alert.patient_id].append(alert)
    states = [
        PatientState(
            patient=s.patient,
            latest=s.latest,
            open_alerts=tuple(alerts.get(s.patient.patient_id, ())),
            below_range_pct=s.below_range_pct,
            in_range_pct=s.in_range_pct,
            battery_low=battery_ids(s, now),
        )
        for s in mine
    ]
    pages = max(1, math.ceil(len(states) / PAGE_SIZE))
    number = min(page, pages)
    ordered = rank(states, now)
    shown = ordered[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]
    return Paged(states=shown, number=number, pages=pages, total=len(states))


def care_unit_choices(
    units: Sequence[tuple[str, str | None, str | None]], allowed: Collection[str]
) -> tuple[list[str], list[str]]:
    """The teams and the wards of the viewer's patients, sorted: the filter's choices."""
    mine = [(team, ward) for pid, team, ward in units if pid in allowed]
    teams = sorted({t for t, _ in mine if t}, key=str.casefold)
    wards = sorted({w for _, w in mine if w}, key=str.casefold)
    return teams, wards
