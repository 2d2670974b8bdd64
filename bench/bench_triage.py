"""The clinician's triage list at clinic scale (issue 15): p95 latency of the page over HTTP for
5,000 patients with 14 days of CGM data each on PostgreSQL, against a baseline measured in the
same run on the same server: a bare indexed SELECT of the page's summary rows (the 50 rows the
page shows, by primary key, joined to their patients) from psycopg, no HTTP, no ranking.

The data: one CGM per patient, a reading every 5 minutes for 14 days (4,032 each, 20 million
in all). Each patient's latest reading goes through the store's write path (`write`), which
keeps the triage summary; the 4,031 older ones are loaded with `COPY` straight into `readings`
(sealed: batch_seq 0), as data already stored. 10 % of patients are silent for an hour, 5 %
have an open low alert. Every patient's 14-day shares are stored as the background task
leaves them (from the same grid: each reading holds 5 minutes, so a share is a count); a
batch of patients is refreshed by the real task (`dashboards.triageranges.refresh`, batched
with `metrics_for_many`) and must agree, which also times it.

The page is served by the real dashboard app (`create_app` over `StoreReadModel` and the real
accounts, one clinician granted every patient), asked for sequentially by one client: the
first page, the last page, a team filter and a name search. The store's ranked, paged query
alone (`triage_page`, no HTTP) is timed too. The server keeps fsync on.

    .venv/bin/python -m bench bench_triage
    .venv/bin/python bench/bench_triage.py [PATIENTS [SQLITE_PATIENTS]]
"""

from __future__ import annotations

import asyncio
import math
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards import accounts as accounts_module
from dashboards import triageranges
from dashboards.accounts import AccountRules, Role
from dashboards.app import create_app, serve
from dashboards.context import DEPS
from dashboards.triagelist import PAGE_SIZE
from gateway.clock import to_rfc3339
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    Device,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import TriageRanges
from gateway.services import Reader, StoreReadModel
from gateway.settings import DashboardSettings
from gateway.storage.postgres_migrations import ensure_month_partition
from gateway.storage.postgres_store import PostgresStore
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub.accounts import open_account_storage, open_accounts
from tests.dashboards.fakes import (
    FakeAlertControl,
    FakeClock,
    FakeLedger,
    FakeLiveFeed,
    FakeReadModel,
    FakeStatus,
)
from tests.support.postgres import Postgres

DEFAULT_PATIENTS = 5_000
DEFAULT_SQLITE_PATIENTS = 500
DAY = 288  # 5-minute readings a day
READINGS = 14 * DAY
REQUESTS = 100  # per kind of page, after WARMUP
WARMUP = 10
BASELINE_QUERIES = 1_000
SAMPLE = triageranges.BATCH  # patients whose shares the real background task recomputes
CLINICIAN = "dr-bench"
PASSWORD = "a long bench password"
TEAMS = ("Adults North", "Adults South", "Paediatrics", "Transition")
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
ROW_RE = re.compile(r'data-patient="([^"]+)"')


@dataclass(frozen=True, slots=True)
class Grid:
    """Every patient's reading times (oldest first, the latest at `now` - 2 min)."""

    now: datetime
    times: list[datetime]

    @classmethod
    def at(cls, now: datetime) -> Grid:
        # To the millisecond, as the write path stores the latest reading (COPY would keep
        # microseconds): the grid's 5-minute steps then hold exactly, the latest included.
        last = now.replace(microsecond=now.microsecond // 1000 * 1000) - timedelta(minutes=2)
        return cls(now, [last - timedelta(minutes=5 * (READINGS - 1 - k)) for k in range(READINGS)])


def patient_id(i: int) -> str:
    return f"hub{i // 100:03d}/p{i:05d}"


def values(i: int) -> list[float]:
    """A daily wave around a per-patient mean: some patients dip below 70, some above 180."""
    mean = 110 + (i * 37) % 90
    phase = 2 * math.pi / DAY
    return [round(mean + 60 * math.sin(phase * (k + i)), 1) for k in range(READINGS)]


def silent(i: int) -> bool:
    return i % 10 == 3  # the latest reading an hour old: a data problem


SILENT_READINGS = 12  # an hour of 5-minute readings a silent patient lacks


def history_length(i: int) -> int:
    """How many of the grid's readings before the latest the patient has."""
    return READINGS - 1 - (SILENT_READINGS if silent(i) else 0)


def kept_values(i: int, vals: Sequence[float], grid: Grid, at: datetime) -> list[float]:
    """The patient's readings in the 14-day window ending `at`: history, then the latest."""
    start = at - timedelta(days=14)
    n = history_length(i)
    found = [v for t, v in zip(grid.times[:n], vals[:n], strict=True) if t >= start]
    return [*found, vals[-1]]


def shares(vals: Sequence[float]) -> tuple[float, float]:
    """(% below 70, % in range) on a regular grid: every reading holds 5 minutes."""
    n = len(vals)
    return 100 * sum(v < 70 for v in vals) / n, 100 * sum(70 <= v <= 180 for v in vals) / n


def patients(count: int) -> list[Patient]:
    return [
        Patient(
            patient_id=patient_id(i),
            display_name=f"Patient {i:05d} Bench",
            team=TEAMS[i % len(TEAMS)],
            ward=f"Ward {i % 12 + 1}",
        )
        for i in range(count)
    ]


def latest_reading(i: int, grid: Grid, vals: Sequence[float]) -> Reading:
    shift = timedelta(minutes=5 * SILENT_READINGS) if silent(i) else timedelta(0)
    return Reading(
        patient_id=patient_id(i),
        device_id=f"cgm-{i:05d}",
        kind=ReadingKind.CGM_GLUCOSE,
        value=vals[-1],
        unit=Unit.MG_DL,
        time=grid.times[-1] - shift,
        source=Source.VIRTUAL,
        seq=READINGS,
    )


def open_alerts(count: int, now: datetime) -> list[Alert]:
    return [
        Alert(
            alert_id=f"bench-low-{i}",
            patient_id=patient_id(i),
            kind=AlertKind.LOW,
            level=AlertLevel.WARNING,
            state=AlertState.RAISED,
            raised_at=now - timedelta(minutes=5 + i % 30),
            updated_at=now - timedelta(minutes=5),
            message="Glucose 65 mg/dL",
            glucose_mg_dl=65.0,
        )
        for i in range(0, count, 20)
    ]


# -- loading -------------------------------------------------------------------------------


def register(store: PostgresStore | Store, count: int, grid: Grid) -> list[list[float]]:
    """Patients, devices, each latest reading through `write`, the open alerts."""
    waves = [values(i) for i in range(count)]
    for patient in patients(count):
        store.add_patient(patient)
    for i in range(count):
        store.add_device(
            Device(
                device_id=f"cgm-{i:05d}",
                patient_id=patient_id(i),
                kind=DeviceKind.CGM,
                transport=Transport.VIRTUAL,
            )
        )
    store.write([latest_reading(i, grid, waves[i]) for i in range(count)])
    store.record_alerts(open_alerts(count, grid.now), {})
    return waves


def store_shares(
    store: PostgresStore | Store, waves: list[list[float]], grid: Grid, now: datetime
) -> None:
    ranges = []
    for summary in store.triage_summaries():
        i = int(summary.patient.patient_id.rsplit("p", 1)[1])
        below, in_range = shares(kept_values(i, waves[i], grid, now))
        ranges.append(
            TriageRanges(
                patient_id=summary.patient.patient_id,
                below_range_pct=below,
                in_range_pct=in_range,
                computed_at=now,
                writes=summary.writes,
            )
        )
    store.store_triage_ranges(ranges)


def copy_history_postgres(url: str, waves: list[list[float]], grid: Grid) -> float:
    """COPY the 4,031 older readings of every patient; return the seconds it took."""
    started = time.perf_counter()
    stamps = [t.isoformat() for t in grid.times]
    with psycopg.connect(url) as db:
        ensure_month_partition(db, grid.times[0])
        ensure_month_partition(db, grid.times[-1])
        with (
            db.cursor() as cursor,
            cursor.copy(
                "COPY readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
                "original_value, original_unit, status, dedupe_key, batch_seq) FROM STDIN"
            ) as copy,
        ):
            row_id = 10**9  # clear of the ids `write` gave the latest readings
            for i, vals in enumerate(waves):
                pid, dev = patient_id(i), f"cgm-{i:05d}"
                lines = []
                for k in range(history_length(i)):
                    row_id += 1
                    v = vals[k]
                    lines.append(
                        f"{row_id}\t{pid}\t{dev}\tcgm_glucose\t{v}\tmg/dL\t{stamps[k]}\t{k}\t"
                        f"virtual\t{v}\tmg/dL\t\tseq:cgm_glucose:{k}\t0\n"
                    )
                copy.write("".join(lines))
        db.execute("ANALYZE")
    return time.perf_counter() - started


def copy_history_sqlite(path: Path, waves: list[list[float]], grid: Grid) -> float:
    started = time.perf_counter()
    stamps = [(to_rfc3339(t), int(t.timestamp() * 1000)) for t in grid.times]
    db = sqlite3.connect(path)
    try:
        with db:
            for i, vals in enumerate(waves):
                pid, dev = patient_id(i), f"cgm-{i:05d}"
                db.executemany(
                    "INSERT INTO readings (patient_id, device_id, kind, value, unit, time, "
                    "time_ms, seq, source, original_value, original_unit, status, dedupe_key, "
                    "batch_seq) VALUES (?, ?, 'cgm_glucose', ?, 'mg/dL', ?, ?, ?, 'virtual', ?, "
                    "'mg/dL', '', ?, 0)",
                    [
                        (pid, dev, vals[k], *stamps[k], k, vals[k], f"seq:cgm_glucose:{k}")
                        for k in range(history_length(i))
                    ],
                )
        db.execute("ANALYZE")
    finally:
        db.close()
    return time.perf_counter() - started


def grant_all(where: Path | str, count: int) -> None:
    clock = FakeClock(datetime.now(UTC))
    tables = AccountRules(open_account_storage(where, clock=clock), clock)
    try:
        tables.add_user(CLINICIAN, Role.CLINICIAN, PASSWORD, None)
        for i in range(count):
            tables.grant(patient_id(i), CLINICIAN, "bench")
    finally:
        tables.close()


# -- measuring -----------------------------------------------------------------------------


def p95(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


async def time_pages(url: str, paths: Sequence[str]) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await (await http.get(f"{url}/login")).text()
        token = CSRF_RE.search(page)
        assert token is not None
        await http.post(
            f"{url}/login",
            data={"username": CLINICIAN, "password": PASSWORD, "csrf_token": token.group(1)},
        )
        for path in paths:
            found: list[float] = []
            for n in range(WARMUP + REQUESTS):
                started = time.perf_counter()
                response = await http.get(f"{url}{path}")
                body = await response.text()
                elapsed = time.perf_counter() - started
                if response.status != 200 or not ROW_RE.search(body):
                    raise RuntimeError(f"{path}: status {response.status}, no rows")
                if n >= WARMUP:
                    found.append(elapsed)
            timings[path] = found
    return timings


async def serve_and_time(
    data_dir: Path,
    url: str,
    accounts_at: Path | str,
    count: int,
    waves: list[list[float]],
    grid: Grid,
) -> tuple[dict[str, list[float]], list[str], tuple[float, list[str]]]:
    """The page timings, the first page's patient ids, ms per refreshed patient and the
    refreshed shares that disagree with the expected ones."""
    accounts_module.SCRYPT_N = 2**10  # one login: its cost is not what is measured
    reader = Reader(data_dir, url)
    accounts = open_accounts(accounts_at)
    fake = FakeReadModel()
    live = FakeLiveFeed()
    clock = FakeClock(datetime.now(UTC))
    app = create_app(
        settings=DashboardSettings(port=0),
        read_model=StoreReadModel(reader),
        live=live,
        alerts=FakeAlertControl(fake, live, clock),
        ledger=FakeLedger(fake),
        status=FakeStatus(),
        accounts=accounts,
    )
    settings = DashboardSettings(port=0)
    try:
        async with serve(app, settings) as base:
            last_page = -(-count // PAGE_SIZE)
            paths = ["/", f"/?page={last_page}", f"/?team={TEAMS[1].replace(' ', '+')}", "/?q=0042"]
            timings = await time_pages(base, paths)
            first = await first_page_ids(base)
            per_patient = await refresh_sample(app, count, waves, grid)
    finally:
        accounts.close()
        reader.close()
    return timings, first, per_patient


async def first_page_ids(url: str) -> list[str]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        page = await (await http.get(f"{url}/login")).text()
        token = CSRF_RE.search(page)
        assert token is not None
        await http.post(
            f"{url}/login",
            data={"username": CLINICIAN, "password": PASSWORD, "csrf_token": token.group(1)},
        )
        return ROW_RE.findall(await (await http.get(f"{url}/partials/triage")).text())


async def refresh_sample(
    app: object, count: int, waves: list[list[float]], grid: Grid
) -> tuple[float, list[str]]:
    """The real background refresh of SAMPLE patients as one batch: must agree with the
    stored shares. Returns ms per patient, and the disagreements."""
    from aiohttp import web

    assert isinstance(app, web.Application)
    rm = app[DEPS].read_model
    wanted = {patient_id(i) for i in range(0, count, max(1, count // SAMPLE))}
    summaries = [s for s in await rm.triage_summaries() if s.patient.patient_id in wanted]
    await triageranges.refresh(app, summaries[:1], datetime.now(UTC))  # starts the worker
    at = datetime.now(UTC)
    started = time.perf_counter()
    fresh = await triageranges.refresh(app, summaries, at)
    elapsed = time.perf_counter() - started
    wrong = []
    for summary in summaries:
        i = int(summary.patient.patient_id.rsplit("p", 1)[1])
        below, in_range = shares(kept_values(i, waves[i], grid, at))
        got = fresh[summary.patient.patient_id]
        found = (got.below_range_pct or 0.0, got.in_range_pct or 0.0)
        if not all(
            math.isclose(g, e, abs_tol=1e-9) for g, e in zip(found, (below, in_range), strict=True)
        ):
            wrong.append(f"{summary.patient.patient_id}: {found} vs {below}, {in_range}")
    return elapsed * 1000 / len(summaries), wrong


def time_store_page(store: PostgresStore | Store, count: int) -> list[float]:
    """The store's ranked, paged query of the first page alone (no HTTP, no rendering)."""
    allowed = frozenset(patient_id(i) for i in range(count))
    found = []
    for n in range(WARMUP + REQUESTS):
        started = time.perf_counter()
        page = store.triage_page(allowed=allowed, now=datetime.now(UTC), offset=0, limit=PAGE_SIZE)
        elapsed = time.perf_counter() - started
        assert len(page.summaries) == min(PAGE_SIZE, count)
        if n >= WARMUP:
            found.append(elapsed)
    return found


def baseline_postgres(url: str, ids: list[str]) -> list[float]:
    query = (
        "SELECT p.patient_id, p.display_name, p.timezone, p.team, p.ward, s.* "
        "FROM triage_summary AS s JOIN patients AS p USING (patient_id) "
        "WHERE s.patient_id = ANY(%s)"
    )
    found = []
    with psycopg.connect(url) as db:
        for n in range(WARMUP + BASELINE_QUERIES):
            started = time.perf_counter()
            rows = db.execute(query, (ids,)).fetchall()
            elapsed = time.perf_counter() - started
            assert len(rows) == len(ids)
            if n >= WARMUP:
                found.append(elapsed)
    return found


def baseline_sqlite(path: Path, ids: list[str]) -> list[float]:
    marks = ", ".join("?" * len(ids))
    query = (
        "SELECT p.patient_id, p.display_name, p.timezone, p.team, p.ward, s.* "
        "FROM triage_summary AS s JOIN patients AS p USING (patient_id) "
        f"WHERE s.patient_id IN ({marks})"
    )
    found = []
    db = sqlite3.connect(path)
    try:
        for n in range(WARMUP + BASELINE_QUERIES):
            started = time.perf_counter()
            rows = db.execute(query, ids).fetchall()
            elapsed = time.perf_counter() - started
            assert len(rows) == len(ids)
            if n >= WARMUP:
                found.append(elapsed)
    finally:
        db.close()
    return found


def report(name: str, count: int, load_s: float, timings: dict[str, list[float]],
           baseline: list[float], per_patient_ms: float, query: list[float]) -> None:  # fmt: skip
    base = p95(baseline)
    print(f"  {name}: {count} patients x 14 days of 5-minute readings ({load_s:.0f} s to load)")
    print(f"    baseline bare indexed SELECT of the page's {PAGE_SIZE} summary rows: "
          f"p50 {statistics.median(baseline) * 1000:.2f} ms, p95 {base * 1000:.2f} ms")  # fmt: skip
    alone = f"p50 {statistics.median(query) * 1000:.2f} ms, p95 {p95(query) * 1000:.2f} ms"
    print(f"    the store's triage_page alone (ranked and paged in SQL, page 1): {alone}")
    for path, samples in timings.items():
        print(
            f"    GET {path:<28} p50 {statistics.median(samples) * 1000:7.1f} ms, "
            f"p95 {p95(samples) * 1000:7.1f} ms ({p95(samples) / base:.0f}x the baseline)"
        )
    print(
        f"    background refresh of the 14-day shares, {min(SAMPLE, count)} patients in one batch: "
        f"{per_patient_ms:.1f} ms per patient",
        flush=True,
    )


def run(name: str, count: int, open_store: Callable[[], PostgresStore | Store],
        url: str, data_dir: Path, accounts_at: Path | str) -> None:  # fmt: skip
    now = datetime.now(UTC)
    grid = Grid.at(now)
    store = open_store()
    try:
        waves = register(store, count, grid)
        if url:
            load_s = copy_history_postgres(url, waves, grid)
        else:
            load_s = copy_history_sqlite(data_dir / DB_FILENAME, waves, grid)
        store_shares(store, waves, grid, now)
    finally:
        store.close()
    print(f"  {name}: history loaded in {load_s:.0f} s", flush=True)
    started = time.perf_counter()
    grant_all(accounts_at, count)
    print(f"  {name}: {count} grants in {time.perf_counter() - started:.0f} s", flush=True)
    timings, first, per_patient = asyncio.run(
        serve_and_time(data_dir, url, accounts_at, count, waves, grid)
    )
    if url:
        baseline = baseline_postgres(url, first)
    else:
        baseline = baseline_sqlite(data_dir / DB_FILENAME, first)
    store = open_store()
    try:
        query = time_store_page(store, count)
    finally:
        store.close()
    report(name, count, load_s, timings, baseline, per_patient[0], query)
    if per_patient[1]:
        raise RuntimeError("refreshed shares disagree:\n" + "\n".join(per_patient[1]))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_PATIENTS
    small = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_SQLITE_PATIENTS
    with tempfile.TemporaryDirectory(prefix="bench-triage-") as name:
        tmp = Path(name)
        server = Postgres(durable=True)
        try:
            server.start()
            url = server.create_database("triage")
            pg_dir = tmp / "pg-hub"
            pg_dir.mkdir()
            run("PostgreSQL", count, lambda: PostgresStore(url, data_dir=pg_dir), url, pg_dir, url)
        finally:
            server.stop()
        if small:
            sq_dir = tmp / "sqlite-hub"
            sq_dir.mkdir()
            run("SQLite", small, lambda: Store(sq_dir), "", sq_dir, sq_dir / DB_FILENAME)


if __name__ == "__main__":
    main()
