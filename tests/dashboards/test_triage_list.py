"""The triage list at clinic scale: paged, searchable, filtered by team and ward, from the
store's summaries; and the 14-day shares the background task keeps equal to a recomputation.

Expected orders and shares are worked out by hand from the data each test writes."""

from __future__ import annotations

import dataclasses
import re
import struct
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web

from dashboards import offload, triageranges
from dashboards.accounts import AccountRules
from dashboards.context import DEPS
from gateway.model import Patient, Reading, ReadingKind, Source
from gateway.protocols import CgmSeries
from gateway.services import Reader, StoreReadModel
from gateway.storage.postgres_store import PostgresStore
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub.accounts import open_account_storage
from tests.dashboards.conftest import Login, make_app
from tests.dashboards.fakes import NOW, World, cgm

ROW_RE = re.compile(r'data-patient="([^"]+)"')


def add_clinic(world: World, tmp_path: Path, count: int) -> None:
    """`count` more patients for dr-grant: "clinic-000".. in range (120 mg/dL, 2 min ago),
    except every tenth, who is low (65 mg/dL); teams alternate Red/Blue, wards by hundred."""
    registry = Store(tmp_path)
    tables = AccountRules(
        open_account_storage(tmp_path / DB_FILENAME, clock=world.clock), world.clock
    )
    try:
        for i in range(count):
            patient = Patient(
                patient_id=f"clinic-{i:03d}",
                display_name=f"Clinic Patient {i:03d}",
                team="Red" if i % 2 == 0 else "Blue",
                ward=f"Ward {i // 100 + 1}",
            )
            world.model.patients[patient.patient_id] = patient
            registry.add_patient(patient)
            tables.grant(patient.patient_id, "dr-grant", "seed")
            value = 65.0 if i % 10 == 0 else 120.0
            # Their shares as the background task left them (tested below, on real stores).
            world.model.ranges[patient.patient_id] = (0.0, 100.0, NOW, 1)
            world.model.readings_list.append(
                cgm(patient.patient_id, NOW - timedelta(minutes=2), value)
            )
    finally:
        tables.close()
        registry.close()


def rows(html: str) -> list[str]:
    return ROW_RE.findall(html)


async def test_the_list_is_fifty_a_page_most_urgent_first(
    world: World, login: Login, tmp_path: Path
) -> None:
    add_clinic(world, tmp_path, 120)
    dr = await login("dr-grant")
    # 122 patients: the 12 lows (65 mg/dL, 2 min ago; ties by name), then Carol (stale),
    # then Alice and the 108 others in range (ties: worst 14-day TBR, then lower glucose,
    # then name).
    lows = [f"clinic-{i:03d}" for i in range(0, 120, 10)]
    first = await (await dr.get("/")).text()
    assert rows(first)[:13] == [*lows, "pat-c"]
    assert len(rows(first)) == 50
    assert "Patients 1–50 of 122, most urgent first" in first
    assert "Page 1 of 3" in first and 'href="/?page=2" rel="next"' in first
    assert 'rel="prev"' not in first
    # The page audits a view of each patient it shows, and of no other.
    on_first = await world.accounts.access_log(rows(first)[0])
    assert [(e.viewer, e.action) for e in on_first] == [("dr-grant", "triage")]
    assert await world.accounts.access_log("clinic-119") == []  # on page 3: not yet shown
    third = await (await dr.get("/?page=3")).text()
    assert len(rows(third)) == 22 and "Patients 101–122 of 122" in third
    assert 'href="/?page=2" rel="prev"' in third and 'rel="next"' not in third
    pages = [rows(await (await dr.get(f"/partials/triage?page={n}")).text()) for n in (1, 2, 3)]
    seen = [pid for page in pages for pid in page]
    assert len(seen) == len(set(seen)) == 122  # every patient once, over the pages
    # Past the end is the last page; nonsense is the first.
    assert rows(await (await dr.get("/partials/triage?page=99")).text()) == pages[2]
    assert rows(await (await dr.get("/partials/triage?page=abc")).text()) == pages[0]


async def test_search_team_and_ward_narrow_the_list(
    world: World, login: Login, tmp_path: Path
) -> None:
    add_clinic(world, tmp_path, 120)
    dr = await login("dr-grant")
    found = await (await dr.get("/?q=patient+00")).text()  # names "Clinic Patient 000".."009"
    assert sorted(rows(found)) == [f"clinic-{i:03d}" for i in range(10)]
    assert "Patients 1–10 of 10" in found and 'value="patient 00"' in found
    assert rows(await (await dr.get("/partials/triage?q=ALICE")).text()) == ["pat-a"]
    assert rows(await (await dr.get("/partials/triage?q=clinic-11")).text()) == [
        f"clinic-{i}" for i in (110, 111, 112, 113, 114, 115, 116, 117, 118, 119)
    ]
    red_ward2 = rows(await (await dr.get("/partials/triage?team=Red&ward=Ward+2")).text())
    # Ward 2 is clinic-100..119; Red the even ones; the lows (110, 100) first.
    assert red_ward2 == [
        "clinic-100",
        "clinic-110",
        *(f"clinic-{i}" for i in range(102, 120, 2) if i != 110),
    ]
    page = await (await dr.get("/?team=Blue")).text()
    assert "<option selected>Blue</option>" in page and "<option>Red</option>" in page
    assert "<option>Ward 1</option>" in page and "<option>Ward 2</option>" in page
    assert len(rows(page)) == 50 and "of 60" in page
    nobody = await (await dr.get("/?q=zzz")).text()
    assert rows(nobody) == [] and "No patients match this search or filter." in nobody
    assert 'href="/">Clear</a>' in nobody


async def test_a_request_reads_no_fourteen_days_once_shares_are_stored(
    world: World, login: Login
) -> None:
    dr = await login("dr-grant")
    first = await (await dr.get("/partials/triage")).text()
    # Alice's shares (the fakes' world: 130 ± 30 mg/dL, all in range) computed once, when
    # her row was first shown; Carol's too.
    assert ">100%</td>" in first
    assert sorted(c for c in world.model.calls if c.startswith("set_triage_ranges")) == [
        "set_triage_ranges:pat-a",
        "set_triage_ranges:pat-c",
    ]
    world.model.calls.clear()
    again = await (await dr.get("/partials/triage")).text()
    assert again == first
    # One summary query and one query for the page's last 3 hours; no per-patient readings.
    assert not [c for c in world.model.calls if c.startswith(("readings:", "set_triage"))]
    assert "recent_glucose:2" in world.model.calls


# -- the shares, kept by the background task, against a recomputation by hand -------------


def _reading(minutes_before_now: int, value: float, now: datetime, seq: int) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=now - timedelta(minutes=minutes_before_now),
        source=Source.MQTT,
        seq=seq,
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_stored_shares_equal_a_recomputation_from_the_readings(
    world: World, tmp_path: Path, request: pytest.FixtureRequest, backend: str
) -> None:
    """14 days of 5-minute CGM readings, each day 12 at 60 mg/dL, 24 at 200 and 252 at 120:
    on a regular grid every reading holds 5 minutes, so below 70 is 12/288 of the time
    (4.1667 %) and in range 252/288 (87.5 %)."""
    now = world.clock.now()
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else ""
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    store = PostgresStore(url) if url else Store(data_dir)
    reader = Reader(data_dir, url)
    try:
        store.add_patient(Patient(patient_id="p1", display_name="One"))
        day = [60.0] * 12 + [200.0] * 24 + [120.0] * 252
        readings = [_reading(5 * k, day[k % 288], now, k) for k in range(14 * 288)]
        store.write(readings)  # one write
        app = make_app(world)
        app[DEPS].read_model = StoreReadModel(reader)
        runner = web.AppRunner(app)
        await runner.setup()  # starts the app's worker pool and background tasks
        try:
            assert await triageranges.refresh_due(app) == 1
            (summary,) = store.triage_summaries()
            assert summary.below_range_pct == pytest.approx(100 * 12 / 288)
            assert summary.in_range_pct == pytest.approx(100 * 252 / 288)
            assert (summary.ranges_at, summary.writes) == (now, 1)
            assert await triageranges.refresh_due(app) == 0  # nothing due: nothing read

            # 301 s later one more reading at 60 mg/dL (a write): due once the shares are
            # older than CHANGED_EVERY_S. The window [later - 14 d, later] lost the oldest
            # reading (120); the reading at `now` and the new one hold 5 + 1/60 min each.
            world.clock.current = later = now + timedelta(seconds=301)
            store.write([_reading(0, 60.0, later, 99_999)])
            assert await triageranges.refresh_due(app) == 1
            (summary,) = store.triage_summaries()
            both = 2 * (5 + 1 / 60)
            total = 4030 * 5 + both
            assert summary.below_range_pct == pytest.approx(100 * (167 * 5 + both) / total)
            assert summary.in_range_pct == pytest.approx(100 * 3527 * 5 / total)
            assert (summary.ranges_at, summary.writes) == (later, 2)
            assert summary.latest is not None and summary.latest.time == later
        finally:
            await runner.cleanup()
    finally:
        reader.close()
        store.close()


def _days_of(pid: str, device: str, day: list[float], now: datetime) -> list[Reading]:
    """14 days of 5-minute readings repeating `day` (288 values), the newest at `now`."""
    return [
        Reading(
            patient_id=pid,
            device_id=device,
            kind=ReadingKind.CGM_GLUCOSE,
            value=day[k % 288],
            unit=Unit.MG_DL,
            time=now - timedelta(minutes=5 * k),
            source=Source.MQTT,
            seq=k,
        )
        for k in range(14 * 288)
    ]


async def test_patients_are_refreshed_in_batches_by_one_dashboard_process_at_a_time(
    world: World, tmp_path: Path, postgres_url: str
) -> None:
    """Two dashboard processes on one clinic database (two apps, each with its own read
    connection): while one holds the refresh, the other computes nothing; the batch gives
    each patient the shares worked out by hand. p1's day: 12 readings at 60 mg/dL, 24 at 200,
    252 at 120 (below 70: 12/288 = 4.1667 %, in range 252/288 = 87.5 %); p2's all at 200 (0 %
    and 0 %); p3 has only meter readings, which the CGM shares do not count (none)."""
    now = world.clock.now()
    store = PostgresStore(postgres_url)
    readers = [Reader(tmp_path, postgres_url), Reader(tmp_path, postgres_url)]
    runners = []
    try:
        for pid in ("p1", "p2", "p3"):
            store.add_patient(Patient(patient_id=pid, display_name=pid.upper()))
        store.write(_days_of("p1", "cgm-1", [60.0] * 12 + [200.0] * 24 + [120.0] * 252, now))
        store.write(_days_of("p2", "cgm-2", [200.0] * 288, now))
        meter = _days_of("p3", "meter-3", [90.0] * 288, now)[:3]
        store.write([dataclasses.replace(r, kind=ReadingKind.GLUCOSE) for r in meter])
        apps = []
        for reader in readers:
            app = make_app(world)
            app[DEPS].read_model = StoreReadModel(reader)
            runner = web.AppRunner(app)
            await runner.setup()
            runners.append(runner)
            apps.append(app)
        a, b = apps
        assert await b[DEPS].read_model.claim_triage_refresh()
        assert await triageranges.refresh_due(a) == 0  # b holds it: a leaves it to b
        assert {s.ranges_at for s in store.triage_summaries()} == {None}
        await b[DEPS].read_model.release_triage_refresh()
        assert await triageranges.refresh_due(a) == 3  # one batch
        assert await triageranges.refresh_due(b) == 0  # nothing left due for b
        found = {
            s.patient.patient_id: (s.below_range_pct, s.in_range_pct, s.ranges_at)
            for s in store.triage_summaries()
        }
        assert found["p1"][:2] == pytest.approx((100 * 12 / 288, 100 * 252 / 288))
        assert found["p2"] == (0.0, 0.0, now)
        assert found["p3"] == (None, None, now)
        assert found["p1"][2] == now
    finally:
        for runner in runners:
            await runner.cleanup()
        for reader in readers:
            reader.close()
        store.close()


def test_a_patient_whose_values_the_metrics_refuse_leaves_the_others_their_shares() -> None:
    """In the worker: p1 at 60 mg/dL, 5 minutes later 120 (each holds 5 minutes, the last for
    the interval that led up to it: below 70 half the time, in range the other half); p2
    holds a 0, which the metrics refuse: left out, p1 kept."""
    t = (NOW - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    series = [
        CgmSeries(
            patient_id="p1",
            times_us=struct.pack(">2q", t - 300_000_000, t),
            values=struct.pack(">2d", 60.0, 120.0),
        ),
        CgmSeries(
            patient_id="p2",
            times_us=struct.pack(">2q", t - 300_000_000, t),
            values=struct.pack(">2d", 0.0, 100.0),
        ),
    ]
    shares = offload._shares(series, now=NOW, days=14)
    assert list(shares) == ["p1"]
    assert shares["p1"] == pytest.approx((50.0, 50.0))
    assert offload._shares(series[:1], now=NOW, days=14) == shares  # the same alone
