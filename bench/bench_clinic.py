"""One clinic worker (issue 15): readings/s verified and stored, and the CPU it costs the worker,
PostgreSQL and the broker, against a baseline measured in the same run on the same server:
the same rows (the batches and their records) written by a bare `COPY` into plain tables
(no signature check, no chain or checkpoint, no index, no per-item transaction).

The load is what a home hub sends: one patient with a heart-rate sensor (one reading a second)
and a CGM (one a minute), sealed every 10 s (`ledger.batch_max_seconds`), so a batch of 10
readings (11 every sixth) and a signed checkpoint after each batch. HUBS real simulated hubs
(keys, SQLite store, the real Sealer and outbox) seal every batch first; the worker's
persistent session is created, then the hubs' upstream forwarders publish everything while
the worker is down, and the worker (`python -m glucohub clinic`, one process) is timed from
its "consuming" line until every batch is stored and every hub's last checkpoint accepted.

CPU seconds come from /proc/<pid>/stat (utime + stime, and cutime + cstime so a PostgreSQL
backend that ends during the window is still counted by its postmaster): the worker process
(its threads included), the postmaster and its children (backends, WAL writer, checkpointer,
background writer...) and the Mosquitto process. The server keeps fsync on.

    .venv/bin/python -m bench bench_clinic
    .venv/bin/python bench/bench_clinic.py [HUBS [BATCHES_PER_HUB]]
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paho_baseline import BenchError
from gateway.clock import utc_now
from gateway.model import Device, DeviceKind, Reading, ReadingKind, Source, Transport
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.units import Unit
from glucohub.simulate import SimulatedHub, forward_until_sent
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import Postgres

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_HUBS = 20
DEFAULT_BATCHES = 100  # per hub and trial: 100 batches of 10 s, 17 minutes of one patient
TRIALS = 3
HEART_RATE_PER_BATCH = 10  # one a second, sealed every 10 s
CGM_EVERY_BATCHES = 6  # one a minute
WORKER_ID = "bench-worker-1"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- the load ------------------------------------------------------------------------------


def open_hub(root: Path, index: int) -> SimulatedHub:
    """A hub with one patient, whose CGM SimulatedHub registers, and a heart-rate sensor."""
    hub = SimulatedHub(root / f"bench-{index:03d}", f"bench-{index:03d}", 1)
    patient = f"{hub.hub_id}-p0"
    hub.store.add_device(
        Device(
            device_id=f"{patient}-hr",
            patient_id=patient,
            kind=DeviceKind.HEART_RATE,
            transport=Transport.VIRTUAL,
        )
    )
    return hub


def seal_batches(
    hub: SimulatedHub, first: int, count: int, start: datetime, rng: random.Random
) -> int:
    """Store and seal the hub's 10-second batches first..first+count-1 (batch 0 at
    `start`); returns the readings sealed."""
    patient = f"{hub.hub_id}-p0"
    total = 0
    for batch in range(first, first + count):
        readings = [
            Reading(
                patient_id=patient,
                device_id=f"{patient}-hr",
                kind=ReadingKind.HEART_RATE,
                value=float(rng.randint(55, 110)),
                unit=Unit.BPM,
                time=start + timedelta(seconds=batch * HEART_RATE_PER_BATCH + second),
                source=Source.VIRTUAL,
                seq=batch * HEART_RATE_PER_BATCH + second,
            )
            for second in range(HEART_RATE_PER_BATCH)
        ]
        if batch % CGM_EVERY_BATCHES == 0:
            readings.append(
                Reading(
                    patient_id=patient,
                    device_id=f"{patient}-cgm",
                    kind=ReadingKind.CGM_GLUCOSE,
                    value=float(rng.randint(60, 250)),
                    unit=Unit.MG_DL,
                    time=start + timedelta(seconds=batch * HEART_RATE_PER_BATCH),
                    source=Source.VIRTUAL,
                    seq=batch // CGM_EVERY_BATCHES,
                )
            )
        total += len(hub.store.write(readings).stored)
        hub.sealer.seal(10_000, start + timedelta(seconds=(batch + 1) * HEART_RATE_PER_BATCH))
    return total


# -- CPU from /proc --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text.rsplit(")", 1)[1].split()  # fields 3.. (the command may hold spaces)


def cpu_ticks(pid: int) -> int:
    """utime + stime + cutime + cstime of `pid` (all its threads; reaped children)."""
    fields = _stat_fields(pid)
    return sum(int(fields[i]) for i in (11, 12, 13, 14))


def tree_ticks(root: int) -> int:
    """The CPU ticks of `root` and its live children. PostgreSQL's backends are children of
    the postmaster in sessions of their own (so not its process group); one that ended has
    been reaped, its CPU in the postmaster's cutime + cstime."""
    total = cpu_ticks(root)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = _stat_fields(int(entry.name))
            if int(fields[1]) == root:
                total += sum(int(fields[i]) for i in (11, 12, 13, 14))
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
    return total


def pid_with_cmdline(needle: str) -> int:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in cmdline and "bench_clinic" not in cmdline:
            return int(entry.name)
    raise BenchError(f"no process with {needle!r} in its command line")


@dataclass(frozen=True, slots=True)
class Cpu:
    worker: float
    postgres: float
    broker: float


class CpuMeter:
    def __init__(self, worker: Callable[[], int], postmaster: int, broker_pid: int) -> None:
        self._worker = worker
        self._postmaster = postmaster
        self._broker = broker_pid

    def sample(self) -> Cpu:
        return Cpu(
            worker=self._worker() / CLK_TCK,
            postgres=tree_ticks(self._postmaster) / CLK_TCK,
            broker=cpu_ticks(self._broker) / CLK_TCK,
        )


def spent(before: Cpu, after: Cpu) -> Cpu:
    return Cpu(
        worker=after.worker - before.worker,
        postgres=after.postgres - before.postgres,
        broker=after.broker - before.broker,
    )


# -- the worker process ----------------------------------------------------------------------


class Worker:
    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log_path = log
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> float:
        """Start the worker; returns the perf_counter time of its "consuming" line (a worker
        that exits first ends the line empty)."""
        with self.log_path.open("a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "glucohub", "clinic", "--config", str(self.config)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != f"clinic worker {WORKER_ID} consuming":
            self.stop()
            raise BenchError(f"worker did not start: {line!r}\n{self.log_tail()}")
        return time.perf_counter()

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError("worker not started")
        return self.process.pid

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"worker exited with {self.process.returncode}:\n{self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- the run -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    readings: int
    items: int
    seconds: float
    cpu: Cpu


def wait_archived(db: psycopg.Connection[tuple[int, int]], batches: int, worker: Worker) -> None:
    """Until every batch is stored and every hub's checkpoint of all of them accepted."""
    deadline = time.monotonic() + 300
    while True:
        row = db.execute(
            "SELECT (SELECT count(*) FROM clinic_batches),"
            " (SELECT COALESCE(sum(size), 0) FROM clinic_checkpoints)"
        ).fetchone()
        assert row is not None
        if int(row[0]) >= batches and int(row[1]) >= batches:
            return
        worker.check_alive()
        if time.monotonic() > deadline:
            raise BenchError(f"archived {row[0]} batches, checkpoints {row[1]} of {batches}")
        time.sleep(0.05)


def bare_copy(url: str, first: int, meter: CpuMeter, table: str) -> tuple[int, float, Cpu]:
    """COPY the archive's batch and record rows from batch seq `first` on into new plain
    tables of the same columns and commit; returns (records, seconds, CPU spent)."""
    where = f"WHERE batch_seq >= {first:d}"
    with psycopg.connect(url) as db:
        batches = db.execute(f"SELECT * FROM clinic_batches {where}").fetchall()
        records = db.execute(f"SELECT * FROM clinic_records {where}").fetchall()
        db.execute(f"CREATE TABLE {table}_batches (LIKE clinic_batches)")
        db.execute(f"CREATE TABLE {table}_records (LIKE clinic_records)")
        db.commit()
        before = meter.sample()
        start = time.perf_counter()
        with db.cursor() as cursor:
            with cursor.copy(f"COPY {table}_batches FROM STDIN") as copy:
                for row in batches:
                    copy.write_row(row)
            with cursor.copy(f"COPY {table}_records FROM STDIN") as copy:
                for row in records:
                    copy.write_row(row)
        db.commit()
        seconds = time.perf_counter() - start
        return len(records), seconds, spent(before, meter.sample())


def per_thousand(seconds: float, readings: int) -> float:
    return seconds / readings * 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class Trial:
    run: Run
    copied: int
    copy_s: float
    copy_cpu: Cpu

    @property
    def rate(self) -> float:
        return self.run.readings / self.run.seconds

    @property
    def copy_rate(self) -> float:
        return self.copied / self.copy_s


def trial(
    number: int,
    simulated: list[SimulatedHub],
    batches: int,
    start: datetime,
    rng: random.Random,
    *,
    url: str,
    broker: Mosquitto,
    postmaster: int,
    worker: Worker,
) -> Trial:
    """Seal and pre-fill `batches` more batches of every hub, time the worker draining them,
    then COPY the rows it stored."""
    first = number * batches
    readings = sum(seal_batches(hub, first, batches, start, rng) for hub in simulated)
    asyncio.run(forward_until_sent(simulated, broker.url))
    broker_pid = pid_with_cmdline(str(broker.directory / "mosquitto.conf"))
    total_batches = len(simulated) * (first + batches)
    with psycopg.connect(url, autocommit=True) as db:
        began = worker.start()
        worker_pid = worker.pid
        meter = CpuMeter(lambda: cpu_ticks(worker_pid), postmaster, broker_pid)
        before = meter.sample()
        wait_archived(db, total_batches, worker)
        ended = time.perf_counter()
        used = spent(before, meter.sample())
    worker.stop()
    items = len(simulated) * batches * 2  # a batch and a checkpoint per seal
    run = Run(readings=readings, items=items, seconds=ended - began, cpu=used)
    idle = CpuMeter(lambda: 0, postmaster, broker_pid)
    copied, copy_s, copy_cpu = bare_copy(url, first, idle, f"copy_{number}")
    if copied != readings:
        raise BenchError(f"the archive holds {copied} records of this trial, {readings} sealed")
    return Trial(run=run, copied=copied, copy_s=copy_s, copy_cpu=copy_cpu)


def main() -> None:
    hubs = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_HUBS
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_BATCHES
    rng = random.Random(15)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    trials: list[Trial] = []
    with tempfile.TemporaryDirectory(prefix="bench-clinic-") as name:
        tmp = Path(name)
        server = Postgres(durable=True)
        broker = Mosquitto(tmp / "broker")
        worker = Worker(tmp / "clinic.toml", tmp / "worker.log")
        simulated: list[SimulatedHub] = []
        try:
            server.start()
            broker.start()
            url = server.create_database("clinic")
            worker.config.write_text(
                f'[clinic]\nurl = "{url}"\nmqtt_url = "{broker.url}"\n'
                f'group = "bench"\nclient_id = "{WORKER_ID}"\n'
            )
            simulated = [open_hub(tmp / "hubs", i) for i in range(hubs)]
            archive = ClinicArchive(url)
            for hub in simulated:
                archive.enrol(*hub.enrolment, utc_now())
            archive.close()
            worker.start()  # creates the worker's persistent session, then leaves
            worker.stop()
            postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
            for number in range(TRIALS):
                trials.append(
                    trial(
                        number,
                        simulated,
                        batches,
                        start,
                        rng,
                        url=url,
                        broker=broker,
                        postmaster=postmaster,
                        worker=worker,
                    )
                )
        finally:
            worker.stop()
            for hub in simulated:
                hub.close()
            broker.kill()
            server.remove()
    report(hubs, batches, trials)


def report(hubs: int, batches: int, trials: list[Trial]) -> None:
    count = hubs * batches
    print(
        f"clinic worker: {hubs} hubs x {batches} batches a trial (one patient each: heart "
        f"rate 1/s, CGM 1/min, sealed every 10 s) = {trials[0].run.readings:,} readings in "
        f"{count:,} batches + {count:,} checkpoints, pre-filled persistent session, "
        f"1 worker process, PostgreSQL with fsync on, {TRIALS} trials"
    )
    for number, t in enumerate(trials, 1):
        run, used = t.run, t.run.cpu
        print(
            f"  trial {number}: worker {t.rate:6.0f} readings/s ({run.items / run.seconds:.0f} "
            f"items/s, {run.seconds:.2f} s); CPU s per 1,000 readings: worker "
            f"{per_thousand(used.worker, run.readings):.4f}, PostgreSQL "
            f"{per_thousand(used.postgres, run.readings):.4f}, broker "
            f"{per_thousand(used.broker, run.readings):.4f}; bare COPY {t.copy_rate:6.0f} rows/s "
            f"(PostgreSQL {per_thousand(t.copy_cpu.postgres, t.copied):.4f} CPU s per 1,000); "
            f"ratio {t.rate / t.copy_rate:.4f}"
        )

    median = statistics.median

    def cpu(part: str) -> float:
        return median([per_thousand(getattr(t.run.cpu, part), t.run.readings) for t in trials])

    print(
        f"  medians: worker {median([t.rate for t in trials]):.0f} readings/s verified and "
        f"stored; CPU s per 1,000 readings: worker {cpu('worker'):.4f}, PostgreSQL "
        f"{cpu('postgres'):.4f}, broker {cpu('broker'):.4f}"
    )
    ratios = sorted(t.rate / t.copy_rate for t in trials)
    print(
        f"  worker / bare COPY of the same rows, median of {TRIALS} trials: "
        f"{median(ratios):.4f} (range {ratios[0]:.4f}-{ratios[-1]:.4f}; target >= 0.5)"
    )


if __name__ == "__main__":
    main()
