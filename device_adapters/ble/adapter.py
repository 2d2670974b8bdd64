"""The async runner: drives a sans-I/O session over a GattTransport and delivers to a ReadingSink.

Notifications arrive by callback; they go into a bounded queue (policy: on overflow the link is
treated as failed — we disconnect and the next connect resumes from the last stored record, so
a stored-record transfer loses nothing). Each notification is submitted to the sink and awaited
(durable) before the next is processed, so "last stored" is always what was delivered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Protocol

from device_adapters.ble.errors import AuthenticationRequired, BleError
from device_adapters.ble.mapping import Who
from device_adapters.ble.session import (
    CgmSession,
    HeartRateSession,
    MeterSession,
    Read,
    Resume,
    Session,
    SessionOutput,
    Subscribe,
    Write,
)
from device_adapters.ble.transport import GattTransport
from device_adapters.ble.uuids import Char
from gateway.clock import Clock, SystemClock
from gateway.model import Device, DeviceEvent, DeviceEventKind, DeviceKind, Source
from gateway.protocols import DeadLetter, Origin, ReadingSink

log = logging.getLogger(__name__)


class ResumeSource(Protocol):
    """What the store already holds for a device (the resume point after a reconnect)."""

    async def last_seq(self, device_id: str) -> int | None: ...

    async def last_time(self, device_id: str) -> datetime | None: ...


class NoResume:
    """Nothing stored yet: ask devices for everything."""

    async def last_seq(self, device_id: str) -> int | None:
        return None

    async def last_time(self, device_id: str) -> datetime | None:
        return None


@dataclass(slots=True)
class AdapterStats:
    connects: int = 0
    link_drops: int = 0
    failed_attempts: int = 0
    notifications: int = 0
    readings: int = 0
    events: int = 0
    dead_letters: int = 0
    silences: int = 0
    overflows: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Notification:
    uuid: str
    data: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class _LinkDown:
    reason: str


_Item = _Notification | _LinkDown


def _name(uuid: str) -> str:
    try:
        return Char(uuid).name.lower()
    except ValueError:
        return uuid


def make_session(device: Device, *, tz: tzinfo = UTC) -> Session:
    who = Who(patient_id=device.patient_id, device_id=device.device_id, source=Source.BLE)
    if device.kind is DeviceKind.METER:
        return MeterSession(who, tz=tz)
    if device.kind is DeviceKind.CGM:
        return CgmSession(who)
    if device.kind is DeviceKind.HEART_RATE:
        return HeartRateSession(who)
    raise BleError(f"{device.device_id}: no BLE session for device kind {device.kind}")


class BleAdapter:
    """One BLE device: connect, (bond), set up, transfer missed records, stream, reconnect.

    `silence_timeout_s`: if no notification arrives for that long while connected, a
    DISCONNECTED DeviceEvent is delivered, `on_silence(device_id)` is called and the link is
    recycled. `reconnect_delays_s` is the backoff between attempts (last value repeats).
    """

    def __init__(
        self,
        *,
        device: Device,
        transport: GattTransport,
        sink: ReadingSink,
        resume: ResumeSource | None = None,
        clock: Clock | None = None,
        bond: bool | None = None,
        tz: tzinfo = UTC,
        silence_timeout_s: float | None = None,
        on_silence: Callable[[str], None] | None = None,
        reconnect_delays_s: Sequence[float] = (1.0, 2.0, 5.0, 10.0, 30.0),
        queue_size: int = 4096,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.device = device
        self.transport = transport
        self.sink = sink
        self.resume = resume or NoResume()
        self.clock = clock or SystemClock()
        # GLS: meters commonly require bonding before they send records.
        self.bond = device.kind is DeviceKind.METER if bond is None else bond
        self.silence_timeout_s = silence_timeout_s
        self.on_silence = on_silence
        self.reconnect_delays_s = tuple(reconnect_delays_s) or (1.0,)
        self.queue_size = queue_size
        self._sleep = sleep
        self.session = make_session(device, tz=tz)
        self.stats = AdapterStats()
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=queue_size)
        self._stopping = False
        self._bonded = False

    # -- callbacks from the transport (run on the event loop, never block) --

    def _on_notify(self, uuid: str, data: bytes) -> None:
        try:
            self._queue.put_nowait(_Notification(uuid, bytes(data), self.clock.now()))
        except asyncio.QueueFull:
            self.stats.overflows += 1
            self._link_down("notification queue overflow")

    def _on_disconnected(self) -> None:
        self._link_down("link lost")

    def _link_down(self, reason: str) -> None:
        # Make room so the sentinel always gets in (dropped items are re-requested on resume).
        while self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(_LinkDown(reason))

    def stop(self) -> None:
        """Ask `run` to finish after the notification in hand."""
        self._stopping = True
        self._link_down("stopped")

    # -- the loop --

    async def run(
        self, *, until_synced: bool = False, max_attempts: int | None = None
    ) -> AdapterStats:
        """Connect and serve until `stop()`; with `until_synced`, return once the stored
        records are all in (meter: RACP success indication; CGM: backfill done)."""
        attempt = 0
        while not self._stopping:
            if max_attempts is not None and attempt >= max_attempts:
                break
            attempt += 1
            try:
                synced = await self._serve_connection(until_synced)
            except BleError as exc:
                self.stats.failed_attempts += 1
                self.stats.errors.append(str(exc))
                log.warning("%s: %s", self.device.device_id, exc)
                synced = False
            if synced and until_synced:
                break
            if self._stopping:
                break
            delay = self.reconnect_delays_s[min(attempt - 1, len(self.reconnect_delays_s) - 1)]
            await self._sleep(delay)
        if self.transport.is_connected:
            await self.transport.disconnect()
        return self.stats

    async def _serve_connection(self, until_synced: bool) -> bool:
        self._queue = asyncio.Queue(maxsize=self.queue_size)
        self.transport.set_disconnected_callback(self._on_disconnected)
        await self.transport.connect()
        self.stats.connects += 1
        try:
            if self.bond and not self._bonded:
                await self.transport.pair()
                self._bonded = True
            await self._deliver_event(DeviceEventKind.CONNECTED, self.transport.address)
            await self._setup()
            if until_synced and self.session.synced:
                return True
            return await self._pump(until_synced)
        finally:
            # Streaming only ends on a link drop or silence; a sync or a failure ends here too.
            if self.transport.is_connected:
                await self.transport.disconnect()

    async def _setup(self) -> None:
        for action in self.session.connect_actions():
            await self._perform(action)
        resume = Resume(
            last_seq=await self.resume.last_seq(self.device.device_id),
            last_time=await self.resume.last_time(self.device.device_id),
        )
        for action in self.session.transfer_actions(resume):
            await self._perform(action)

    async def _perform(self, action: Read | Subscribe | Write) -> None:
        if isinstance(action, Read):
            data = await self.transport.read(action.uuid)
            await self._deliver(
                action.uuid, data, self.session.on_read(action.uuid, data, self.clock.now())
            )
        elif isinstance(action, Subscribe):
            await self.transport.start_notify(action.uuid, self._on_notify)
        else:
            try:
                await self.transport.write(action.uuid, action.data)
            except AuthenticationRequired:
                # The device wants an encrypted link: bond once, then retry.
                await self.transport.pair()
                self._bonded = True
                await self.transport.write(action.uuid, action.data)

    async def _pump(self, until_synced: bool) -> bool:
        while True:
            try:
                if self.silence_timeout_s is None:
                    item = await self._queue.get()
                else:
                    item = await asyncio.wait_for(self._queue.get(), self.silence_timeout_s)
            except TimeoutError:
                await self._silence()
                return False
            if isinstance(item, _LinkDown):
                if item.reason != "stopped":
                    self.stats.link_drops += 1
                await self._deliver("", b"", self.session.on_disconnect())
                await self._deliver_event(DeviceEventKind.DISCONNECTED, item.reason)
                return False
            self.stats.notifications += 1
            out = self.session.on_notification(item.uuid, item.data, item.received_at)
            await self._deliver(item.uuid, item.data, out)
            if until_synced and self.session.synced:
                return True

    async def _silence(self) -> None:
        self.stats.silences += 1
        detail = f"no data for {self.silence_timeout_s:g} s"
        await self._deliver_event(DeviceEventKind.DISCONNECTED, detail)
        if self.on_silence is not None:
            self.on_silence(self.device.device_id)
        await self.transport.disconnect()

    def _origin(self, uuid: str, raw: bytes) -> Origin:
        return Origin(source=Source.BLE, topic=uuid, raw=raw, device_id=self.device.device_id)

    async def _deliver(self, uuid: str, raw: bytes, out: SessionOutput) -> None:
        if out.empty:
            return
        now = self.clock.now()
        for r in out.rejected:
            log.warning(
                "%s: %s value rejected (%s): %s",
                self.device.device_id,
                _name(r.uuid),
                r.reason,
                r.detail,
            )
        dead = [
            DeadLetter(
                received_at=now,
                origin=self._origin(r.uuid, r.raw),
                reason=r.reason,
                detail=r.detail,
            )
            for r in out.rejected
        ]
        await self.sink.submit(
            origin=self._origin(uuid, raw),
            readings=out.mapped.readings,
            events=out.mapped.events,
            dead_letters=dead,
        )
        self.stats.readings += len(out.mapped.readings)
        self.stats.events += len(out.mapped.events)
        self.stats.dead_letters += len(dead)

    async def _deliver_event(self, kind: DeviceEventKind, detail: str) -> None:
        event = DeviceEvent(
            patient_id=self.device.patient_id,
            device_id=self.device.device_id,
            kind=kind,
            time=self.clock.now(),
            detail=detail,
        )
        await self.sink.submit(origin=self._origin("", b""), events=(event,))
        self.stats.events += 1
