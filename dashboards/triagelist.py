"""The triage list at clinic scale: what a request asks for (page, search, team, ward), and
the page's patients as `PatientState`s. Pure: no I/O, `now` given.

The store ranks and pages the list in SQL (`ReadModel.triage_page`, by the rules of
`gateway.clinical.urgency`), so a request reads back only the page's summaries and their
open alerts; only the page shown then reads readings (its sparklines) — see
`dashboards.views.triage`. `reference_page` is the same page worked out in Python from every
summary with `dashboards.triage.rank`: what the tests hold the stores to.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from dashboards.triage import PatientState, rank
from gateway.clinical.urgency import BATTERY_WARNING
from gateway.model import Alert, AlertState
from gateway.protocols import TriagePage, TriageSummary

PAGE_SIZE = 50
SEARCH_MAX = 100  # characters of a search kept
BATTERY_WARNING_DAYS = BATTERY_WARNING.days  # a device's battery-low report is shown this long


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

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_SIZE


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
    since = now - BATTERY_WARNING
    return tuple(sorted(d for d, at in summary.battery_low.items() if at >= since))


def _state(summary: TriageSummary, alerts: Iterable[Alert], now: datetime) -> PatientState:
    return PatientState(
        patient=summary.patient,
        latest=summary.latest,
        open_alerts=tuple(alerts),
        below_range_pct=summary.below_range_pct,
        in_range_pct=summary.in_range_pct,
        battery_low=battery_ids(summary, now),
    )


def _open_by_patient(open_alerts: Iterable[Alert]) -> dict[str, list[Alert]]:
    alerts: dict[str, list[Alert]] = defaultdict(list)
    for alert in open_alerts:
        if alert.state is not AlertState.RESOLVED:
            alerts[alert.patient_id].append(alert)
    return alerts


def paged(page: TriagePage, now: datetime) -> Paged:
    """The store's page as the list shows it, in the store's order. `PatientState.battery_low`
    holds device ids here; the caller names the page's devices."""
    alerts = _open_by_patient(page.open_alerts)
    states = [_state(s, alerts.get(s.patient.patient_id, ()), now) for s in page.summaries]
    return Paged(
        states=states,
        number=page.offset // PAGE_SIZE + 1,
        pages=max(1, math.ceil(page.total / PAGE_SIZE)),
        total=page.total,
    )


def reference_page(
    summaries: Iterable[TriageSummary],
    open_alerts: Iterable[Alert],
    *,
    allowed: Collection[str],
    now: datetime,
    offset: int,
    limit: int,
) -> TriagePage:
    """What `ReadModel.triage_page` answers for these (already filtered) summaries, worked
    out in Python with `dashboards.triage.rank`: the reference of tests and fakes."""
    mine = {s.patient.patient_id: s for s in summaries if s.patient.patient_id in allowed}
    alerts = _open_by_patient(open_alerts)
    ordered = rank([_state(s, alerts.get(pid, ()), now) for pid, s in mine.items()], now)
    if offset >= len(ordered):
        offset = max(0, (len(ordered) - 1) // limit * limit)
    shown = [state.patient.patient_id for state in ordered[offset : offset + limit]]
    return TriagePage(
        summaries=tuple(mine[pid] for pid in shown),
        open_alerts=tuple(
            sorted(
                (a for pid in shown for a in alerts.get(pid, ())),
                key=lambda a: (a.raised_at, a.alert_id),
            )
        ),
        total=len(ordered),
        offset=offset,
    )


def care_unit_choices(names: tuple[list[str], list[str]]) -> tuple[list[str], list[str]]:
    """The teams and the wards of the viewer's patients (`ReadModel.care_unit_names`),
    sorted: the filter's choices."""
    teams, wards = names
    return (
        sorted({t for t in teams if t}, key=str.casefold),
        sorted({w for w in wards if w}, key=str.casefold),
    )
