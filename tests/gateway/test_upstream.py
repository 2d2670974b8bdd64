"""Issue 4's upstream test on the real hub: the clinic broker is down while 100 batches are
sealed; when it returns, all 100 arrive in order (and the checkpoints with them)."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from gateway.clock import Clock
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin, ReadingSink
from gateway.settings import load_settings
from gateway.store import Store
from gateway.units import Unit
from glucohub.runtime import Running, run_hub
from ledger.records import open_batch_view
from tests.support.mosquitto import Mosquitto

BATCHES = 100


class Clinic:
    """The clinic's subscriber, with a persistent session so nothing published while it is
    connected or away is lost."""

    def __init__(self, broker: Mosquitto) -> None:
        self.broker = broker
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.client: paho.Client | None = None
        self.subscribed = threading.Event()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def connect(self) -> None:
        # A fresh paho client per connection (same id, persistent session): paho leaks its
        # wake-up socket pair when one client object is started twice.
        self.subscribed.clear()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="clinic",
            clean_session=False,
            protocol=paho.MQTTv311,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.connect("127.0.0.1", self.broker.port)
        self.client.subscribe("glucohub/v1/hubs/#", qos=1)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def batches(self, batch_key: Ed25519PublicKey) -> list[int]:
        """The batch numbers received, each verified as the clinic would: the signature and
        every record against the signed records root."""
        with self.lock:
            found = [m for m in self.messages if m[0].endswith("/batches")]
        seqs = []
        for _, message in found:
            payload, records = open_batch_view(message, batch_key)
            readings = [r.record for r in records if "type" not in r.record]  # events have one
            assert [r["device_id"] for r in readings] == ["cgm-1"] * len(readings)
            seqs.append(payload.batch_seq)
        return seqs


@pytest.mark.broker
async def test_batches_wait_in_the_outbox_and_arrive_in_order(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.BLE)
    )
    store.close()
    broker = Mosquitto(tmp_path / "clinic-broker")
    clinic = Clinic(broker)
    broker.start()  # the clinic's persistent session exists before the outage
    await asyncio.to_thread(clinic.connect)
    await asyncio.to_thread(clinic.close)
    broker.stop()

    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_UPSTREAM__URL": broker.url,
            "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "1",
        },
    )
    now = datetime.now(UTC)

    async def source(sink: ReadingSink, clock: Clock) -> None:
        for i in range(BATCHES):
            reading = Reading(
                patient_id="p1",
                device_id="cgm-1",
                kind=ReadingKind.CGM_GLUCOSE,
                value=100.0 + i,
                unit=Unit.MG_DL,
                time=now - timedelta(minutes=BATCHES - i),
                source=Source.BLE,
                seq=i,
            )
            await sink.submit(origin=Origin(source=Source.BLE), readings=[reading])
        await asyncio.Event().wait()

    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    hub = asyncio.create_task(
        run_hub(settings, sources=[source], stop=stop, on_ready=ready.set_result)
    )
    running = await asyncio.wait_for(ready, 20)
    key = running.keys.batch_key.public_key()
    try:
        for _ in range(300):
            if running.hub.telemetry.value("glucohub_ledger_batches_total") >= BATCHES:
                break
            await asyncio.sleep(0.1)
        assert running.hub.telemetry.value("glucohub_ledger_batches_total") == BATCHES
        assert clinic.batches(key) == []  # the clinic broker is still down
        await asyncio.sleep(1.0)
        await asyncio.to_thread(broker.start)  # back after the outage
        await asyncio.to_thread(clinic.connect)
        for _ in range(300):
            if len(clinic.batches(key)) >= BATCHES:
                break
            await asyncio.sleep(0.1)
        assert clinic.batches(key) == list(range(BATCHES))
        sizes = [
            int(note.decode().splitlines()[1])
            for topic, note in clinic.messages
            if topic.endswith("/checkpoints")
        ]
        assert sizes == sorted(sizes) and sizes[-1] == BATCHES  # the log's growth, in order
    finally:
        stop.set()
        await asyncio.wait_for(hub, 30)
        await asyncio.to_thread(clinic.close)
        broker.stop()
