"""A clinic worker's Prometheus /metrics (`clinic.metrics_port`), scraped from a running
`glucohub clinic` process fed by real hubs through a real Mosquitto into a real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.clock import utc_now
from gateway.errors import ConfigError
from gateway.settings import load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from glucohub.simulate import SimulatedHub, forward_until_sent
from tests.clinic.hubs import make_hub, produce
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import Postgres

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = re.compile(r"^([a-z_]+)(\{[^}]*\})? (\S+)$")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


class Worker:
    """One `glucohub clinic` process with its metrics port."""

    def __init__(self, tmp_path: Path, broker: Mosquitto, url: str) -> None:
        self.port = free_port()
        config = tmp_path / "clinic.toml"
        config.write_text(
            f'[clinic]\nurl = "{url}"\nmqtt_url = "{broker.url}"\ngroup = "m"\n'
            f'client_id = "metrics-w1"\nmetrics_port = {self.port}\n'
        )
        self.log = tmp_path / "worker.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "glucohub", "clinic", "--config", str(config)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line.strip() == "clinic worker metrics-w1 consuming", self.log.read_text()

    def scrape(self) -> tuple[str, dict[str, float]]:
        """(Content-Type, {'name{labels}': value}) of GET /metrics."""
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            content_type = response.headers["Content-Type"]
            text = response.read().decode()
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if line.startswith("#") or not line:
                continue
            match = SAMPLE.match(line)
            assert match is not None, f"not exposition format: {line!r}"
            samples[match[1] + (match[2] or "")] = float(match[3])
        return content_type, samples

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def worker(tmp_path: Path, broker: Mosquitto, postgres_url: str) -> Iterator[Worker]:
    running = Worker(tmp_path, broker, postgres_url)
    yield running
    running.stop()


def _wait_for(check: Callable[[], bool], what: str, worker: Worker, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{worker.log.read_text()}")
        time.sleep(0.1)


def _send(hubs: list[SimulatedHub], url: str) -> None:
    asyncio.run(forward_until_sent(hubs, url))


@pytest.mark.slow
def test_a_running_worker_counts_what_it_verified_stored_and_rejected(
    tmp_path: Path, broker: Mosquitto, postgres_url: str, worker: Worker
) -> None:
    enrolled, stranger = make_hub(tmp_path, "alpha"), make_hub(tmp_path, "intruder")
    archive = ClinicArchive(postgres_url)
    archive.enrol(*enrolled.enrolment, utc_now())
    produce(enrolled, 3, sent=False)  # 3 batches of 2 patients' readings, 3 checkpoints
    produce(stranger, 1, sent=False)  # never enrolled: its batch and checkpoint refused
    _send([enrolled, stranger], broker.url)

    def all_handled() -> bool:
        _, samples = worker.scrape()
        return samples['glucohub_clinic_items_total{kind="checkpoints"}'] == 4

    _wait_for(all_handled, "8 items handled", worker)
    content_type, samples = worker.scrape()
    archive.close()

    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    assert samples['glucohub_clinic_items_total{kind="batches"}'] == 4
    assert samples["glucohub_clinic_batches_verified_total"] == 3
    assert samples["glucohub_clinic_records_stored_total"] == 6
    assert samples["glucohub_clinic_batches_duplicate_total"] == 0
    checkpoints = [v for k, v in samples.items() if k.startswith("glucohub_clinic_checkpoints")]
    assert sum(checkpoints) == 3
    assert samples['glucohub_clinic_rejected_total{kind="batches",reason="unknown_hub"}'] == 1
    assert samples['glucohub_clinic_rejected_total{kind="checkpoints",reason="unknown_hub"}'] == 1
    assert samples['glucohub_clinic_alarms_total{kind="unknown_hub"}'] == 2
    assert samples["glucohub_clinic_database_retries_total"] == 0
    assert samples["glucohub_clinic_in_flight_messages"] == 0
    assert samples["glucohub_clinic_oldest_unacked_age_seconds"] == 0
    # nothing that names a hub or a patient
    assert not any("alpha" in k or "intruder" in k or "-p0" in k for k in samples)


@pytest.mark.slow
def test_a_database_outage_shows_as_retries_and_a_growing_unacknowledged_age(
    tmp_path: Path,
    broker: Mosquitto,
    postgres_server: Postgres,
    postgres_url: str,
    worker: Worker,
) -> None:
    hub = make_hub(tmp_path, "h")
    archive = ClinicArchive(postgres_url)
    archive.enrol(*hub.enrolment, utc_now())
    archive.close()
    produce(hub, 1, sent=False)
    postgres_server.stop()
    try:
        _send([hub], broker.url)
        _wait_for(
            lambda: worker.scrape()[1]["glucohub_clinic_database_retries_total"] >= 1,
            "a retry",
            worker,
        )
        first = worker.scrape()[1]
        time.sleep(1.0)
        later = worker.scrape()[1]
    finally:
        postgres_server.start()
    assert first["glucohub_clinic_in_flight_messages"] == 2  # the batch and its checkpoint
    assert later["glucohub_clinic_oldest_unacked_age_seconds"] >= (
        first["glucohub_clinic_oldest_unacked_age_seconds"] + 0.9
    )
    assert first['glucohub_clinic_items_total{kind="batches"}'] == 0

    def drained() -> bool:
        samples = worker.scrape()[1]
        return samples["glucohub_clinic_in_flight_messages"] == 0

    _wait_for(drained, "the backlog after the restart", worker)
    samples = worker.scrape()[1]
    assert samples["glucohub_clinic_batches_verified_total"] == 1
    assert samples["glucohub_clinic_oldest_unacked_age_seconds"] == 0


def test_the_metrics_port_is_off_by_default_and_checked() -> None:
    assert load_settings(None, {}).clinic.metrics_port == 0
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {"GLUCOHUB_CLINIC__METRICS_PORT": "70000"})
    assert raised.value.key == "clinic.metrics_port"


@pytest.mark.slow
def test_a_taken_metrics_port_is_one_line_and_exit_2(
    tmp_path: Path, broker: Mosquitto, postgres_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "clinic.toml"
        config.write_text(
            f'[clinic]\nurl = "{postgres_url}"\nmqtt_url = "{broker.url}"\n'
            f'client_id = "w"\nmetrics_port = {port}\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "glucohub", "clinic", "--config", str(config)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "clinic.metrics_port" in result.stderr
    assert f"port {port}" in result.stderr


def test_only_metrics_is_served() -> None:
    """Any other path is 404 (checked in-process on a port of its own)."""
    from glucohub.metrics_http import start_metrics

    async def go() -> tuple[list[int], str]:
        port = free_port()
        runner = await start_metrics(port, lambda: "x 1\n", "clinic.metrics_port")
        try:
            statuses = []
            for path in ("/", "/healthz"):
                try:
                    await asyncio.to_thread(
                        urllib.request.urlopen, f"http://127.0.0.1:{port}{path}", None, 5
                    )
                    statuses.append(200)
                except urllib.error.HTTPError as exc:
                    statuses.append(exc.code)
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", None, 5).read()
            )
            return statuses, body.decode()
        finally:
            await runner.cleanup()

    assert asyncio.run(go()) == ([404, 404], "x 1\n")
