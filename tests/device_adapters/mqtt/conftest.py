"""Fixtures for the MQTT adapter: a real Mosquitto per test and helpers to run connections."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from device_adapters.mqtt.backoff import Backoff
from device_adapters.mqtt.client import BrokerConfig, MqttConnection
from device_adapters.mqtt.errors import NotConnected
from gateway.model import DeviceEvent, Reading
from gateway.protocols import DeadLetter, DurableCallback, IngestOutcome, Origin
from tests.support.mosquitto import Mosquitto

FAST = Backoff(initial_s=0.05, max_s=0.3)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.fixture
def patient() -> str:
    """A unique patient id, so each test has its own topics."""
    return f"p{uuid.uuid4().hex[:10]}"


def config_for(broker: Mosquitto, client_id: str, **changes: object) -> BrokerConfig:
    base: dict[str, object] = {
        "host": "127.0.0.1",
        "port": broker.port,
        "client_id": client_id,
        "backoff": FAST,
        "connect_timeout_s": 5.0,
    }
    base.update(changes)
    return BrokerConfig(**base)  # type: ignore[arg-type]


@dataclass
class Delivery:
    origin: Origin
    readings: tuple[Reading, ...]
    dead_letters: tuple[DeadLetter, ...]
    on_durable: DurableCallback | None


@dataclass
class RecordingSink:
    """An in-memory ReadingSink. `durable=True` commits at once (on the next loop turn,
    as the hub would); `durable=False` never does, like a hub that dies before commit."""

    durable: bool = True
    deliveries: list[Delivery] = field(default_factory=list)
    seen: set[tuple[str, int | None]] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def enqueue(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        self.deliveries.append(Delivery(origin, tuple(readings), tuple(dead_letters), on_durable))
        fresh = 0
        for reading in readings:
            key = (reading.device_id, reading.seq)
            if key not in self.seen:
                self.seen.add(key)
                fresh += 1
        outcome = IngestOutcome(
            accepted=fresh, duplicates=len(readings) - fresh, rejected=len(dead_letters)
        )
        if self.durable and on_durable is not None:
            asyncio.get_running_loop().call_soon(on_durable, outcome)
        self.arrived.set()

    async def submit(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> IngestOutcome:  # pragma: no cover - the consumer uses enqueue
        raise NotImplementedError

    @property
    def readings(self) -> list[Reading]:
        return [r for d in self.deliveries for r in d.readings]

    @property
    def dead_letters(self) -> list[DeadLetter]:
        return [x for d in self.deliveries for x in d.dead_letters]

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 20.0) -> None:
        """Wait until `condition()` holds (a generous guard, not a timed assertion)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self.arrived.clear()
                # acks follow deliveries without an event of their own: poll as well
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.arrived.wait(), 0.05)


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Callable[[], Awaitable[None]]], asyncio.Task[None]]]:
    """Start long-lived coroutines as tasks; all are cancelled and awaited at the end."""
    tasks: list[asyncio.Task[None]] = []

    def start(factory: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        async def wrapper() -> None:
            await factory()

        task = asyncio.create_task(wrapper())
        tasks.append(task)
        return task

    yield start
    for task in reversed(tasks):
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def publisher(
    broker: Mosquitto, start: Callable[[Callable[[], Awaitable[None]]], asyncio.Task[None]]
) -> MqttConnection:
    connection = MqttConnection(config_for(broker, f"pub-{uuid.uuid4().hex[:8]}"))
    start(connection.run)
    async with asyncio.timeout(10):
        await connection.wait_connected()
    return connection


async def publish_reliably(connection: MqttConnection, topic: str, payload: bytes) -> None:
    """Publish QoS 1 until a PUBACK arrives, riding out reconnects (as a device would)."""
    while True:
        await connection.wait_connected()
        try:
            await connection.publish(topic, payload)
            return
        except NotConnected:
            await asyncio.sleep(0.01)
