"""Power loss, as near as a test gets: the hub process SIGKILLed over and over at random points
while it ingests, seals, signs checkpoints and sends its upstream outbox, and `glucohub migrate`
killed in the middle of upgrading a database made by commit c685acb. After every kill the
database passes SQLite's integrity check and `ledger verify`; at the end every reading published
at QoS 1 is stored exactly once.

Kill points are drawn from a seeded random generator (the seed is in the failure message), so a
failing sequence can be replayed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.model import Device, DeviceKind, Transport
from gateway.storage.sqlite_migrations import SCHEMA_VERSION
from gateway.store import DB_FILENAME, Store
from gateway.verify import verify_data_dir
from tests.support.mosquitto import Mosquitto

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "storage" / "c685acb"
FIXTURE_READINGS = 48
HUB_ID = "glucohub-local"
TOPIC = "glucohub/v1/p1/kill-cgm/readings"
RUN_KILLS = 45
MIGRATION_KILLS = 10
PER_ROUND = 150
SEED = 20261206


def copy_fixture(data_dir: Path) -> None:
    data_dir.mkdir(mode=0o700, parents=True)
    shutil.copy(FIXTURE / DB_FILENAME, data_dir / DB_FILENAME)
    shutil.copytree(FIXTURE / "keys", data_dir / "keys")
    for key in (data_dir / "keys").glob("*.pem"):
        key.chmod(0o600)


def integrity(data_dir: Path) -> tuple[str, int, int]:
    """SQLite's own integrity check, the schema version and the number of stored readings."""
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True, timeout=10)
    try:
        (check,) = db.execute("PRAGMA integrity_check").fetchone()
        (version,) = db.execute("PRAGMA user_version").fetchone()
        (count,) = db.execute("SELECT COUNT(*) FROM readings").fetchone()
        return str(check), int(version), int(count)
    finally:
        db.close()


def glucohub(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "glucohub", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until the hub logs that ingest runs (its signal handlers are in place by then); its
    log is drained on a thread from here on."""
    assert process.stderr is not None
    stream = process.stderr
    ready = threading.Event()

    def drain() -> None:
        for line in stream:
            if b"ready: " in line:
                ready.set()

    threading.Thread(target=drain, daemon=True).start()
    assert ready.wait(timeout_s), "the hub never said it was ready"


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    if process.stderr is not None:
        process.stderr.close()


@pytest.mark.slow
def test_a_migration_killed_at_random_points_leaves_a_database_that_upgrades_and_verifies(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    for round_ in range(MIGRATION_KILLS):
        data_dir = tmp_path / f"hub-{round_}"
        copy_fixture(data_dir)
        process = glucohub("migrate", "--data-dir", str(data_dir))
        time.sleep(rng.uniform(0.0, 0.9))  # the interpreter starts in ~0.3-0.6 s here
        kill(process)
        check, version, count = integrity(data_dir)
        assert check == "ok", f"round {round_} (seed {SEED}): {check}"
        assert 0 <= version <= SCHEMA_VERSION
        assert count == FIXTURE_READINGS
        Store(data_dir).close()  # the remaining migrations apply
        report = verify_data_dir(data_dir, HUB_ID)
        assert report.ok and report.readings == FIXTURE_READINGS, (round_, report.message)


class Uploader:
    """A device's QoS 1 uploader: every reading it publishes is kept until acknowledged."""

    def __init__(self, broker: Mosquitto, total: int) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="kill-uploader", protocol=paho.MQTTv311
        )
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        base = datetime.now(UTC) - timedelta(days=1)
        self.payloads = [
            json.dumps(
                {
                    "kind": "cgm_glucose",
                    "value": 70 + seq % 120,
                    "unit": "mg/dL",
                    "time": (base + timedelta(seconds=5 * seq)).isoformat(),
                    "seq": seq,
                }
            )
            for seq in range(total)
        ]
        self.sent = 0
        self.infos: list[paho.MQTTMessageInfo] = []

    def publish(self, count: int) -> None:
        for _ in range(count):
            self.infos.append(self.client.publish(TOPIC, self.payloads[self.sent], qos=1))
            self.sent += 1

    def repeat_first(self) -> None:
        self.infos.append(self.client.publish(TOPIC, self.payloads[0], qos=1))

    def wait_acked(self) -> None:
        for info in self.infos:
            info.wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.slow
@pytest.mark.broker
def test_a_hub_killed_at_random_points_loses_nothing_and_its_ledger_always_verifies(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    data_dir = tmp_path / "hub"
    copy_fixture(data_dir)  # the first start upgrades it: a kill may land in the migration
    total = RUN_KILLS * PER_ROUND
    with Mosquitto(tmp_path / "broker") as broker:
        env = {
            **os.environ,
            "GLUCOHUB_MQTT__URL": broker.url,
            "GLUCOHUB_MQTT__CLIENT_ID": "kill-hub",
            "GLUCOHUB_UPSTREAM__URL": broker.url,  # outbox sending, to the same broker
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.1",
            "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "40",
        }
        store = Store(data_dir)
        store.add_device(
            Device(
                device_id="kill-cgm",
                patient_id="p1",
                kind=DeviceKind.CGM,
                transport=Transport.MQTT,
            )
        )
        store.close()
        uploader = Uploader(broker, total)
        run = ["run", "--data-dir", str(data_dir)]
        try:
            # The broker queues messages only for a session that exists: one clean run first.
            hub = glucohub(*run, env=env)
            deadline = time.monotonic() + 60
            uploader.publish(1)
            while integrity(data_dir)[2] < FIXTURE_READINGS + 1:
                assert time.monotonic() < deadline, "the hub never subscribed"
                assert hub.poll() is None, "the hub exited"
                time.sleep(0.3)
                uploader.repeat_first()  # dropped while no session existed; a replay is a no-op
            kill(hub)
            for round_ in range(RUN_KILLS):
                before = integrity(data_dir)[2]
                uploader.publish(PER_ROUND - (1 if round_ == 0 else 0))
                hub = glucohub(*run, env=env)
                # Kill once it is at work (ingesting, and so sealing, signing and sending),
                # at a random point of that work.
                deadline = time.monotonic() + 60
                while integrity(data_dir)[2] == before and hub.poll() is None:
                    assert time.monotonic() < deadline, f"round {round_}: nothing ingested"
                    time.sleep(0.02)
                time.sleep(rng.uniform(0.0, 0.5))
                assert hub.poll() is None, f"round {round_}: the hub exited by itself"
                kill(hub)
                check, version, _ = integrity(data_dir)
                assert check == "ok", f"round {round_} (seed {SEED}): {check}"
                assert version == SCHEMA_VERSION
                report = verify_data_dir(data_dir, HUB_ID)
                assert report.ok, f"round {round_} (seed {SEED}): {report.message}"
            uploader.wait_acked()
            hub = glucohub(*run, env=env)
            deadline = time.monotonic() + 120
            while integrity(data_dir)[2] < FIXTURE_READINGS + total:
                assert hub.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
            wait_ready(hub)  # a SIGTERM before its handlers exist would end it with -15
            hub.send_signal(signal.SIGTERM)
            assert hub.wait(timeout=60) == 0
            if hub.stderr is not None:
                hub.stderr.close()
        finally:
            uploader.close()
    seqs = [
        reading.seq
        for reading in Store(data_dir, read_only=True).readings(patient_id="p1")
        if reading.device_id == "kill-cgm"
    ]
    assert sorted(seqs) == list(range(total)), f"{len(seqs)} stored for {total} published"
    report = verify_data_dir(data_dir, HUB_ID)
    assert report.ok and report.readings == FIXTURE_READINGS + total, report.message
