"""The connection's own PUBLISH decoding and PUBACKs against a real Mosquitto: messages the
hub decodes itself and messages paho decodes (with properties, cut by the end of a socket
read) arrive alike, in order, and every acknowledgement reaches the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_adapters.mqtt.client import InboundMessage, MqttConnection
from tests.device_adapters.mqtt.conftest import config_for, stop
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.broker

Start = Callable[[Callable[[], Awaitable[None]]], asyncio.Task[None]]


def subscriber(broker: Mosquitto, patient: str) -> MqttConnection:
    return MqttConnection(
        config_for(
            broker,
            f"hub-{patient}",
            clean_start=False,
            session_expiry_s=3600,
            subscriptions=(f"{patient}/#",),
        )
    )


def publish_all(broker: Mosquitto, messages: list[tuple[str, bytes, int, bool]]) -> None:
    """Publish (topic, payload, qos, with a user property) with plain paho, in order, and
    wait for every acknowledgement."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.max_inflight_messages_set(1000)  # else QoS 0 overtakes QoS 1 held back here
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        infos = []
        for topic, payload, qos, with_property in messages:
            properties = None
            if with_property:
                properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
                properties.UserProperty = ("origin", "test")
            infos.append(client.publish(topic, payload, qos=qos, properties=properties))
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


async def receive(connection: MqttConnection, count: int) -> list[InboundMessage]:
    got: list[InboundMessage] = []
    async with asyncio.timeout(20):
        while len(got) < count:
            message = await connection.receive()
            got.append(message)
            assert connection.ack(message)
    return got


async def test_plain_and_paho_decoded_messages_arrive_alike_and_are_all_acknowledged(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    # Large payloads make socket reads end inside a packet (reads are at most 64 KiB).
    kinds = [
        (0, 1, False),  # (payload size, QoS, user property): the plain case
        (12, 1, True),  # properties: paho decodes it
        (25_000, 1, False),
        (3, 0, False),
        (40_000, 1, False),
        (1, 1, False),
    ]
    messages = [
        (f"{patient}/d{n % 3}/readings", bytes([n % 256]) * size + str(n).encode(), qos, prop)
        for n in range(90)
        for size, qos, prop in [kinds[n % len(kinds)]]
    ]
    connection = subscriber(broker, patient)
    task = running(connection.run)
    async with asyncio.timeout(10):
        await connection.wait_connected()
    publishing = asyncio.create_task(asyncio.to_thread(publish_all, broker, messages))
    got = await receive(connection, len(messages))
    await publishing
    assert [(m.topic, m.payload, m.qos) for m in got] == [(t, p, q) for t, p, q, _ in messages]
    assert {m.generation for m in got} == {1}
    await asyncio.sleep(0.2)  # the last PUBACKs leave when the socket is next writable
    await stop(task)

    # The same session again: had any PUBACK been lost, the broker would resend it first.
    again = subscriber(broker, patient)
    running(again.run)
    async with asyncio.timeout(10):
        await again.wait_connected()
    marker = (f"{patient}/d0/readings", b"marker", 1, False)
    await asyncio.to_thread(publish_all, broker, [marker])
    (first,) = await receive(again, 1)
    assert (first.topic, first.payload) == (marker[0], marker[1])
