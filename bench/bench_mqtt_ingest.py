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
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.paho_baseline import bare_drain, make_session, prefill
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
            make_session(broker.port, f"bench-{name}", TOPIC)
        # Both sessions get the same N messages.
        prefill(broker.port, [(str(n), TOPIC, payload(n)) for n in range(count)])
        base = bare_drain(broker.port, "bench-baseline", count, timeout_s=300)
        ours = asyncio.run(glucohub(broker.port, "bench-glucohub", count))
    print(f"messages: {count} QoS 1, ~{len(payload(0))} bytes, pre-filled persistent sessions")
    print(f"bare paho (network thread, auto-ack): {base:9.0f} msg/s")
    print(f"glucohub consumer (decode + sink + ack after durable): {ours:9.0f} msg/s")
    print(f"ratio glucohub / paho: {ours / base:.2f}")


if __name__ == "__main__":
    main()
