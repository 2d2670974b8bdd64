"""A nearly full disk: the hub stores nothing, acknowledges nothing (the broker keeps every
message, across a restart too) and says so; with space back it stores them all."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.settings import load_settings
from gateway.store import DB_FILENAME, Store
from gateway.verify import verify_data_dir
from glucohub.runtime import Running, run_hub
from tests.support.mosquitto import Mosquitto

TOPIC = "glucohub/v1/p1/cgm-1/readings"
COUNT = 20


def stored(data_dir: Path) -> int:
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True, timeout=5)
    try:
        return int(db.execute("SELECT COUNT(*) FROM readings").fetchone()[0])
    finally:
        db.close()


def mqtt_stats(running: Running) -> dict[str, Any]:
    sources = running.hub.health()["sources"]
    assert isinstance(sources, dict)
    stats: dict[str, Any] = sources["mqtt"]
    return stats


async def until(predicate: Callable[[], bool], what: str, within_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def publish(broker: Mosquitto) -> None:
    """An uploader's readings at QoS 1, each acknowledged by the broker."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="uploader", protocol=paho.MQTTv311)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        base = datetime.now(UTC) - timedelta(hours=2)
        for seq in range(COUNT):
            payload = {
                "kind": "cgm_glucose",
                "value": 100 + seq,
                "unit": "mg/dL",
                "time": (base + timedelta(minutes=5 * seq)).isoformat(),
                "seq": seq,
            }
            client.publish(TOPIC, json.dumps(payload), qos=1).wait_for_publish(10)
    finally:
        client.loop_stop()
        client.disconnect()


@pytest.mark.slow
async def test_a_full_disk_pauses_storing_and_the_broker_keeps_the_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "hub"
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()
    free_mb = shutil.disk_usage(data_dir).free // (1024 * 1024)
    with Mosquitto(tmp_path / "broker") as broker:
        settings = load_settings(
            None,
            {
                "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
                "GLUCOHUB_STORAGE__MIN_FREE_MB": str(free_mb + 10 * 1024),  # "full"
                "GLUCOHUB_MQTT__URL": broker.url,
                "GLUCOHUB_DASHBOARD__ENABLED": "false",
                "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.3",
            },
        )

        async def start() -> tuple[asyncio.Event, asyncio.Task[None], Running]:
            stop = asyncio.Event()
            ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
            running = await asyncio.wait_for(ready, 30)
            await until(lambda: mqtt_stats(running).get("state") == "connected", "subscribed")
            return stop, task, running

        with caplog.at_level(logging.INFO):
            # 1. Full from the start: the messages arrive, none is stored or acknowledged.
            stop, task, running = await start()
            health = running.hub.health()
            assert health["status"] == "degraded"
            storage = health["storage"]
            assert isinstance(storage, dict) and storage["accepting"] is False
            assert storage["paused_reason"].endswith(
                f"below storage.min_free_mb = {free_mb + 10240}"
            )
            await asyncio.to_thread(publish, broker)
            await until(lambda: mqtt_stats(running)["received"] == COUNT, "delivery")
            await asyncio.sleep(1.0)
            assert (mqtt_stats(running)["acked"], mqtt_stats(running)["unacked"]) == (0, COUNT)
            assert stored(data_dir) == 0
            stop.set()
            await asyncio.wait_for(task, 30)
            assert stored(data_dir) == 0, "nothing stored on the way out either"
            critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
            assert len(critical) == 1 and "disk nearly full" in critical[0]
            assert "stores nothing more" in critical[0]

            # 2. Restarted, still full: the broker delivers the same messages again.
            stop, task, running = await start()
            await until(lambda: mqtt_stats(running)["received"] == COUNT, "redelivery")
            assert stored(data_dir) == 0
            # 3. Space is back (the threshold lowered): every message is stored and acked.
            assert running.disk_guard is not None
            running.disk_guard.min_free_mb = 1
            await until(lambda: stored(data_dir) == COUNT, "storing again", within_s=15)
            await until(lambda: mqtt_stats(running)["acked"] == COUNT, "acknowledged")
            assert running.hub.health()["status"] == "ok"
            stop.set()
            await asyncio.wait_for(task, 30)
    assert any("disk space is back" in r.getMessage() for r in caplog.records)
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok and report.readings == COUNT, report.message
