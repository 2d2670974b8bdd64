"""The forwarder: in order, exactly once, marked sent only on PUBACK, bounded window."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import pytest

from device_adapters.mqtt.client import MqttConnection
from device_adapters.mqtt.upstream import OutboxEntry, OutboxItem, UpstreamForwarder
from gateway.topics import batches_topic
from tests.device_adapters.mqtt.conftest import config_for
from tests.support.mosquitto import Mosquitto

Start = Callable[[Callable[[], Awaitable[None]]], asyncio.Task[None]]


class MemoryOutbox:
    def __init__(self) -> None:
        self.items: list[OutboxItem] = []
        self.sent: list[int] = []
        self._new = asyncio.Event()

    def add(self, topic: str, payload: bytes) -> None:
        self.items.append(OutboxItem(item_id=len(self.items) + 1, topic=topic, payload=payload))
        self._new.set()

    async def pending(self, limit: int) -> Sequence[OutboxEntry]:
        self._new.clear()
        done = set(self.sent)
        return [i for i in self.items if i.item_id not in done][:limit]

    async def mark_sent(self, item_id: int) -> None:
        self.sent.append(item_id)

    async def wait_for_new(self) -> None:
        await self._new.wait()


@pytest.mark.broker
async def test_clinic_broker_down_then_back_gets_100_items_in_order_exactly_once(
    broker: Mosquitto, running: Start
) -> None:
    topic = batches_topic("hub-7")
    # The clinic's subscriber has a persistent session, then the clinic broker goes down.
    clinic = MqttConnection(
        config_for(
            broker,
            "clinic",
            clean_start=False,
            session_expiry_s=3600,
            subscriptions=("glucohub/v1/hubs/+/batches",),
        )
    )
    clinic_task = running(clinic.run)
    async with asyncio.timeout(10):
        await clinic.wait_connected()
    clinic_task.cancel()
    await asyncio.gather(clinic_task, return_exceptions=True)
    await asyncio.to_thread(broker.stop)

    outbox = MemoryOutbox()
    upstream = MqttConnection(config_for(broker, "hub-7-upstream", max_inflight=10))
    forwarder = UpstreamForwarder(connection=upstream, outbox=outbox, window=10)
    running(upstream.run)
    running(forwarder.run)
    for n in range(100):
        outbox.add(topic, f"batch {n}".encode())
    assert outbox.sent == []  # nothing can be acknowledged while the broker is down

    await asyncio.to_thread(broker.start)
    received = MqttConnection(
        config_for(
            broker,
            "clinic",
            clean_start=False,
            session_expiry_s=3600,
            subscriptions=("glucohub/v1/hubs/+/batches",),
        )
    )
    running(received.run)
    payloads: list[bytes] = []
    async with asyncio.timeout(30):
        while len(payloads) < 100:
            message = await received.receive()
            assert message.topic == topic
            payloads.append(message.payload)
            received.ack(message)
        while len(outbox.sent) < 100:  # noqa: ASYNC110 - marks have no event of their own
            await asyncio.sleep(0.01)
    assert payloads == [f"batch {n}".encode() for n in range(100)]
    assert outbox.sent == list(range(1, 101))  # marked in order, each once
    assert forwarder.max_inflight_seen <= 10
    # and nothing more arrives: a marker published now is the very next message
    outbox.add(topic, b"marker")
    async with asyncio.timeout(10):
        message = await received.receive()
    assert message.payload == b"marker"
    assert upstream.status().connects == 1


class FakePublisher:
    """Records publishes; the test decides when each PUBACK arrives."""

    def __init__(self) -> None:
        self.futures: list[tuple[str, bytes, asyncio.Future[None]]] = []
        self.changed = asyncio.Event()

    async def wait_connected(self) -> None:
        return None

    def start_publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append((topic, payload, future))
        self.changed.set()
        return future

    def outstanding(self) -> int:
        return sum(1 for _, _, f in self.futures if not f.done())


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not condition():  # noqa: ASYNC110 - a predicate over fake state
            await asyncio.sleep(0)


async def test_window_caps_unacked_publishes_and_marks_follow_pubacks_in_order(
    running: Start,
) -> None:
    outbox = MemoryOutbox()
    for n in range(25):
        outbox.add("t", bytes([n]))
    publisher = FakePublisher()
    forwarder = UpstreamForwarder(connection=publisher, outbox=outbox, window=8)
    running(forwarder.run)
    await _until(lambda: len(publisher.futures) == 8)
    await asyncio.sleep(0.01)
    assert len(publisher.futures) == 8  # the window is full: no 9th PUBLISH
    assert outbox.sent == []  # nothing marked before its PUBACK
    # PUBACK for #2 before #1: nothing can be marked yet (marks are in order)
    publisher.futures[1][2].set_result(None)
    await asyncio.sleep(0.01)
    assert outbox.sent == []
    publisher.futures[0][2].set_result(None)
    await _until(lambda: outbox.sent == [1, 2])
    await _until(lambda: len(publisher.futures) == 10)  # two slots freed, two more sent
    assert publisher.outstanding() == 8
    for _, _, future in publisher.futures:
        if not future.done():
            future.set_result(None)
    while len(outbox.sent) < 25:
        await _until(lambda: publisher.outstanding() > 0 or len(outbox.sent) == 25)
        for _, _, future in publisher.futures:
            if not future.done():
                future.set_result(None)
        await asyncio.sleep(0)
    assert outbox.sent == list(range(1, 26))
    assert [p for _, p, _ in publisher.futures] == [bytes([n]) for n in range(25)]
    assert forwarder.max_inflight_seen == 8


async def test_a_lost_connection_resends_from_the_first_unmarked_item(running: Start) -> None:
    from device_adapters.mqtt.errors import NotConnected

    outbox = MemoryOutbox()
    for n in range(3):
        outbox.add("t", bytes([n]))
    publisher = FakePublisher()
    forwarder = UpstreamForwarder(connection=publisher, outbox=outbox, window=8)
    running(forwarder.run)
    await _until(lambda: len(publisher.futures) == 3)
    publisher.futures[0][2].set_result(None)
    publisher.futures[1][2].set_exception(NotConnected("b:1", "gone"))
    publisher.futures[2][2].set_exception(NotConnected("b:1", "gone"))
    await _until(lambda: len(publisher.futures) == 5)
    # item 1 was acked and marked; items 2 and 3 are sent again, in order
    assert outbox.sent == [1]
    assert [p for _, p, _ in publisher.futures[3:]] == [bytes([1]), bytes([2])]
