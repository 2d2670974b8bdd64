"""The consumer against a real Mosquitto: acks only after durability, dead letters,
broker restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from device_adapters.mqtt.client import MqttConnection
from device_adapters.mqtt.consumer import MqttConsumer
from gateway.clock import SystemClock
from gateway.protocols import IngestOutcome, RejectReason
from tests.device_adapters.mqtt.conftest import (
    RecordingSink,
    config_for,
    publish_reliably,
    publisher,
    stop,
)
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.broker

Start = Callable[[Callable[[], Awaitable[None]]], asyncio.Task[None]]
DATA = Path(__file__).parents[2] / "data" / "mqtt"


def reading(seq: int, value: float = 100.0) -> bytes:
    return json.dumps(
        {"kind": "glucose", "value": value, "unit": "mg/dL", "time_offset_s": 0, "seq": seq}
    ).encode()


def consumer_connection(broker: Mosquitto, patient: str, **changes: object) -> MqttConnection:
    options: dict[str, object] = {
        "clean_start": False,
        "session_expiry_s": 3600,
        "subscriptions": (f"glucohub/v1/{patient}/#",),
    }
    options.update(changes)
    return MqttConnection(config_for(broker, f"hub-{patient}", **options))


async def start_consumer(
    start: Start, broker: Mosquitto, patient: str, sink: RecordingSink, **changes: object
) -> tuple[MqttConnection, MqttConsumer, asyncio.Task[None], asyncio.Task[None]]:
    connection = consumer_connection(broker, patient, **changes)
    consumer = MqttConsumer(connection=connection, sink=sink, clock=SystemClock())
    conn_task = start(connection.run)
    async with asyncio.timeout(10):
        await connection.wait_connected()
    cons_task = start(consumer.run)
    return connection, consumer, conn_task, cons_task


async def test_good_payload_arrives_as_readings_and_is_acked_only_when_durable(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    pub = await publisher(broker, running)

    # 1. A hub that never commits: it receives the reading but must not ack it.
    never = RecordingSink(durable=False)
    _conn, consumer, conn_task, cons_task = await start_consumer(running, broker, patient, never)
    await pub.publish(topic, reading(1))
    await never.wait_for(lambda: len(never.readings) == 1)
    assert never.readings[0].patient_id == patient
    assert never.readings[0].device_id == "cgm-1"
    assert consumer.stats().acked == 0
    await stop(cons_task)
    await stop(conn_task)

    # 2. Same client id again: the broker redelivers seq 1 (it was never acked).
    sink = RecordingSink()
    _conn, consumer, conn_task, cons_task = await start_consumer(running, broker, patient, sink)
    await sink.wait_for(lambda: len(sink.readings) >= 1)
    assert sink.readings[0].seq == 1
    await sink.wait_for(lambda: consumer.stats().acked == 1)
    await stop(cons_task)
    await stop(conn_task)

    # 3. Now it was acked after on_durable: a third session sees only the new seq 2.
    third = RecordingSink()
    _conn, _consumer, _conn_task, _cons_task = await start_consumer(running, broker, patient, third)
    await pub.publish(topic, reading(2))
    await third.wait_for(lambda: len(third.readings) >= 1)
    assert [r.seq for r in third.readings] == [2]


async def test_every_bad_input_is_a_dead_letter_and_the_next_good_message_arrives(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    bad: list[tuple[str, bytes, RejectReason]] = [
        (topic, b"\xff\xfe not utf-8", RejectReason.MALFORMED),
        (topic, b'{"kind": "glucose", "value": 1', RejectReason.MALFORMED),
        (topic, b'{"kind": "glucose"}', RejectReason.SCHEMA),
        (
            topic,
            b'{"kind":"glucose","value":5,"unit":"furlongs","time_offset_s":0,"seq":3}',
            RejectReason.UNKNOWN_UNIT,
        ),
        (
            topic,
            b'{"kind":"ketone","value":0.4,"unit":"mmol/L","time_offset_s":0,"seq":4}',
            RejectReason.UNKNOWN_KIND,
        ),
        (topic, b" " * 70_000 + reading(5), RejectReason.OVERSIZED),
        (f"glucohub/v1/{patient}/cgm-1/events", reading(6), RejectReason.SCHEMA),
    ]
    pub = await publisher(broker, running)
    sink = RecordingSink()
    _conn, consumer, conn_task, cons_task = await start_consumer(running, broker, patient, sink)
    for bad_topic, payload, _reason in bad:
        await pub.publish(bad_topic, payload)
    await pub.publish(topic, reading(7, value=123.0))
    await sink.wait_for(lambda: len(sink.readings) == 1)

    letters = sink.dead_letters
    assert [d.reason for d in letters] == [reason for _, _, reason in bad]
    assert [d.origin.raw for d in letters] == [payload for _, payload, _ in bad]
    assert [d.origin.topic for d in letters] == [t for t, _, _ in bad]
    # the device is known wherever the topic follows the layout (not on .../events)
    assert [d.origin.device_id for d in letters] == ["cgm-1"] * (len(bad) - 1) + [None]
    assert sink.readings[0].seq == 7 and sink.readings[0].value == 123.0
    # all eight were acked (dead letters too, once durable) ...
    await sink.wait_for(lambda: consumer.stats().acked == len(bad) + 1)
    assert consumer.stats().dead_lettered == len(bad)
    await stop(cons_task)
    await stop(conn_task)
    # ... so a restarted consumer gets only what is new.
    again = RecordingSink()
    await start_consumer(running, broker, patient, again)
    await pub.publish(topic, reading(8))
    await again.wait_for(lambda: len(again.deliveries) >= 1)
    assert [r.seq for r in again.readings] == [8]
    assert again.dead_letters == []


async def test_broker_restart_mid_stream_reconnects_resubscribes_and_loses_nothing(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    """Everything the broker still holds reaches the hub across a broker restart: what was
    acked before, what was queued while the hub was away, what is published after."""
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    sink = RecordingSink()
    conn, consumer, _conn_task, _cons_task = await start_consumer(running, broker, patient, sink)
    pub = await publisher(broker, running)
    for seq in range(200):
        await publish_reliably(pub, topic, reading(seq))
    # All 200 received and acked first: a message whose PUBACK the restart cuts off is
    # (rightly) delivered again, which is the hub's de-duplication's business, not this test's.
    await sink.wait_for(lambda: consumer.stats().acked == 200)
    # SIGTERM (Mosquitto persists sessions and queues) and start again on the same port,
    # in a thread, so both clients see the drop while their loops run.
    await asyncio.to_thread(broker.restart)

    async def publish_rest() -> None:
        for seq in range(200, 400):
            await publish_reliably(pub, topic, reading(seq))

    await running(publish_rest)
    await sink.wait_for(lambda: {r.seq for r in sink.readings} == set(range(400)))
    assert conn.status().connects == 2  # it reconnected (and subscribed again)
    assert sorted(r.seq for r in sink.readings) == list(range(400))  # each exactly once


async def test_messages_queued_for_an_offline_hub_survive_a_broker_restart(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    first = RecordingSink()
    _conn, _consumer, conn_task, cons_task = await start_consumer(running, broker, patient, first)
    await stop(cons_task)
    await stop(conn_task)
    pub = await publisher(broker, running)
    for seq in range(100):
        await publish_reliably(pub, topic, reading(seq))
    await asyncio.to_thread(broker.restart)
    back = RecordingSink()
    await start_consumer(running, broker, patient, back)
    await back.wait_for(lambda: len(back.readings) == 100)
    assert [r.seq for r in back.readings] == list(range(100))


async def test_messages_in_flight_to_the_hub_survive_a_broker_restart(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    never = RecordingSink(durable=False)  # received, never acked: in flight at the restart
    _conn, _consumer, conn_task, cons_task = await start_consumer(running, broker, patient, never)
    pub = await publisher(broker, running)
    for seq in range(5):
        await publish_reliably(pub, topic, reading(seq))
    await never.wait_for(lambda: len(never.readings) == 5)
    await stop(cons_task)
    await stop(conn_task)
    await asyncio.to_thread(broker.restart)
    back = RecordingSink()
    await start_consumer(running, broker, patient, back)
    await publish_reliably(pub, topic, reading(5))  # a marker that does arrive
    await back.wait_for(lambda: 5 in {r.seq for r in back.readings})
    assert sorted(r.seq for r in back.readings) == list(range(6))


async def test_messages_queued_while_the_hub_is_away_arrive_after_it_returns(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    sink = RecordingSink()
    _conn, _consumer, conn_task, cons_task = await start_consumer(running, broker, patient, sink)
    await stop(cons_task)
    await stop(conn_task)  # clean DISCONNECT: the session (and subscription) stay
    pub = await publisher(broker, running)
    for seq in range(1500):  # beyond Mosquitto's default max_queued_messages of 1000
        await pub.publish(topic, reading(seq))
    back = RecordingSink()
    await start_consumer(running, broker, patient, back)
    await back.wait_for(lambda: len(back.readings) == 1500)
    assert [r.seq for r in back.readings] == list(range(1500))


async def test_a_flood_beyond_receive_maximum_after_a_restart_arrives_whole(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    """Messages in flight at a broker restart plus a backlog, to a hub with a small Receive
    Maximum: however the broker sends them (Mosquitto 2.0 resends beyond the limit, and
    the client then holds packets it has read but not handed on), all arrive once."""
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    never = RecordingSink(durable=False)
    _conn, _consumer, conn_task, cons_task = await start_consumer(
        running, broker, patient, never, receive_maximum=20
    )
    pub = await publisher(broker, running)
    for seq in range(20):
        await publish_reliably(pub, topic, reading(seq))
    await never.wait_for(lambda: len(never.readings) == 20)  # all 20 in flight, unacked
    await stop(cons_task)
    await stop(conn_task)
    for seq in range(20, 600):
        await pub.publish(topic, reading(seq))
    await asyncio.to_thread(broker.restart)
    back = RecordingSink()
    await start_consumer(running, broker, patient, back, receive_maximum=20)
    await back.wait_for(lambda: len({r.seq for r in back.readings}) == 600)
    assert sorted({r.seq for r in back.readings}) == list(range(600))


async def test_stopping_sends_disconnect_so_the_broker_sees_a_clean_goodbye(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    """Packets are gathered before they are written; the DISCONNECT written as the
    connection closes must still reach the broker (not a bare socket close)."""
    sink = RecordingSink()
    _conn, _consumer, conn_task, cons_task = await start_consumer(running, broker, patient, sink)
    await stop(cons_task)
    await stop(conn_task)
    client_id = f"hub-{patient}"
    for _ in range(200):  # the broker logs within milliseconds; allow 10 s
        log = broker.log_path.read_text()
        if f"Client {client_id} disconnected." in log:
            break
        await asyncio.sleep(0.05)
    assert f"Client {client_id} disconnected." in log
    assert f"Client {client_id} closed its connection." not in log


async def test_unacknowledged_payload_bytes_are_bounded_then_released(
    broker: Mosquitto, patient: str, running: Start
) -> None:
    """Receive Maximum counts messages, not bytes: with large payloads waiting for their
    commit the client stops reading the socket at its byte budget (the broker keeps the
    rest), and reads on as acknowledgements free it."""
    topic = f"glucohub/v1/{patient}/cgm-1/readings"
    payloads = [
        json.dumps(
            {
                "kind": "glucose",
                "value": 100,
                "unit": "mg/dL",
                "time_offset_s": 0,
                "seq": seq,
                "status": ["x" * 60] * 16,
            }
        ).encode()
        for seq in range(60)
    ]
    held = RecordingSink(durable=False)  # nothing is acked until we say so
    await start_consumer(running, broker, patient, held, max_unacked_bytes=8 * 1024)
    pub = await publisher(broker, running)
    for payload in payloads:
        await publish_reliably(pub, topic, payload)
    await asyncio.sleep(0.5)  # time to read far more than the budget, were it not kept
    budget_messages = 8 * 1024 // len(payloads[0]) + 1
    assert 1 <= len(held.deliveries) <= budget_messages
    released = 0
    for _ in range(400):  # acknowledge what has arrived, as commits would, until all came
        for delivery in held.deliveries[released:]:
            assert delivery.on_durable is not None
            delivery.on_durable(IngestOutcome(accepted=1))
        released = len(held.deliveries)
        if released == len(payloads):
            break
        await asyncio.sleep(0.02)
    assert sorted(r.seq for r in held.readings) == list(range(60))
