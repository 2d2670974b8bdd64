"""The triage list ranked and paged in SQL (`triage_page`), on SQLite and on PostgreSQL,
against its specification: `dashboards.triage.rank` in Python over the same stored summaries
and alerts (`dashboards.triagelist.reference_page`), at arbitrary times, with the filters,
the viewer's allowed patients and every page. A small clinic worked out by hand first."""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboards.triagelist import reference_page
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    DeviceEvent,
    DeviceEventKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
)
from gateway.protocols import TriagePage
from gateway.storage.postgres_store import PostgresStore
from gateway.units import Unit
from tests.storage.conftest import AnyStore, Backend

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def reading(
    pid: str, at: datetime, value: float, kind: ReadingKind = ReadingKind.CGM_GLUCOSE
) -> Reading:
    return Reading(
        patient_id=pid,
        device_id=f"{pid}/dev",
        kind=kind,
        value=value,
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=int((at - T0).total_seconds() * 1000) + 10**12,
    )


def alert(
    alert_id: str,
    pid: str,
    kind: AlertKind,
    raised_at: datetime,
    *,
    glucose: float | None = None,
    state: AlertState = AlertState.RAISED,
) -> Alert:
    return Alert(
        alert_id=alert_id,
        patient_id=pid,
        kind=kind,
        level=AlertLevel.WARNING,
        state=state,
        raised_at=raised_at,
        updated_at=raised_at,
        message=kind.value,
        glucose_mg_dl=glucose,
        resolved_at=raised_at if state is AlertState.RESOLVED else None,
    )


def battery(pid: str, device: str, at: datetime) -> DeviceEvent:
    return DeviceEvent(patient_id=pid, device_id=device, kind=DeviceEventKind.BATTERY_LOW, time=at)


def ids(page: TriagePage) -> list[str]:
    return [s.patient.patient_id for s in page.summaries]


# -- a small clinic, by hand --------------------------------------------------------------


def test_a_small_clinic_in_the_documented_order(backend: Backend) -> None:
    """Each patient's place worked out from the rules (gateway.clinical.urgency), at T0."""
    store = backend.open()
    names = {
        "fine": "Fine",  # 120 two minutes ago, 1 % below range
        "worse-tbr": "Worse",  # 120, 6 % below range: first of those in range
        "vlow": "Vee",  # 50 a minute ago: very low
        "low-alert": "Lou",  # 120 now, but an open low alert raised 30 min ago (62)
        "low-other": "Lin",  # 120 now, an open low alert raised 20 min ago (60)
        "low-fresh": "Les",  # 65 now, no alert: low, 0 minutes in it
        "quarter": "Quinn",  # 120 exactly 15 minutes ago: not stale yet, in range
        "stale": "Stan",  # 40 twenty minutes ago: too old to place by it -> data problem
        "never": "Nev",  # no reading: data problem, last among them
        "battery": "Bat",  # 120 now, a battery report a day ago -> data problem, silence 0
        "old-battery": "Obi",  # 120 now, a battery report 8 days ago: in range
        "week-battery": "Wyn",  # 120 now, a battery report exactly 7 days ago: still counts
        "vhigh": "Vic",  # 300 now: very high
        "high-a": "anna",  # 200, and "Anna" below: same values, names casefold alike
        "high-b": "Anna",
        "resolved": "Res",  # an urgent-low alert, resolved: in range (100)
        "hidden": "Hid",  # very low, but not allowed: never counted
    }
    for pid, name in names.items():
        store.add_patient(Patient(patient_id=pid, display_name=name, team="T"))
    minute = timedelta(minutes=1)
    store.write(
        [
            reading("fine", T0 - 2 * minute, 120),
            reading("worse-tbr", T0 - 2 * minute, 120),
            reading("vlow", T0 - minute, 50),
            reading("low-alert", T0, 120),
            reading("low-fresh", T0, 65),
            reading("low-other", T0, 120),
            reading("quarter", T0 - 15 * minute, 120),
            reading("week-battery", T0, 120),
            reading("stale", T0 - 20 * minute, 40),
            reading("battery", T0, 120),
            reading("old-battery", T0, 120),
            reading("vhigh", T0, 300),
            reading("high-a", T0, 200),
            reading("high-b", T0, 200),
            reading("resolved", T0, 100),
            reading("hidden", T0, 45),
        ],
        [
            battery("battery", "battery/pen", T0 - timedelta(days=1)),
            battery("old-battery", "old-battery/pen", T0 - timedelta(days=8)),
            battery("week-battery", "week-battery/pen", T0 - timedelta(days=7)),
        ],
    )
    store.record_alerts(
        [
            # Two of Lou's alerts place her low: the earlier (30 min, 62) is the evidence.
            alert("a0", "low-alert", AlertKind.SUSTAINED_LOW, T0 - 10 * minute, glucose=55),
            alert("a1", "low-alert", AlertKind.LOW, T0 - 30 * minute, glucose=62),
            alert("a3", "low-other", AlertKind.LOW, T0 - 20 * minute, glucose=60),
            alert("a2", "resolved", AlertKind.URGENT_LOW, T0 - minute, state=AlertState.RESOLVED),
        ],
        {},
    )
    for pid, below in (("fine", 1.0), ("worse-tbr", 6.0), ("old-battery", 1.0)):
        store.set_triage_ranges(
            pid, below_range_pct=below, in_range_pct=90.0, computed_at=T0, writes=1
        )
    allowed = frozenset(names) - {"hidden"}
    page = store.triage_page(allowed=allowed, now=T0, offset=0, limit=50)
    assert ids(page) == [
        "vlow",
        "low-alert",  # low for 30 minutes (its earlier alert), 20, then 0 (a fresh reading)
        "low-other",
        "low-fresh",
        "vhigh",
        "high-a",  # "anna" and "Anna": 200 both, names casefold alike; then the patient id
        "high-b",
        "stale",  # silent 20 minutes
        "battery",  # silent 0 minutes (the battery), 120 as Wyn: "bat" before "wyn"
        "week-battery",
        "never",  # silent since ever: last
        "worse-tbr",  # in range, worst time below range first
        "fine",  # 1 %, 120: ties with old-battery (1 %, 120) and goes by name: Fine < Obi
        "old-battery",
        "resolved",  # 0 % (never computed), 100
        "quarter",  # 0 % (never computed), 120
    ]
    assert (page.total, page.offset) == (16, 0)
    # The page's unresolved alerts, earliest first.
    assert [a.alert_id for a in page.open_alerts] == ["a1", "a3", "a0"]
    # Pages of five: 16 patients, the fourth page has one; past the end is the last page.
    second = store.triage_page(allowed=allowed, now=T0, offset=5, limit=5)
    assert ids(second) == ids(page)[5:10] and second.total == 16
    last = store.triage_page(allowed=allowed, now=T0, offset=500, limit=5)
    assert (ids(last), last.offset, last.total) == (["quarter"], 15, 16)
    # Sixteen minutes on, the fresh readings are stale too: only the alerts still place.
    later = store.triage_page(allowed=allowed, now=T0 + 16 * minute, offset=0, limit=4)
    assert ids(later) == ["low-alert", "low-other", "stale", "quarter"]  # silent 36, 31 min
    assert store.triage_page(allowed=frozenset(), now=T0, offset=0, limit=5) == TriagePage(
        summaries=(), open_alerts=(), total=0, offset=0
    )
    assert ids(store.triage_page(allowed=allowed, now=T0, offset=0, limit=50, search="ANNA")) == [
        "high-a",
        "high-b",
    ]


# -- the SQL against the specification, on generated clinics ------------------------------

NAMES = [
    "Ann",
    "ann",
    "ANN",
    "Émile",
    "émile",
    "Straße",
    "STRASSE",
    "Zoë",
    "zoe",
    "Bob",
    "王芳",
    "ǅemal",
]
VALUES = [
    40.0,
    53.9,
    54.0,
    60.0,
    69.9,
    70.0,
    120.0,
    120.0,
    180.0,
    180.5,
    200.0,
    250.0,
    250.5,
    300.0,
]
# Before `T0` (s): the stale boundary (900 s) and a battery report's week on both sides.
AGES = [0.0, 0.0, 60.0, 899.999, 900.0, 900.0, 900.001, 3600.0, 604_800.0, 604_800.001]
BATTERY_AGES = [0.0, 3600.0, 604_799.999, 604_800.0, 604_800.0, 604_800.001]
NOWS = [
    timedelta(0),
    timedelta(microseconds=500),  # between two stored milliseconds
    timedelta(milliseconds=1),
    timedelta(seconds=-30),  # readings "from the future" for this `now`
    timedelta(minutes=15),
    timedelta(days=7, microseconds=1),
]
GLUCOSE = [None, 50.0, 62.0, 65.0, 200.0, 300.0]
# Several kinds per priority (two low, two high), one of no priority, the rest now and then.
KINDS = [
    *[AlertKind.LOW, AlertKind.SUSTAINED_LOW, AlertKind.HIGH, AlertKind.SUSTAINED_HIGH] * 3,
    AlertKind.FALLING_FAST,
    *AlertKind,
]
TEAMS = [None, "Red", "Blue"]


@dataclass(frozen=True)
class Spec:
    name: str
    team: str | None
    ward: str | None
    latest: tuple[float, float, bool] | None  # (age s, value, from a meter)
    batteries: tuple[float, ...]  # ages of battery-low reports, one device each
    below: float | None
    alerts: tuple[tuple[AlertKind, AlertState, float, float | None, str], ...]


patients = st.builds(
    Spec,
    name=st.sampled_from(NAMES),
    team=st.sampled_from(TEAMS),
    ward=st.sampled_from([None, "W1"]),
    latest=st.none() | st.tuples(st.sampled_from(AGES), st.sampled_from(VALUES), st.booleans()),
    batteries=st.lists(st.sampled_from(BATTERY_AGES), max_size=2).map(tuple),
    below=st.sampled_from([None, 0.0, 1.5, 4.0, 4.0]),
    alerts=st.lists(
        st.tuples(
            st.sampled_from(KINDS),
            st.sampled_from([AlertState.RAISED, AlertState.RAISED, *AlertState]),
            st.sampled_from([-60.0, 0.0, 0.0, 300.0, 1800.0]),  # raised this long before T0
            st.sampled_from(GLUCOSE),
            st.sampled_from(["a", "b", "c"]),
        ),
        max_size=3,
    ).map(tuple),
)
_clinics = itertools.count()


def _store_clinic(store: AnyStore, specs: Sequence[Spec]) -> list[str]:
    prefix = f"c{next(_clinics)}"
    pids = []
    readings, events, alerts = [], [], []
    for i, spec in enumerate(specs):
        pid = f"{prefix}/p{i}"
        pids.append(pid)
        store.add_patient(
            Patient(patient_id=pid, display_name=spec.name, team=spec.team, ward=spec.ward)
        )
        if spec.latest is not None:
            age, value, meter = spec.latest
            kind = ReadingKind.GLUCOSE if meter else ReadingKind.CGM_GLUCOSE
            readings.append(reading(pid, T0 - timedelta(seconds=age), value, kind))
        events.extend(
            battery(pid, f"{pid}/d{n}", T0 - timedelta(seconds=age))
            for n, age in enumerate(spec.batteries)
        )
        for n, (kind, state, before, glucose, tag) in enumerate(spec.alerts):
            raised = T0 - timedelta(seconds=before)
            alerts.append(alert(f"{pid}/{tag}{n}", pid, kind, raised, glucose=glucose, state=state))
    store.write(readings, events)
    store.record_alerts(alerts, {})
    for pid, spec in zip(pids, specs, strict=True):
        if spec.below is not None:
            store.set_triage_ranges(
                pid, below_range_pct=spec.below, in_range_pct=50.0, computed_at=T0, writes=1
            )
    return pids


def _expected(
    store: AnyStore,
    allowed: frozenset[str],
    now: datetime,
    offset: int,
    limit: int,
    **wanted: str | None,
) -> TriagePage:
    summaries = store.triage_summaries(**wanted)  # type: ignore[arg-type]
    return reference_page(
        summaries,
        store.alerts(open_only=True),
        allowed=allowed,
        now=now,
        offset=offset,
        limit=limit,
    )


def _compare(found: TriagePage, expected: TriagePage) -> None:
    assert ids(found) == ids(expected)
    assert (found.total, found.offset) == (expected.total, expected.offset)
    assert found.summaries == expected.summaries
    assert [a.alert_id for a in found.open_alerts] == [a.alert_id for a in expected.open_alerts]


@pytest.mark.parametrize("backend_name", ["sqlite", "postgresql"])
def test_the_sql_order_is_the_specifications(
    backend_name: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    url = request.getfixturevalue("postgres_url") if backend_name == "postgresql" else None
    backend = Backend(backend_name, tmp_path_factory.mktemp("data") / "hub", url)
    store = backend.open()

    @settings(
        max_examples=100,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        specs=st.lists(patients, min_size=1, max_size=12),
        hide=st.sets(st.integers(0, 11), max_size=3),
        moments=st.lists(st.sampled_from(NOWS), min_size=1, max_size=3, unique=True),
        page_size=st.integers(1, 4),
        team=st.sampled_from(TEAMS),
        search=st.sampled_from(["", "ann", "STRASSE", "émile", "/p1", "zz"]),
    )
    def check(
        specs: list[Spec],
        hide: set[int],
        moments: list[timedelta],
        page_size: int,
        team: str | None,
        search: str,
    ) -> None:
        pids = _store_clinic(store, specs)
        allowed = frozenset(p for i, p in enumerate(pids) if i not in hide)
        for shift in moments:
            now = T0 + shift
            whole = store.triage_page(allowed=allowed, now=now, offset=0, limit=100)
            _compare(whole, _expected(store, allowed, now, 0, 100))
            assert set(ids(whole)) == allowed  # every allowed patient, nobody else
            # Page by page, the same order; past the end, the last page.
            pages = [
                store.triage_page(allowed=allowed, now=now, offset=o, limit=page_size)
                for o in range(0, len(pids) + page_size, page_size)
            ]
            for n, page in enumerate(pages):
                _compare(page, _expected(store, allowed, now, n * page_size, page_size))
            filtered = store.triage_page(
                allowed=allowed, now=now, offset=0, limit=100, team=team, search=search
            )
            _compare(filtered, _expected(store, allowed, now, 0, 100, team=team, search=search))

    try:
        check()
    finally:
        for opened in backend.opened:
            opened.close()


# -- care units of the allowed patients; one refresher at a time --------------------------


def test_care_unit_names_are_those_of_the_allowed_patients(backend: Backend) -> None:
    store = backend.open()
    store.add_patient(Patient(patient_id="a", display_name="A", team="Red", ward="W1"))
    store.add_patient(Patient(patient_id="b", display_name="B", team="Blue", ward=None))
    store.add_patient(Patient(patient_id="c", display_name="C", team=None, ward="W9"))
    store.add_patient(Patient(patient_id="d", display_name="D", team="Red", ward="W1"))
    teams, wards = store.care_unit_names(frozenset({"a", "c", "d"}))
    assert (sorted(teams), sorted(wards)) == (["Red"], ["W1", "W9"])
    assert store.care_unit_names(frozenset()) == ([], [])


def test_one_connection_at_a_time_holds_the_refresh(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        assert first.claim_triage_refresh()
        assert first.claim_triage_refresh()  # held already: still its own
        assert not second.claim_triage_refresh()
        first.release_triage_refresh()
        assert second.claim_triage_refresh()
        assert not first.claim_triage_refresh()
    finally:
        second.close()  # a process that dies lets go with its connection
    try:
        deadline = time.monotonic() + 10  # once its server process has noticed
        while not first.claim_triage_refresh():
            assert time.monotonic() < deadline, "the closed connection's lock was kept"
            time.sleep(0.05)
        first.release_triage_refresh()
        with psycopg.connect(postgres_url) as db:
            row = db.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'").fetchone()
        assert row == (0,)  # released once, though claimed twice
    finally:
        first.close()
