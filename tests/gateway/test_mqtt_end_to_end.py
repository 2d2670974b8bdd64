"""Issue 4's acceptance test: 10,000 readings published at QoS 1 while the real hub process
is SIGKILLed and restarted twice and the broker is restarted once — every reading ends up
in `glucohub export` exactly once, and the ledger verifies. On SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.errors import StorageError
from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.storage.opening import open_storage
from gateway.verify import verify_data_dir
from tests.support.mosquitto import Mosquitto

TOTAL = 10_000
TOPIC = "glucohub/v1/e2e-patient/e2e-cgm/readings"


def stored(data_dir: Path, url: str) -> int:
    try:
        store = open_storage(data_dir, url, read_only=True)
    except StorageError:  # not created yet
        return 0
    try:
        return store.count_readings()
    except StorageError:
        return 0
    finally:
        store.close()


class Hub:
    def __init__(self, data_dir: Path, broker: Mosquitto, url: str = "") -> None:
        self.data_dir = data_dir
        self.env = {
            **os.environ,
            "GLUCOHUB_STORAGE__URL": url,
            "GLUCOHUB_MQTT__URL": broker.url,
            "GLUCOHUB_MQTT__CLIENT_ID": "e2e-hub",
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.5",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (data_dir.parent / "hub.log").open("ab")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glucohub", "run", "--data-dir", str(self.data_dir)],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def sigkill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def sigterm(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class Publisher:
    """A device uploader: QoS 1, reconnects by itself, republishes what was never acked."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="e2e-uploader", protocol=paho.MQTTv311
        )
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(0.1, 1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.sent = 0
        self.infos: dict[int, paho.MQTTMessageInfo] = {}
        base = datetime.now(UTC) - timedelta(days=2)
        self.payloads = {
            seq: json.dumps(
                {
                    "kind": "cgm_glucose",
                    "value": 80 + seq % 150,
                    "unit": "mg/dL",
                    "time": (base + timedelta(seconds=15 * seq)).isoformat(),
                    "seq": seq,
                }
            )
            for seq in range(TOTAL)
        }

    def publish_until(self, count: int) -> None:
        while self.sent < count:
            self.infos[self.sent] = self.client.publish(TOPIC, self.payloads[self.sent], qos=1)
            self.sent += 1
            if self.sent % 200 == 0:
                time.sleep(0.01)

    def republish_unacked(self) -> int:
        def acked(info: paho.MQTTMessageInfo) -> bool:
            try:
                return info.is_published()
            except (RuntimeError, ValueError):  # published while the broker was away
                return False

        again = [seq for seq, info in self.infos.items() if not acked(info)]
        for seq in again:
            self.infos[seq] = self.client.publish(TOPIC, self.payloads[seq], qos=1)
        return len(again)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_url"))


@pytest.mark.broker
@pytest.mark.slow
def test_nothing_acknowledged_is_lost_through_kills_and_a_broker_restart(
    tmp_path: Path, storage_url: str
) -> None:
    data_dir = tmp_path / "hub"
    url = storage_url
    store = open_storage(data_dir, url)
    store.add_patient(Patient(patient_id="e2e-patient", display_name="E2E"))
    store.add_device(
        Device(
            device_id="e2e-cgm",
            patient_id="e2e-patient",
            kind=DeviceKind.CGM,
            transport=Transport.MQTT,
        )
    )
    store.close()
    with Mosquitto(tmp_path / "broker") as broker:
        hub = Hub(data_dir, broker, url)
        hub.start()
        publisher = Publisher(broker)
        try:
            # The broker keeps messages only for sessions that exist: until the hub's first
            # subscription, repeat reading 0 (the hub drops the repeats by (device, seq)).
            def first_reading_stored() -> bool:
                publisher.client.publish(TOPIC, publisher.payloads[0], qos=1)
                return stored(data_dir, url) >= 1

            wait_for(first_reading_stored, 60, "the hub's first subscription")
            publisher.publish_until(3000)
            wait_for(lambda: stored(data_dir, url) >= 1000, 60, "1,000 readings stored")
            hub.sigkill()  # mid-stream: acked readings are durable, unacked ones redelivered
            publisher.publish_until(5000)
            hub.start()
            wait_for(lambda: stored(data_dir, url) >= 3500, 60, "3,500 readings stored")
            broker.restart()  # the hub's persistent session and its queue survive
            publisher.publish_until(7500)
            wait_for(lambda: stored(data_dir, url) >= 6000, 60, "6,000 readings stored")
            hub.sigkill()
            publisher.publish_until(TOTAL)
            hub.start()
            deadline = time.monotonic() + 120
            while stored(data_dir, url) < TOTAL and time.monotonic() < deadline:
                time.sleep(3.0)
                publisher.republish_unacked()  # what the broker never acknowledged
            assert stored(data_dir, url) == TOTAL
            time.sleep(1.0)
            assert hub.sigterm() == 0
        finally:
            publisher.close()
            if hub.proc is not None and hub.proc.poll() is None:
                hub.proc.kill()
                hub.proc.wait()
            hub.log.close()
    exported = subprocess.run(
        [sys.executable, "-m", "glucohub", "export", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "GLUCOHUB_STORAGE__URL": url},
    ).stdout.splitlines()
    seqs = [json.loads(line)["seq"] for line in exported]
    assert len(seqs) == TOTAL, f"{len(seqs)} exported, {len(seqs) - len(set(seqs))} twice"
    assert sorted(seqs) == list(range(TOTAL))
    report = verify_data_dir(data_dir, "glucohub-local", storage_url=url)
    assert report.ok and report.readings == TOTAL, report.message
