"""Clinic workers end to end: `glucohub simulate` hubs -> real Mosquitto (shared subscription)
-> `glucohub clinic` worker processes -> real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from device_adapters.mqtt.client import MqttConnection
from gateway.clock import utc_now
from gateway.errors import TransientStorageError
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.topics import batches_topic
from glucohub.simulate import SimulatedHub, broker_config, forward_until_sent
from tests.clinic.hubs import copy_hub, make_hub, produce
from tests.support.mosquitto import Mosquitto
from tests.support.postgres import Postgres

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
_GLUCOHUB = (sys.executable, "-m", "glucohub")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def archive(postgres_url: str) -> Iterator[ClinicArchive]:
    opened = ClinicArchive(postgres_url)
    yield opened
    opened.close()


class Workers:
    """`glucohub clinic` processes sharing one subscription group."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.processes: dict[str, subprocess.Popen[str]] = {}
        self.logs: list[IO[str]] = []

    def start(self, worker_id: str) -> None:
        log = (self.config.parent / f"{worker_id}-{len(self.logs)}.log").open("w")
        self.logs.append(log)
        process = subprocess.Popen(
            [*_GLUCOHUB, "clinic", "--config", str(self.config), "--worker-id", worker_id],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline()  # once subscribed
        assert line.strip() == f"clinic worker {worker_id} consuming", self.log_text()
        self.processes[worker_id] = process

    def kill(self, worker_id: str) -> None:
        process = self.processes.pop(worker_id)
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.stdout is not None
        process.stdout.close()

    def stop_all(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            process.wait(timeout=20)
            assert process.stdout is not None
            process.stdout.close()
        self.processes.clear()
        for log in self.logs:
            log.close()

    def log_text(self) -> str:
        return "\n".join(Path(log.name).read_text()[-2000:] for log in self.logs)


@pytest.fixture
def workers(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[Workers]:
    config = tmp_path / "clinic.toml"
    config.write_text(
        f'[clinic]\nurl = "{postgres_url}"\nmqtt_url = "{broker.url}"\ngroup = "clinic"\n'
    )
    running = Workers(config)
    yield running
    running.stop_all()


def _simulate(broker: Mosquitto, postgres_url: str, tmp_path: Path, **options: Any) -> Any:
    argv = [*_GLUCOHUB, "simulate", "--mqtt-url", broker.url]
    argv += ["--enrol-into", postgres_url, "--data-dir", str(tmp_path / "hubs")]
    argv += ["--enrol-file", str(tmp_path / "enrol.txt")]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(argv, cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(check: Callable[[], bool], what: str, timeout_s: float, workers: Workers) -> None:
    deadline = time.monotonic() + timeout_s
    while not _tolerant(check):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{workers.log_text()}")
        time.sleep(0.2)


def _tolerant(check: Callable[[], bool]) -> bool:
    """The test's own connection also sees the restart; its next call reconnects."""
    try:
        return check()
    except TransientStorageError:
        return False


def _all_in(archive: ClinicArchive, hubs: int, batches: int) -> bool:
    rows = archive.hubs()
    return len(rows) == hubs and all(
        (r.batches, r.checkpoint_size) == (batches, batches) for r in rows
    )


def _assert_exactly_once(archive: ClinicArchive, hubs: int, batches: int, patients: int) -> None:
    readings = hubs * batches * patients
    [(records, distinct)] = archive.rows(
        "SELECT count(*), count(DISTINCT (hub_id, canonical)) FROM clinic_records"
    )
    assert (records, distinct) == (readings, readings)
    # every device's seqs 0..batches-1, once each: nothing lost, nothing doubled
    seqs = archive.rows(
        "SELECT patient_id, array_agg((canonical::jsonb->>'seq')::int ORDER BY 1)"
        " FROM clinic_records GROUP BY patient_id"
    )
    assert len(seqs) == hubs * patients
    assert all(sorted(s) == list(range(batches)) for _p, s in seqs)
    assert archive.rows("SELECT count(*) FROM clinic_batches WHERE NOT linked") == [(0,)]
    # projected once each for the dashboards too, with at most one open alert per kind
    assert archive.rows("SELECT count(*), count(DISTINCT id) FROM readings") == [
        (readings, readings)
    ]
    assert (
        archive.rows(
            "SELECT patient_id, kind FROM alerts WHERE state <> 'resolved'"
            " GROUP BY patient_id, kind HAVING count(*) > 1"
        )
        == []
    )
    assert archive.alarms() == []
    assert archive.counts()["dead_letters"] == 0


def test_three_workers_one_killed_and_replaced_store_every_reading_once(
    tmp_path: Path, broker: Mosquitto, postgres_url: str, workers: Workers, archive: ClinicArchive
) -> None:
    hubs, patients, batches = 200, 2, 6
    for worker_id in ("w1", "w2", "w3"):
        workers.start(worker_id)
    sim = _simulate(
        broker, postgres_url, tmp_path, hubs=hubs, patients_per_hub=patients, rate=2,
        batches=batches,
    )  # fmt: skip
    _wait_for(lambda: archive.counts()["batches"] > 200, "the first batches", 120, workers)
    workers.kill("w2")  # mid-stream: whatever it had received and not acknowledged...
    time.sleep(1.0)
    workers.start("w2")  # ...its session hands to its replacement
    _, err = sim.communicate(timeout=300)
    assert sim.returncode == 0, err
    assert f"simulated {hubs} hubs: {hubs * batches} batches" in err
    _wait_for(lambda: _all_in(archive, hubs, batches), "every batch", 120, workers)
    _assert_exactly_once(archive, hubs, batches, patients)
    enrol_lines = (tmp_path / "enrol.txt").read_text().splitlines()
    assert len(enrol_lines) == hubs and enrol_lines[0].startswith(
        "glucohub hubs add --hub sim-0000"
    )


def test_a_postgresql_restart_under_load_costs_time_not_data(
    tmp_path: Path,
    broker: Mosquitto,
    postgres_server: Postgres,
    postgres_url: str,
    workers: Workers,
    archive: ClinicArchive,
) -> None:
    hubs, patients, batches = 20, 2, 20
    for worker_id in ("w1", "w2", "w3"):
        workers.start(worker_id)
    sim = _simulate(
        broker, postgres_url, tmp_path, hubs=hubs, patients_per_hub=patients, rate=4,
        batches=batches,
    )  # fmt: skip
    _wait_for(lambda: archive.counts()["batches"] > 40, "the first batches", 30, workers)
    postgres_server.restart()
    _, err = sim.communicate(timeout=60)
    assert sim.returncode == 0, err
    _wait_for(lambda: _all_in(archive, hubs, batches), "every batch", 40, workers)
    _assert_exactly_once(archive, hubs, batches, patients)
    assert "retrying" in workers.log_text()  # they did see it go


def _forward(hubs: list[SimulatedHub], url: str) -> None:
    asyncio.run(forward_until_sent(hubs, url))


def _publish(url: str, topic: str, payload: bytes) -> None:
    async def go() -> None:
        connection = MqttConnection(broker_config(url, "attacker"))
        runner = asyncio.ensure_future(connection.run())
        await connection.wait_connected()
        await connection.publish(topic, payload)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)

    asyncio.run(go())


def _records(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    return [
        r["record"]
        for topic, payload in items
        if topic.endswith("/batches")
        for r in json.loads(payload)["records"]
    ]


def test_tampered_unknown_rolled_back_and_forked_hubs_are_alarmed_and_nothing_of_theirs_stored(
    tmp_path: Path, broker: Mosquitto, workers: Workers, archive: ClinicArchive
) -> None:
    for worker_id in ("w1", "w2", "w3"):
        workers.start(worker_id)
    good, stranger = make_hub(tmp_path, "good"), make_hub(tmp_path, "stranger")
    rolls, forks = make_hub(tmp_path, "rolls"), make_hub(tmp_path, "forks")
    for hub in (good, rolls, forks):
        archive.enrol(*hub.enrolment, utc_now())
    accepted = {h.hub_id: _unsent(h, 3) for h in (good, stranger, rolls, forks)}
    backup = copy_hub(rolls, tmp_path / "rolls-backup")  # its log at size 3
    accepted["rolls"] += _unsent(rolls, 2, start_minute=10)
    twin = copy_hub(forks, tmp_path / "forks-twin")
    _forward([good, stranger, rolls, forks], broker.url)
    _wait_for(
        lambda: (
            {h.hub_id: h.checkpoint_size for h in archive.hubs()}
            == {"good": 3, "rolls": 5, "forks": 3}
        ),
        "the hubs' first checkpoints",
        30,
        workers,
    )
    accepted["forks"] += _unsent(forks, 1, start_minute=20)
    _forward([forks], broker.url)
    _wait_for(lambda: _size(archive, "forks") == 4, "the fork's first branch", 30, workers)
    _unsent(twin, 1, start_minute=30)  # the other data directory: another batch 3
    _unsent(backup, 1, start_minute=40)  # the restored backup: another batch 3 and size 4
    _forward([twin, backup], broker.url)
    view = json.loads(accepted["good"][0][1])
    view["records"][0]["record"]["value"] = 39.0
    _publish(broker.url, batches_topic("good"), json.dumps(view).encode())

    def alarmed() -> bool:
        kinds = {(a.hub_id, a.kind) for a in archive.alarms()}
        wanted = {
            ("good", "bad_signature"),
            ("stranger", "unknown_hub"),
            ("rolls", "rollback"),
            ("forks", "fork"),
        }
        return wanted <= kinds

    _wait_for(alarmed, "the four alarms", 30, workers)
    time.sleep(1.0)  # any straggler of the bad items lands (and must not be stored)
    forks_alarms = {a.kind for a in archive.alarms() if a.hub_id == "forks"}
    assert forks_alarms == {"fork"}
    states = {h.hub_id: h.state for h in archive.hubs()}
    assert states == {"good": "active", "rolls": "stopped", "forks": "stopped"}
    for hub_id in ("good", "rolls", "forks"):
        stored = archive.rows(
            "SELECT canonical FROM clinic_records WHERE hub_id = %s"
            " ORDER BY batch_seq, record_index",
            (hub_id,),
        )
        assert [json.loads(r[0]) for r in stored] == _records(accepted[hub_id]), hub_id
    assert archive.rows("SELECT count(*) FROM clinic_records WHERE hub_id = 'stranger'") == [(0,)]


def _unsent(hub: SimulatedHub, count: int, start_minute: int = 0) -> list[tuple[str, bytes]]:
    """Produce `count` batches and leave them in the outbox for the real forwarder."""
    return produce(hub, count, start_minute, sent=False)


def _size(archive: ClinicArchive, hub_id: str) -> int | None:
    return next(h.checkpoint_size for h in archive.hubs() if h.hub_id == hub_id)
