"""Drain rate of a pre-filled persistent session: bare paho vs. Glucohub's MQTT consumer.

Both read the same N QoS 1 messages (~120-byte JSON readings) from a real Mosquitto. The
queue is filled before either connects (a paho publisher tops out near 7.6k msg/s, below
the subscribers: see NOTES.md), so this measures the subscriber, not the publisher.

    .venv/bin/python bench/bench_mqtt_ingest.py [N]
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import paho.mqtt.client as paho  # the baseline needs bare paho; the product imports it once
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from device_adapters.mqtt.client import BrokerConfig, MqttConnection
from device_adapters.mqtt.consumer import MqttConsumer
from gateway.clock import SystemClock
from gateway.model import DeviceEvent, Reading
from gateway.protocols import DeadLetter, DurableCallback, IngestOutcome, Origin
from tests.support.mosquitto import Mosquitto

TOPIC = "glucohub/v1/bench-patient/cgm-1/readings"


def payload(seq: int) -> bytes:
    return json.dumps(
        {
            "kind": "cgm_glucose",
            "value": 104.5,
            "unit": "mg/dL",
            "time": "2024-05-01T08:00:00Z",
            "seq": seq,
        }
    ).encode()


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    return props


def make_session(port: int, client_id: str) -> None:
    """Create a persistent session subscribed to TOPIC, then leave."""
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_subscribe = lambda *a: done.set()
    client.on_connect = lambda c, *a: c.subscribe(TOPIC, qos=1)
    client.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()


def prefill(port: int, count: int) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub", protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    infos = [client.publish(TOPIC, payload(n), qos=1) for n in range(count)]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def bare_paho(port: int, client_id: str, count: int) -> float:
    received = 0
    start = 0.0
    finished = threading.Event()

    def on_connect(*_: object) -> None:
        nonlocal start
        start = time.perf_counter()

    def on_message(*_: object) -> None:
        nonlocal received
        received += 1
        if received == count:
            finished.set()

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    client.loop_start()
    finished.wait(300)
    elapsed = time.perf_counter() - start
    client.disconnect()
    client.loop_stop()
    return count / elapsed


class CountingSink:
    """Trivial in-memory sink: durable at once."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.readings = 0
        self.done = asyncio.Event()

    async def enqueue(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        self.readings += len(readings)
        if on_durable is not None:
            on_durable(IngestOutcome(accepted=len(readings)))
        if self.readings >= self.count:
            self.done.set()

    async def submit(self, **_: object) -> IngestOutcome:  # pragma: no cover
        raise NotImplementedError


async def glucohub(port: int, client_id: str, count: int) -> float:
    config = BrokerConfig(
        host="127.0.0.1",
        port=port,
        client_id=client_id,
        clean_start=False,
        session_expiry_s=3600,
        subscriptions=(TOPIC,),
    )
    connection = MqttConnection(config)
    sink = CountingSink(count)
    consumer = MqttConsumer(connection=connection, sink=sink, clock=SystemClock())
    async with asyncio.TaskGroup() as group:
        conn_task = group.create_task(connection.run())
        await connection.wait_connected()
        start = time.perf_counter()
        cons_task = group.create_task(consumer.run())
        await sink.done.wait()
        elapsed = time.perf_counter() - start
        cons_task.cancel()
        conn_task.cancel()
    assert consumer.stats().acked == count
    return count / elapsed


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp)) as broker:
        for name in ("baseline", "glucohub"):
            make_session(broker.port, f"bench-{name}")
        prefill(broker.port, count)  # both sessions get the same N messages
        base = bare_paho(broker.port, "bench-baseline", count)
        ours = asyncio.run(glucohub(broker.port, "bench-glucohub", count))
    print(f"messages: {count} QoS 1, ~{len(payload(0))} bytes, pre-filled persistent sessions")
    print(f"bare paho (network thread, auto-ack): {base:9.0f} msg/s")
    print(f"glucohub consumer (decode + sink + ack after durable): {ours:9.0f} msg/s")
    print(f"ratio glucohub / paho: {ours / base:.2f}")


if __name__ == "__main__":
    main()
