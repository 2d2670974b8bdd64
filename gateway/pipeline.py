"""The running hub: bounded queues between stages, one TaskGroup, clean shutdown.

    sources --ingest queue--> validate + store (one SQLite transaction per chunk)
            --> seal stage (batch every N readings or T seconds, sign, checkpoint)
            --> alert stage (per-patient engines) --> fan-out to dashboard viewers

Overflow policy: the ingest and alert queues block their producers (back-pressure
towards sources: an MQTT message stays unacknowledged, a BLE transfer waits); only the
per-viewer fan-out queues drop, oldest first. All SQLite work runs on one dedicated
writer thread so commits never block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

from gateway.batcher import Batcher, BatchPolicy
from gateway.clock import Clock
from gateway.clockjump import ClockJump
from gateway.clocklag import ClockLagJudge
from gateway.errors import StorageError
from gateway.fanout import FanOut
from gateway.model import Alert, Device, DeviceEvent, Reading
from gateway.protocols import (
    AlertChanged,
    BatchSealed,
    DeadLetter,
    DurableCallback,
    IngestOutcome,
    Origin,
    ReadingsStored,
    RejectReason,
)
from gateway.sealing import Sealer, SealOutcome
from gateway.settings import Settings
from gateway.storage.contract import HubStorage, Message, WriteResult
from gateway.storage.opening import open_storage
from gateway.supervision import Backoff, NamedSource, SourceState, SourceStatus, supervise
from gateway.telemetry import Telemetry
from gateway.validation import ValidationRules, validate

log = logging.getLogger("glucohub.pipeline")

CHECKPOINT_EVERY_S = 5.0  # under a sealing backlog, sign a checkpoint at least this often
SEAL_BATCHES_PER_JOB = 8
ALERT_TICK_S = 15.0  # stale data, escalation and snooze expiry are checked this often

P = ParamSpec("P")
Source = Callable[[], Coroutine[Any, Any, None]]  # a long-lived producer task
T = TypeVar("T")


@dataclass(slots=True, kw_only=True)
class _Envelope:
    origin: Origin
    readings: Sequence[Reading]
    events: Sequence[DeviceEvent]
    dead_letters: Sequence[DeadLetter]
    on_durable: DurableCallback | None
    received_at: datetime  # the hub's clock as the input arrived: stored with its readings


@dataclass(frozen=True, slots=True, kw_only=True)
class _Written:
    result: WriteResult
    outcomes: list[IngestOutcome]
    rejected_reasons: list[str]
    clock_events: tuple[ClockJump, ...] = ()  # the hub's clock found behind (in the ledger)


class AlertStage(Protocol):
    """What the pipeline asks of the alert engine (`gateway.alerting` implements it):
    both persist the transitions they return before returning."""

    async def on_stored(
        self, readings: Sequence[Reading], events: Sequence[DeviceEvent]
    ) -> list[Alert]: ...

    async def tick(self) -> list[Alert]: ...

    async def flush(self) -> None:
        """Persist any state not yet saved (called at shutdown)."""
        ...


@runtime_checkable
class PersonChanges(Protocol):
    """An alert stage whose transitions can also come from people (acknowledge, snooze)."""

    on_change: Callable[[list[Alert], int], None] | None


class NoAlerts:
    async def on_stored(
        self, readings: Sequence[Reading], events: Sequence[DeviceEvent]
    ) -> list[Alert]:
        return []

    async def tick(self) -> list[Alert]:
        return []

    async def flush(self) -> None:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stored:
    readings: tuple[Reading, ...]
    events: tuple[DeviceEvent, ...]


class Writer:
    """The single thread that owns the writable storage (and the `Sealer`)."""

    def __init__(self, executor: ThreadPoolExecutor, store: HubStorage) -> None:
        self._executor = executor
        self.store = store

    @classmethod
    async def open(cls, data_dir: Path, url: str = "") -> Writer:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="glucohub-writer")
        loop = asyncio.get_running_loop()
        store = await loop.run_in_executor(executor, lambda: open_storage(data_dir, url))
        return cls(executor, store)

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def close(self) -> None:
        await self.run(self.store.close)
        self._executor.shutdown(wait=False)


class Hub:
    """Implements `ReadingSink`; owns the ingest, seal and alert stages."""

    def __init__(
        self,
        *,
        settings: Settings,
        writer: Writer,
        sealer: Sealer,
        clock: Clock,
        telemetry: Telemetry,
        fanout: FanOut,
        alerts: AlertStage | None = None,
        source_backoff: Backoff | None = None,
        validation_clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self._writer = writer
        self._sealer = sealer
        self._clock = clock
        # What "the future" is measured against (readings too far ahead are refused); the
        # runtime gives a clock that keeps the timeline from before a backward step.
        self._validation_clock = validation_clock or clock
        self.telemetry = telemetry
        self.fanout = fanout
        self._alerts: AlertStage = alerts or NoAlerts()
        if isinstance(alerts, PersonChanges):
            alerts.on_change = self._alerts_changed
        size = settings.pipeline.queue_size
        self._ingest: asyncio.Queue[_Envelope | None] = asyncio.Queue(size)
        self._alert_queue: asyncio.Queue[_Stored | None] = asyncio.Queue(max(1, size // 100))
        self._new_readings = asyncio.Event()
        self._batcher = Batcher(
            BatchPolicy(
                max_readings=settings.ledger.batch_max_readings,
                max_seconds=settings.ledger.batch_max_seconds,
            )
        )
        self._rules = ValidationRules(
            max_future_skew=timedelta(seconds=settings.pipeline.max_future_skew_s),
            max_past_age=timedelta(days=settings.pipeline.max_past_age_days),
        )
        # Readings ahead of the hub's clock: accepted when it is the clock that is behind.
        self._clock_lag = ClockLagJudge(self._rules.max_future_skew)
        # The kernel's view of the clock (None: unknown); the runtime keeps it current.
        self.clock_synchronized: bool | None = None
        self._stopping = False
        self._ingest_finished = False
        self._unsigned_batches = False
        self._started = time.monotonic()
        # Probes for /healthz (e.g. the MQTT connection state), read at request time.
        self.status_probes: dict[str, Callable[[], object]] = {}
        # Each source's supervision state (running, restarting after a failure, finished).
        self.source_status: dict[str, SourceStatus] = {}
        self._source_backoff = source_backoff or Backoff()
        # Set whenever a batch or checkpoint lands in the outbox (the upstream forwarder waits).
        self.outbox_added = asyncio.Event()
        # Set once the stages and sources run: the hub accepts input (systemd's READY=1).
        self.started = asyncio.Event()
        # Cleared while storing is paused (`pause_ingest`: the disk is nearly full).
        self._accepting = asyncio.Event()
        self._accepting.set()
        self._paused_reason = ""
        self._discard_queued = False
        telemetry.gauge("glucohub_ingest_queue_depth", lambda: self._ingest.qsize())
        telemetry.gauge("glucohub_unsealed_readings", lambda: self._batcher.pending)

    # -- ReadingSink ----------------------------------------------------------------------

    async def enqueue(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
        on_durable: DurableCallback | None = None,
    ) -> None:
        if self._stopping:
            raise RuntimeError("the hub is shutting down; nothing more is accepted")
        await self._ingest.put(
            _Envelope(
                origin=origin,
                readings=readings,
                events=events,
                dead_letters=dead_letters,
                on_durable=on_durable,
                received_at=self._clock.now(),
            )
        )

    async def submit(
        self,
        *,
        origin: Origin,
        readings: Sequence[Reading] = (),
        events: Sequence[DeviceEvent] = (),
        dead_letters: Sequence[DeadLetter] = (),
    ) -> IngestOutcome:
        done: asyncio.Future[IngestOutcome] = asyncio.get_running_loop().create_future()
        await self.enqueue(
            origin=origin,
            readings=readings,
            events=events,
            dead_letters=dead_letters,
            on_durable=functools.partial(_resolve, done),
        )
        return await done

    def ledger_events_written(self, count: int) -> None:
        """`count` ledger events were committed outside the ingest path (a consent change
        from the dashboard, an acknowledgement): seal them within batch_max_seconds rather
        than with the next reading."""
        self._batcher.add(count, self._clock.monotonic())
        self._new_readings.set()

    def pause_ingest(self, reason: str) -> None:
        """Store nothing more until `resume_ingest`: queued inputs wait unacknowledged (an
        MQTT broker keeps them), producers wait once the queue is full."""
        self._paused_reason = reason
        self._accepting.clear()

    def resume_ingest(self) -> None:
        self._paused_reason = ""
        self._accepting.set()

    # -- status -------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        sources: dict[str, object] = {name: probe() for name, probe in self.status_probes.items()}
        for name, supervised in self.source_status.items():
            probed = sources.get(name)
            sources[name] = {
                **(probed if isinstance(probed, dict) else {}),
                "task": supervised.as_dict(),
            }
        failing = any(s.state is SourceState.RESTARTING for s in self.source_status.values())
        quarantined = self._sealer.quarantined
        paused = not self._accepting.is_set()
        degraded = failing or quarantined > 0 or paused or self._sealer.held is not None
        return {
            "status": "stopping" if self._stopping else "degraded" if degraded else "ok",
            "uptime_s": round(time.monotonic() - self._started, 1),
            "queues": {
                "ingest": self._ingest.qsize(),
                "ingest_capacity": self._ingest.maxsize,
                "alerts": self._alert_queue.qsize(),
                "unsealed_readings": self._batcher.pending,
            },
            # Stored records that cannot be sealed: kept, logged CRITICAL, listed on /ledger.
            "ledger": {
                "tree_size": self._sealer.tree_size,
                "quarantined": quarantined,
                # After a restore, until the last published checkpoint is known: why not.
                **({"sealing_held": self._sealer.held} if self._sealer.held else {}),
            },
            "sources": sources,
            "storage": {"accepting": not paused, "paused_reason": self._paused_reason},
        }

    def prometheus_text(self) -> str:
        return self.telemetry.render()

    # -- stages -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event, sources: Sequence[Source | NamedSource]) -> None:
        """Run until `stop` is set, then stop sources, drain, seal everything and return.

        Every source runs supervised: one that fails is logged and restarted with backoff
        (`gateway.supervision`), and the hub goes on."""
        store = self._writer.store
        unsealed = await self._writer.run(
            lambda: store.count_unsealed() + store.count_unsealed_events()
        )
        self._batcher.add(unsealed, self._clock.monotonic())
        if unsealed:
            log.info("resuming: %d stored readings and ledger events await sealing", unsealed)
            self._new_readings.set()
        async with asyncio.TaskGroup() as core:
            core.create_task(self._ingest_loop(), name="ingest")
            core.create_task(self._seal_loop(), name="seal")
            core.create_task(self._alert_loop(), name="alerts")
            try:
                async with asyncio.TaskGroup() as edge:
                    for index, source in enumerate(sources):
                        named = (
                            source
                            if isinstance(source, NamedSource)
                            else NamedSource(f"source-{index}", source)
                        )
                        status = self.source_status.setdefault(named.name, SourceStatus())
                        edge.create_task(
                            supervise(named.name, named.run, status, backoff=self._source_backoff),
                            name=named.name,
                        )
                    edge.create_task(_raise_when_set(stop), name="stop-watch")
                    self.started.set()
            except* _Stop:
                pass
            self._stopping = True
            if not self._accepting.is_set():
                # Nothing may be stored: what is queued stays unacknowledged (the broker keeps
                # it for the next start).
                log.warning(
                    "stopping while storing is paused (%s): %d queued inputs left unstored",
                    self._paused_reason,
                    self._ingest.qsize(),
                )
                self._discard_queued = True
                self._accepting.set()
            else:
                log.info(
                    "stopping: sources stopped, draining %d queued inputs", self._ingest.qsize()
                )
            await self._ingest.put(None)  # the ingest loop passes the sentinel on
        self.fanout.close()
        log.info(
            "stopped cleanly: %d readings sealed in %d-leaf log",
            self.telemetry.value("glucohub_ledger_readings_sealed_total"),
            self._sealer.tree_size,
        )

    async def _ingest_loop(self) -> None:
        limit = self.settings.storage.commit_max_readings
        delay = self.settings.storage.commit_max_delay_ms / 1000.0
        while True:
            first = await self._ingest.get()
            if first is None:
                break
            await self._accepting.wait()  # storing paused: `first` waits, unacknowledged
            if self._discard_queued:
                continue
            chunk = [first]
            count = len(first.readings)
            deadline = self._clock.monotonic() + delay
            finished = False
            while count < limit:
                try:
                    item = self._ingest.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - self._clock.monotonic()
                    if remaining <= 0:
                        break  # group commit: take what is queued, more arrives meanwhile
                    try:
                        item = await asyncio.wait_for(self._ingest.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    finished = True
                    break
                chunk.append(item)
                count += len(item.readings)
            await self._process(chunk)
            if finished:
                break
        self._ingest_finished = True
        self._new_readings.set()
        await self._alert_queue.put(None)

    def _validate_and_write(self, chunk: list[_Envelope]) -> _Written:
        """Validate and store a chunk in one transaction. Each envelope's readings are all
        or nothing (one bad reading makes the whole message one dead letter). An envelope
        that makes validation or storage raise becomes an `unstorable` dead letter: no
        single input may stop the writer."""
        now = self._clock.now()
        valid_now = self._validation_clock.now()
        try:
            return self._write_chunk(chunk, now, valid_now)
        except StorageError:
            raise  # the database itself (disk full, I/O): nothing to blame on one input
        except Exception:
            log.exception("a chunk of %d inputs failed; storing them one by one", len(chunk))
        parts: list[_Written] = []
        for envelope in chunk:
            try:
                parts.append(self._write_chunk([envelope], now, valid_now))
            except StorageError:
                raise
            except Exception as exc:
                log.exception("unstorable input from %s", envelope.origin.topic or "?")
                parts.append(self._write_unstorable(envelope, now, exc))
        return _Written(
            result=WriteResult(
                stored=tuple(r for p in parts for r in p.result.stored),
                duplicates=sum(p.result.duplicates for p in parts),
                dead_letters=sum(p.result.dead_letters for p in parts),
                events=sum(p.result.events for p in parts),
            ),
            outcomes=[o for p in parts for o in p.outcomes],
            rejected_reasons=[r for p in parts for r in p.rejected_reasons],
            clock_events=tuple(e for p in parts for e in p.clock_events),
        )

    def _write_unstorable(self, envelope: _Envelope, now: datetime, exc: Exception) -> _Written:
        letter = _letter(
            envelope, None, now, RejectReason.UNSTORABLE, f"{type(exc).__name__}: {exc}"
        )
        result = self._writer.store.write_messages([], dead_letters=[letter], now=now)
        return _Written(
            result=result,
            outcomes=[IngestOutcome(rejected=len(envelope.readings) or 1)],
            rejected_reasons=[RejectReason.UNSTORABLE.value],
        )

    def _write_chunk(self, chunk: list[_Envelope], now: datetime, valid_now: datetime) -> _Written:
        store = self._writer.store
        devices = store.device_map()
        messages: list[Message] = []
        events: list[DeviceEvent] = []
        dead: list[DeadLetter] = []
        refused_here: list[bool] = []
        clock_events: list[ClockJump] = []
        mono = self._clock.monotonic()
        ahead = valid_now + self._rules.max_future_skew  # later than this is in the future
        stored_newest: dict[str, datetime] = {}  # device -> its newest reading stored here
        for envelope in chunk:
            letter: DeadLetter | None = None
            readings = envelope.readings
            newest = (
                readings[0]
                if len(readings) == 1
                else max(readings, key=lambda r: r.time, default=None)
            )
            judged_now, note = valid_now, ""
            if (
                newest is not None
                and newest.time > ahead
                and _registered(newest, devices)  # a stranger's clock is no evidence
            ):
                self._tell_stored(stored_newest, mono)  # the judge weighs what is stored
                lag = self._clock_lag.judge(
                    newest.device_id,
                    newest.time,
                    wall=valid_now,
                    mono=mono,
                    synchronized=self.clock_synchronized,
                )
                judged_now, note = lag.now, lag.detail
                if lag.event is not None:
                    store.add_ledger_event("", lag.event.ledger_event())  # hub-wide
                    clock_events.append(lag.event)
            for position, reading in enumerate(envelope.readings):
                device = devices.get(reading.device_id)
                verdict = validate(reading, device, now=judged_now, rules=self._rules)
                if verdict is not None:
                    detail = f"{verdict.detail} ({note})" if note else verdict.detail
                    letter = _letter(envelope, position, now, verdict.reason, detail)
                    break
            if letter is None and newest is not None:
                held = stored_newest.get(newest.device_id)
                if held is None or newest.time > held:
                    stored_newest[newest.device_id] = newest.time
            if letter is not None:
                dead.append(letter)
                messages.append(Message(origin=envelope.origin, readings=()))
            else:
                messages.append(
                    Message(
                        origin=envelope.origin,
                        readings=envelope.readings,
                        received_at=envelope.received_at,
                    )
                )
            refused_here.append(letter is not None)
            events.extend(envelope.events)
            dead.extend(envelope.dead_letters)
        self._tell_stored(stored_newest, mono)
        result = store.write_messages(messages, events, dead, now=now)
        # Without duplicates every reading handed to the store and not refused was stored
        # (the usual chunk): no need to look each one up.
        stored_ids = {id(reading) for reading in result.stored} if result.duplicates else None
        outcomes: list[IngestOutcome] = []
        same: dict[tuple[int, int], IngestOutcome] = {}  # (accepted, rejected) -> outcome
        for index, envelope in enumerate(chunk):
            total = len(envelope.readings)
            if refused_here[index] or index in result.refused:
                outcomes.append(IngestOutcome(rejected=total + len(envelope.dead_letters)))
                continue
            if stored_ids is None:
                key = (total, len(envelope.dead_letters))
                outcome = same.get(key)
                if outcome is None:
                    outcome = same[key] = IngestOutcome(accepted=total, rejected=key[1])
                outcomes.append(outcome)
                continue
            new = sum(1 for reading in envelope.readings if id(reading) in stored_ids)
            outcomes.append(
                IngestOutcome(
                    accepted=new, duplicates=total - new, rejected=len(envelope.dead_letters)
                )
            )
        reasons = [d.reason.value for d in dead] + [d.reason.value for d in result.refused.values()]
        return _Written(
            result=result,
            outcomes=outcomes,
            rejected_reasons=reasons,
            clock_events=tuple(clock_events),
        )

    def _tell_stored(self, newest: dict[str, datetime], mono: float) -> None:
        """Tell the clock-lag judge each device's newest reading stored (and forget them).
        All at one `mono`: once per device with its newest is the same as once per input."""
        for device_id, at in newest.items():
            self._clock_lag.stored(device_id, at, mono)
        newest.clear()

    async def _process(self, chunk: list[_Envelope]) -> None:
        written = await self._writer.run(self._validate_and_write, chunk)
        result = written.result
        for envelope, outcome in zip(chunk, written.outcomes, strict=True):
            if envelope.on_durable is not None:
                envelope.on_durable(outcome)
        t = self.telemetry
        t.inc("glucohub_readings_ingested_total", len(result.stored))
        t.inc("glucohub_readings_duplicate_total", result.duplicates)
        t.inc("glucohub_device_events_total", result.events)
        for reason in written.rejected_reasons:
            t.inc("glucohub_readings_rejected_total", reason=reason)
        for letter_reason in set(written.rejected_reasons):
            log.warning("rejected input: %s", letter_reason)
        for jump in written.clock_events:
            log.warning(
                "the hub's clock is %.0f s behind its devices' (%s): their readings are stored"
                " with their own times; recorded in the ledger",
                -jump.seconds,
                jump.evidence,
            )
        if written.clock_events:
            self.ledger_events_written(len(written.clock_events))
        if result.stored:
            self._batcher.add(len(result.stored), self._clock.monotonic())
            self._new_readings.set()
            self.fanout.publish(ReadingsStored(readings=result.stored))
        events = tuple(e for envelope in chunk for e in envelope.events)
        if result.stored or events:
            await self._alert_queue.put(_Stored(readings=result.stored, events=events))

    async def _seal_loop(self) -> None:
        limit = self._batcher.policy.max_readings
        last_signed = self._clock.monotonic()
        while True:
            # Cleared before looking, so readings stored during any await below wake us.
            self._new_readings.clear()
            now = self._clock.monotonic()
            if self._batcher.due(now):
                if not await self._seal_due(limit):
                    self._batcher.sealed(self._batcher.pending, now)  # counted ones were dupes
                if now - last_signed >= CHECKPOINT_EVERY_S:  # a long backlog: sign meanwhile
                    await self._sign_checkpoint()
                    last_signed = now
                continue
            await self._sign_checkpoint()  # the backlog is sealed: one checkpoint for it
            last_signed = now
            if self._ingest_finished:
                await self._seal_all(limit)
                await self._sign_checkpoint()
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._new_readings.wait(),
                    timeout=self._batcher.seconds_until_due(self._clock.monotonic()),
                )

    async def _seal_due(self, limit: int) -> bool:
        """Seal what is due: the full batches waiting, up to SEAL_BATCHES_PER_JOB in one
        job on the writer thread (so sealing keeps up with ingest, and a backlog after a
        restart still lets ingest chunks in between), or the one partial batch whose time
        is up. False when nothing was left to seal."""
        batches = min(SEAL_BATCHES_PER_JOB, max(1, self._batcher.pending // limit))
        outcomes = await self._writer.run(self._seal_batches, limit, batches)
        for outcome in outcomes:
            self._batcher.sealed(outcome.records, self._clock.monotonic())
            self.telemetry.inc("glucohub_ledger_batches_total")
            self.telemetry.inc("glucohub_ledger_readings_sealed_total", outcome.batch.reading_count)
            self.fanout.publish(
                BatchSealed(
                    batch=outcome.batch, tree_size=outcome.tree_size, root_hash=outcome.root_hash
                )
            )
        if outcomes:
            self._unsigned_batches = True
            self.outbox_added.set()
        return bool(outcomes)

    def _seal_batches(self, limit: int, batches: int) -> list[SealOutcome]:
        outcomes: list[SealOutcome] = []
        for _ in range(batches):
            outcome = self._sealer.seal(limit, self._clock.now(), sign=False)
            if outcome is None:
                break
            outcomes.append(outcome)
        return outcomes

    async def _sign_checkpoint(self) -> None:
        if self._unsigned_batches:
            self._unsigned_batches = False
            await self._writer.run(self._sealer.sign_checkpoint, self._clock.now())
            self.outbox_added.set()

    async def _seal_all(self, limit: int) -> None:
        while await self._seal_due(limit):
            pass
        self._batcher.sealed(self._batcher.pending, self._clock.monotonic())

    async def _alert_loop(self) -> None:
        next_tick = self._clock.monotonic() + ALERT_TICK_S
        while True:
            try:
                timeout = max(0.0, next_tick - self._clock.monotonic())
                item = await asyncio.wait_for(self._alert_queue.get(), timeout=timeout)
            except TimeoutError:
                self._publish_alerts(await self._alerts.tick())
                next_tick = self._clock.monotonic() + ALERT_TICK_S
                continue
            if item is None:
                await self._alerts.flush()
                return
            self._publish_alerts(await self._alerts.on_stored(item.readings, item.events))

    def _alerts_changed(self, alerts: list[Alert], ledger_events: int) -> None:
        """Alert transitions, the engine's or a person's (acknowledge, snooze): stream them, and
        seal their ledger events within batch_max_seconds rather than with the next reading."""
        for alert in alerts:
            self.fanout.publish(AlertChanged(alert=alert))
        if ledger_events:
            self.ledger_events_written(ledger_events)

    def _publish_alerts(self, alerts: list[Alert]) -> None:
        # Each transition is a ledger event, sealed like readings.
        self._alerts_changed(alerts, len(alerts))


def _letter(
    envelope: _Envelope, position: int | None, now: datetime, reason: RejectReason, detail: str
) -> DeadLetter:
    """The one dead letter of a refused envelope; `position` names the offending reading."""
    readings = envelope.readings
    device_id = readings[position or 0].device_id if readings else envelope.origin.device_id
    if position is not None and len(readings) > 1:
        detail += f" (reading {position})"
    origin = envelope.origin
    return DeadLetter(
        received_at=now,
        origin=Origin(
            source=origin.source, topic=origin.topic, raw=origin.raw, device_id=device_id
        ),
        reason=reason,
        detail=detail,
    )


def _registered(reading: Reading, devices: Mapping[str, Device]) -> bool:
    device = devices.get(reading.device_id)
    return device is not None and device.active and device.patient_id == reading.patient_id


def _resolve(future: asyncio.Future[IngestOutcome], outcome: IngestOutcome) -> None:
    if not future.done():
        future.set_result(outcome)


class _Stop(Exception):
    """Raised inside the sources' task group to cancel every source at once."""


async def _raise_when_set(stop: asyncio.Event) -> None:
    await stop.wait()
    raise _Stop
