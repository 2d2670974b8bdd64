"""The baseline both MQTT benchmarks measure against: bare paho-mqtt (its own network
thread, MQTT 5, automatic PUBACK) on a persistent session pre-filled while it was away,
and the publisher that fills it. Not a benchmark itself (no `bench_` prefix)."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as paho  # the baseline needs bare paho; the product imports it once
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class BenchError(RuntimeError):
    pass


def _session_props() -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 3600
    return props


def new_client(client_id: str) -> paho.Client:
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)


def make_session(port: int, client_id: str, topic_filter: str) -> None:
    """Create a persistent session subscribed to `topic_filter` (QoS 1), then leave."""
    done = threading.Event()
    client = new_client(client_id)
    client.on_connect = lambda c, *_: c.subscribe(topic_filter, qos=1)
    client.on_subscribe = lambda *_: done.set()
    client.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    client.loop_start()
    try:
        if not done.wait(10):
            raise BenchError(f"{client_id}: no SUBACK within 10 s")
    finally:
        client.disconnect()
        client.loop_stop()


def prefill(port: int, messages: list[tuple[str, str, bytes]]) -> float:
    """Publish `messages` at QoS 1 and wait for every PUBACK; returns msg/s."""
    client = new_client("bench-prefill")
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    try:
        infos = [client.publish(where, body, qos=1) for _, where, body in messages]
        for info in infos:
            info.wait_for_publish(60)
            if not info.is_published():
                raise BenchError("pre-fill: a publish was not acknowledged within 60 s")
    finally:
        client.disconnect()
        client.loop_stop()
    return len(messages) / (time.perf_counter() - start)


def bare_drain(port: int, client_id: str, count: int, timeout_s: float) -> float:
    """Reconnect to a pre-filled session and count its messages (auto-ack); msg/s."""
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

    client = new_client(client_id)
    client.on_connect = on_connect
    client.on_message = on_message
    client.connect("127.0.0.1", port, clean_start=False, properties=_session_props())
    client.loop_start()
    try:
        if not finished.wait(timeout_s):
            raise BenchError(f"bare paho drained {received}/{count} in {timeout_s:.0f} s")
        elapsed = time.perf_counter() - start
    finally:
        client.disconnect()
        client.loop_stop()
    return count / elapsed
