"""Inbound: MQTT messages -> decoded readings or dead letters -> the hub's `ReadingSink`.

A message is acknowledged (PUBACK) only from the sink's `on_durable` callback, i.e. after
its readings are committed or its dead letter is stored — so a hub crash at any moment
leaves the message in the broker's persistent session, to be redelivered. Redeliveries are
harmless: the hub de-duplicates on (device, seq).

Bad input never stops the consumer: `PayloadRejected` becomes a `DeadLetter` with the raw
bytes, topic, time and reason, acked once durable like any other message.

Back-pressure: at most `max_unacked` messages are between receipt and PUBACK (default: the
connection's Receive Maximum, which is also what the broker honours). `sink.enqueue` waits
for queue space; while it waits, the broker holds further messages.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from device_adapters.mqtt.acks import InOrderAcks
from device_adapters.mqtt.client import InboundMessage
from device_adapters.mqtt.errors import PayloadRejected
from device_adapters.mqtt.payload import decode_readings
from device_adapters.mqtt.topics import parse_readings_topic
from gateway.clock import Clock
from gateway.model import Reading, Source
from gateway.protocols import DeadLetter, IngestOutcome, Origin, ReadingSink

log = logging.getLogger(__name__)


class Subscriber(Protocol):
    """What the consumer needs of a connection (`client.MqttConnection` is one)."""

    async def receive(self) -> InboundMessage: ...

    def ack(self, message: InboundMessage) -> bool: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsumerStats:
    received: int
    accepted: int
    duplicates: int
    dead_lettered: int
    acked: int
    ack_skipped: int  # durable after its connection dropped: the broker redelivers it
    unacked: int


class MqttConsumer:
    def __init__(
        self,
        *,
        connection: Subscriber,
        sink: ReadingSink,
        clock: Clock,
        max_unacked: int = 1000,
    ) -> None:
        if max_unacked <= 0:
            raise ValueError("max_unacked must be > 0")
        self._connection = connection
        self._sink = sink
        self._clock = clock
        self._slots = asyncio.Semaphore(max_unacked)
        self._orders: dict[int, InOrderAcks[InboundMessage]] = {}
        self._unacked = 0
        self._received = self._accepted = self._duplicates = 0
        self._dead = self._acked = self._ack_skipped = 0

    def stats(self) -> ConsumerStats:
        return ConsumerStats(
            received=self._received,
            accepted=self._accepted,
            duplicates=self._duplicates,
            dead_lettered=self._dead,
            acked=self._acked,
            ack_skipped=self._ack_skipped,
            unacked=self._unacked,
        )

    async def run(self) -> None:
        """Consume until cancelled. Exceptions from the sink propagate (the hub is
        shutting down or broken); unacked messages then stay with the broker."""
        while True:
            message = await self._connection.receive()
            await self._slots.acquire()
            try:
                await self._handle(message)
            except BaseException:
                self._slots.release()
                raise

    async def _handle(self, message: InboundMessage) -> None:
        self._received += 1
        received_at = self._clock.now()
        try:
            device_id: str | None = parse_readings_topic(message.topic).device_id
        except PayloadRejected:
            device_id = None
        origin = Origin(
            source=Source.MQTT, topic=message.topic, raw=message.payload, device_id=device_id
        )
        readings: tuple[Reading, ...] = ()
        dead: tuple[DeadLetter, ...] = ()
        try:
            readings = decode_readings(
                message.topic, message.payload, received_at=received_at
            ).readings
        except PayloadRejected as exc:
            where = f" (reading {exc.index})" if exc.index is not None else ""
            dead = (
                DeadLetter(
                    received_at=received_at,
                    origin=origin,
                    reason=exc.reason,
                    detail=exc.detail + where,
                ),
            )
            log.info("MQTT %s dead-lettered: %s", message.topic, exc)
        order = self._orders.get(message.generation)
        if order is None:
            # A new connection: acks owed on older ones can never be sent (the broker
            # redelivers those messages), so stop waiting for them.
            for generation in [g for g in self._orders if g < message.generation]:
                del self._orders[generation]
            order = self._orders[message.generation] = InOrderAcks()
        order.arrived(message.mid, message)
        self._unacked += 1

        def on_durable(outcome: IngestOutcome) -> None:
            self._durable(message, outcome, bool(dead))

        await self._sink.enqueue(
            origin=origin, readings=readings, dead_letters=dead, on_durable=on_durable
        )

    def _durable(self, message: InboundMessage, outcome: IngestOutcome, dead: bool) -> None:
        self._slots.release()
        self._unacked -= 1
        self._accepted += outcome.accepted
        self._duplicates += outcome.duplicates
        self._dead += 1 if dead else 0
        order = self._orders.get(message.generation)
        if order is None:
            self._ack_skipped += 1
            return
        for ready in order.completed(message.mid):
            if self._connection.ack(ready):
                self._acked += 1
            else:
                self._ack_skipped += 1
