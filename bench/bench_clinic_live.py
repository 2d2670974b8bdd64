"""Live readings at the clinic (issue 15): what a dashboard process pays to turn each worker
group's NOTIFY into the `ReadingsStored` its viewers get (`PostgresLiveFeed`: one query
reading the announced readings back), against a bare LISTEN receiving the same
notifications in the same run.

HUBS simulated hubs (one patient each: heart rate 1/s and CGM 1/min sealed every 10 s, as
in `bench_clinic`) seal their batches first; this process then stores them as a worker
does (`ClinicArchive.handle_group`: one batch and its checkpoint of every hub per group, a
group every `GROUP_EVERY_S`), while a listener process takes every notification: in turn
a bare LISTEN, the feed, and the feed passing on only the newest reading of each kind per
patient (its path for a backlog, forced). Figures: the listener's CPU seconds per 1,000
readings announced, PostgreSQL's (every backend: the writer's and the listener's, so the
feed's queries are the difference from the bare LISTEN's trials), and the delay from each
group's commit to its event in the listener (wall clock, one machine).

    .venv/bin/python -m bench bench_clinic_live
    .venv/bin/python bench/bench_clinic_live.py [HUBS [GROUPS]]
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_clinic import CLK_TCK, open_hub, seal_batches, tree_ticks
from bench.paho_baseline import BenchError
from gateway.clock import utc_now
from gateway.protocols import ReadingsStored
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_clinic_group import Item
from gateway.storage.postgres_live import ANNOUNCED_READINGS_MAX, CHANNEL, PostgresLiveFeed
from glucohub.simulate import SimulatedHub
from tests.support.postgres import Postgres

DEFAULT_HUBS = 30
DEFAULT_GROUPS = 40  # per trial: 40 groups of 30 batches, 400 s of 30 patients
MODES = ("bare", "feed", "newest")
TRIALS = 6  # each mode in turn
GROUP_EVERY_S = 0.1  # 300 batches/s: about 3,000 readings/s announced
LISTENING = f"SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN \"{CHANNEL}\"'"


# -- the listener process ----------------------------------------------------------------------


async def listen(mode: str, url: str, groups: int) -> dict[str, object]:
    """Take `groups` readings notifications; their arrival times and the CPU spent."""
    arrived: list[float] = []
    readings = 0
    cpu_before = 0.0
    if mode in ("feed", "newest"):
        limit = 0 if mode == "newest" else ANNOUNCED_READINGS_MAX
        feed = PostgresLiveFeed(url, readings_max=limit).subscribe()
        ready = asyncio.ensure_future(feed.__anext__())  # connects, LISTENs, waits
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as db:
            while True:
                cursor = await db.execute(LISTENING)
                if (await cursor.fetchone()) == (1,):
                    break
                await asyncio.sleep(0.05)
        print("ready", flush=True)
        cpu_before = time.process_time()
        event = await ready
        while True:
            if isinstance(event, ReadingsStored):
                arrived.append(time.time())
                readings += len(event.readings)
                if len(arrived) == groups:
                    break
            event = await feed.__anext__()
        await feed.aclose()
    else:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await conn.execute(f"LISTEN {CHANNEL}")
            print("ready", flush=True)
            cpu_before = time.process_time()
            async for note in conn.notifies():
                message = json.loads(note.payload)
                if message["type"] == "readings":
                    arrived.append(time.time())
                    if len(arrived) == groups:
                        break
    return {"arrived": arrived, "readings": readings, "cpu": time.process_time() - cpu_before}


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    mode: str
    readings: int
    listener_cpu: float
    postgres_cpu: float
    delays_ms: list[float]

    def per_thousand(self, seconds: float) -> float:
        return seconds / self.readings * 1000


def items_of(hub: SimulatedHub) -> list[Item]:
    out = []
    for item_id, topic, payload in hub.store.outbox_pending(100_000):
        parts = topic.split("/")
        out.append(Item(hub_id=parts[3], kind=parts[4], topic=topic, payload=bytes(payload)))
        hub.store.outbox_mark_sent(item_id, utc_now())
    return out


def trial(
    number: int,
    simulated: list[SimulatedHub],
    groups: int,
    start: datetime,
    rng: random.Random,
    *,
    url: str,
    postmaster: int,
) -> Trial:
    mode = MODES[number % len(MODES)]
    first = number * groups
    readings = sum(seal_batches(hub, first, groups, start, rng) for hub in simulated)
    per_hub = [items_of(hub) for hub in simulated]  # a batch and a checkpoint per seal
    listener = subprocess.Popen(
        [sys.executable, __file__, "--listen", mode, url, str(groups)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert listener.stdout is not None
    if listener.stdout.readline().strip() != "ready":
        raise BenchError("the listener did not start")
    archive = ClinicArchive(url, migrate=False)
    committed: list[float] = []
    pg_before = tree_ticks(postmaster)
    try:
        for index in range(groups):
            due = time.monotonic() + GROUP_EVERY_S
            group = [item for items in per_hub for item in items[2 * index : 2 * index + 2]]
            handled = archive.handle_group(group, utc_now())
            committed.append(time.time())
            if any(h.outcome == "dead_letter" for h in handled):
                raise BenchError(f"group {index}: {handled}")
            time.sleep(max(0.0, due - time.monotonic()))
        out, _ = listener.communicate(timeout=60)
    finally:
        archive.close()
        if listener.poll() is None:
            listener.kill()
    # A backend's CPU stays counted once it ends only when the postmaster has reaped it.
    time.sleep(1.0)
    postgres_cpu = (tree_ticks(postmaster) - pg_before) / CLK_TCK
    got = json.loads(out.strip().splitlines()[-1])
    if mode == "feed" and got["readings"] != readings:
        raise BenchError(f"the feed passed on {got['readings']} readings, {readings} stored")
    delays = [(a - c) * 1000 for a, c in zip(got["arrived"], committed, strict=True)]
    return Trial(
        mode=mode,
        readings=readings,
        listener_cpu=float(got["cpu"]),
        postgres_cpu=postgres_cpu,
        delays_ms=delays,
    )


def main() -> None:
    hubs = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_HUBS
    groups = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_GROUPS
    rng = random.Random(15)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="bench-clinic-live-") as name:
        tmp = Path(name)
        server = Postgres(durable=True)
        simulated: list[SimulatedHub] = []
        try:
            server.start()
            url = server.create_database("clinic")
            simulated = [open_hub(tmp / "hubs", i) for i in range(hubs)]
            archive = ClinicArchive(url)
            for hub in simulated:
                archive.enrol(*hub.enrolment, utc_now())
            archive.close()
            postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            for number in range(TRIALS):
                trials.append(
                    trial(number, simulated, groups, start, rng, url=url, postmaster=postmaster)
                )
        finally:
            for hub in simulated:
                hub.close()
            server.remove()
    report(hubs, groups, trials)


def report(hubs: int, groups: int, trials: list[Trial]) -> None:
    print(
        f"clinic live readings: {hubs} hubs (one patient each: heart rate 1/s, CGM 1/min, "
        f"sealed every 10 s), {groups} groups a trial of one batch per hub, one group every "
        f"{GROUP_EVERY_S * 1000:.0f} ms; {TRIALS} trials, in turn a bare LISTEN, the feed, and "
        "the feed passing on only the newest reading of each kind per patient (its path for "
        "a backlog); PostgreSQL with fsync on"
    )
    for number, t in enumerate(trials, 1):
        delays = sorted(t.delays_ms)
        print(
            f"  trial {number} ({t.mode}): {t.readings:,} readings; CPU s per 1,000 readings: "
            f"listener {t.per_thousand(t.listener_cpu):.4f}, PostgreSQL (writer and listener) "
            f"{t.per_thousand(t.postgres_cpu):.4f}; commit -> event p50 "
            f"{statistics.median(delays):.1f} ms, p99 {delays[int(len(delays) * 0.99)]:.1f} ms"
        )
    for mode in MODES:
        runs = [t for t in trials if t.mode == mode]
        median = statistics.median
        delays = sorted(d for t in runs for d in t.delays_ms)
        print(
            f"  {mode}: medians: CPU s per 1,000 readings: listener "
            f"{median([t.per_thousand(t.listener_cpu) for t in runs]):.4f}, PostgreSQL "
            f"{median([t.per_thousand(t.postgres_cpu) for t in runs]):.4f}; commit -> event "
            f"p50 {median(delays):.1f} ms, p99 {delays[int(len(delays) * 0.99)]:.1f} ms"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--listen":
        result = asyncio.run(listen(sys.argv[2], sys.argv[3], int(sys.argv[4])))
        print(json.dumps(result), flush=True)
    else:
        main()
