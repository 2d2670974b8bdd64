"""The clinic worker (`glucohub clinic`) and the clinic admin commands (`glucohub hubs`).

A worker is stateless: the archive is PostgreSQL and the work queue is the broker's shared
subscription. It takes the messages that have arrived (up to `GROUP_MAX_ITEMS`, waiting at
most `GROUP_WAIT_S` for more after the first), verifies them on one thread while the
previous group is written on the archive's, stores them in arrival order in one
transaction, and acknowledges each only after that transaction committed. A database
failure is retried (capped backoff) on the same group, which stays unacknowledged
meanwhile: nothing is acked that is not stored, and a restarted database costs time, not
data. With `clinic.metrics_port` it serves its figures for Prometheus (`gateway.telemetry`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO, TypeVar

from device_adapters.mqtt.backoff import Backoff
from device_adapters.mqtt.client import (
    BrokerConfig,
    InboundMessage,
    MqttConnection,
    parse_broker_url,
)
from gateway.alerting import thresholds_from
from gateway.clinic.witness import EnrolmentError
from gateway.clock import Clock, SystemClock, utc_now
from gateway.errors import ConfigError, InputError, StorageError
from gateway.settings import Settings
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_clinic_group import Handled, Item, Prepared
from gateway.telemetry import ClinicTelemetry
from gateway.topics import parse_hub_topic, shared_hub_subscriptions
from glucohub.metrics_http import start_metrics

log = logging.getLogger("glucohub.clinic")

T = TypeVar("T")
ALERT_TICK_S = 15.0
# Database retries: quick enough to catch up soon after a PostgreSQL restart.
_DB_BACKOFF = Backoff(initial_s=0.2, max_s=5.0)
# One transaction (one commit, one fsync) for up to this many messages; the broker sends at
# most `clinic.receive_maximum` unacknowledged ones, which bounds a group too.
GROUP_MAX_ITEMS = 500
# After the first message of a group, how long to wait for company when none is queued: a
# fraction of a commit's cost, so a lone message is not held back for long.
GROUP_WAIT_S = 0.005


def clinic_database(settings: Settings) -> str:
    url = settings.clinic.database_url(settings.storage.url)
    if not url:
        raise ConfigError("clinic.url", "the clinic archive needs a postgresql:// URL")
    return url


def worker_config(settings: Settings, worker_id: str) -> BrokerConfig:
    clinic = settings.clinic
    if not clinic.mqtt_url:
        raise ConfigError("clinic.mqtt_url", "a clinic worker needs the hubs' broker")
    host, port, tls = parse_broker_url(clinic.mqtt_url, "clinic.mqtt_url")
    return BrokerConfig(
        host=host,
        port=port,
        tls=tls,
        client_id=worker_id,
        username=clinic.username,
        password=clinic.password,
        ca_file=clinic.ca_file,
        cert_file=clinic.cert_file,
        key_file=clinic.key_file,
        clean_start=False,
        session_expiry_s=clinic.session_expiry_s,
        subscriptions=shared_hub_subscriptions(clinic.group),
        receive_maximum=clinic.receive_maximum,
        config_key="clinic",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class _Group:
    """Messages taken together: their hubs and kinds (None: not a hub topic), the items of
    those that are, and the items as opened before the transaction."""

    messages: list[InboundMessage]
    hubs: list[tuple[str, str] | None]
    items: list[Item]
    prepared: list[Prepared | None]


class ClinicWorker:
    def __init__(self, settings: Settings, worker_id: str, *, out: TextIO | None = None) -> None:
        if not worker_id:
            raise ConfigError("clinic.client_id", "each worker needs a fixed id (--worker-id)")
        self._url = clinic_database(settings)
        self._thresholds = thresholds_from(settings.alerts, settings.ble)
        self._connection = MqttConnection(worker_config(settings, worker_id))
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-archive")
        # Verifies the next group while the archive's thread writes the previous one (the
        # database waits release the interpreter lock).
        self._verifier = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-verify")
        self._archive: ClinicArchive | None = None
        self._backoff = _DB_BACKOFF
        self._rng = random.Random()
        self._out = out
        self._metrics_port = settings.clinic.metrics_port
        self._clock: Clock = SystemClock()
        # Messages taken from the connection and not yet acknowledged, oldest first: their
        # arrival times (monotonic). Bounded by the Receive Maximum the broker honours.
        self._inbox: asyncio.Queue[InboundMessage] = asyncio.Queue(settings.clinic.receive_maximum)
        self._arrivals: deque[float] = deque()
        self.worker_id = worker_id
        self.telemetry = ClinicTelemetry()
        self.telemetry.gauge("glucohub_clinic_in_flight_messages", lambda: len(self._arrivals))
        self.telemetry.gauge("glucohub_clinic_oldest_unacked_age_seconds", self._oldest_age)

    def _oldest_age(self) -> float:
        return self._clock.monotonic() - self._arrivals[0] if self._arrivals else 0.0

    @property
    def handled(self) -> int:
        return sum(
            self.telemetry.value("glucohub_clinic_items_total", kind=kind)
            for kind in ("batches", "checkpoints")
        )

    def _archive_now(self) -> ClinicArchive:
        if self._archive is None:
            self._archive = ClinicArchive(self._url, thresholds=self._thresholds)
        return self._archive

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # Migrate (or fail on a bad URL) before taking any message.
        archive = await self._retrying(
            lambda: loop.run_in_executor(self._executor, self._archive_now)
        )
        verified: asyncio.Queue[_Group] = asyncio.Queue(1)
        metrics = None
        try:
            if self._metrics_port:
                metrics = await start_metrics(
                    self._metrics_port, self.telemetry.render, "clinic.metrics_port"
                )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._connection.run(), name="clinic:mqtt")
                tasks.create_task(self._take(), name="clinic:take")
                tasks.create_task(self._verify(archive, verified), name="clinic:verify")
                tasks.create_task(self._consume(verified), name="clinic:consume")
                tasks.create_task(self._tick(), name="clinic:alert-tick")
        finally:
            if metrics is not None:
                await metrics.cleanup()
            self._verifier.shutdown(wait=True)
            if self._archive is not None:
                await loop.run_in_executor(self._executor, self._archive.close)
            self._executor.shutdown(wait=True)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]]) -> T:
        tries = 0
        while True:
            try:
                return await attempt()
            except StorageError as exc:
                if not exc.transient:
                    raise
                self.telemetry.inc("glucohub_clinic_database_retries_total")
                delay = self._backoff.delay(tries, self._rng)
                log.warning("clinic archive: %s; retrying in %.1fs", exc, delay)
                tries += 1
                await asyncio.sleep(delay)

    async def _take(self) -> None:
        """Move messages from the connection to the inbox, noting when each arrived."""
        while True:
            message = await self._connection.receive()
            self._arrivals.append(self._clock.monotonic())
            await self._inbox.put(message)

    async def _verify(self, archive: ClinicArchive, verified: asyncio.Queue[_Group]) -> None:
        """Take each group as it arrives and open its items (signatures, records) on the
        verifier's thread; hand it on in order."""
        loop = asyncio.get_running_loop()
        while True:
            messages = await self._next_group()
            hubs = [parse_hub_topic(message.topic) for message in messages]
            items = [
                Item(hub_id=hub[0], kind=hub[1], topic=message.topic, payload=message.payload)
                for message, hub in zip(messages, hubs, strict=True)
                if hub is not None
            ]
            prepared = await loop.run_in_executor(self._verifier, archive.prepare, items)
            await verified.put(_Group(messages=messages, hubs=hubs, items=items, prepared=prepared))

    async def _consume(self, verified: asyncio.Queue[_Group]) -> None:
        await self._connection.wait_connected()
        log.info("clinic worker %s consuming", self.worker_id)
        if self._out is not None:
            print(f"clinic worker {self.worker_id} consuming", file=self._out, flush=True)
        loop = asyncio.get_running_loop()
        while True:
            group = await verified.get()
            handled = await self._retrying(
                lambda g=group: loop.run_in_executor(self._executor, self._handle, g)  # type: ignore[misc]
            )
            for message, outcome in zip(group.messages, handled, strict=True):
                self._count(message, outcome)
                self._connection.ack(message)
                self._arrivals.popleft()

    async def _next_group(self) -> list[InboundMessage]:
        """The first message to arrive, then whatever else is queued (up to
        `GROUP_MAX_ITEMS`), waiting at most `GROUP_WAIT_S` for more when none is."""
        group = [await self._inbox.get()]
        deadline = asyncio.get_running_loop().time() + GROUP_WAIT_S
        while len(group) < GROUP_MAX_ITEMS:
            if not self._inbox.empty():
                group.append(self._inbox.get_nowait())
                continue
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                group.append(await asyncio.wait_for(self._inbox.get(), remaining))
            except TimeoutError:
                break
        return group

    async def _tick(self) -> None:
        """The alert engines' time-driven rules (escalation, stale data). Every worker
        ticks; each patient's engine is claimed by one of them at a time (SKIP LOCKED)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(ALERT_TICK_S)
            await self._retrying(
                lambda: loop.run_in_executor(
                    self._executor, lambda: self._archive_now().tick(utc_now())
                )
            )

    def _count(self, message: InboundMessage, handled: Handled | None) -> None:
        """Telemetry on the event loop's thread (a scrape renders there too)."""
        if handled is None:
            return
        kind = message.topic.rsplit("/", 1)[-1]
        self.telemetry.inc("glucohub_clinic_items_total", kind=kind)
        if handled.alarm is not None:
            self.telemetry.inc("glucohub_clinic_alarms_total", kind=handled.alarm.value)
        if handled.outcome == "stored":
            self.telemetry.inc("glucohub_clinic_batches_verified_total")
            self.telemetry.inc("glucohub_clinic_records_stored_total", handled.records)
        elif handled.outcome == "duplicate":
            self.telemetry.inc("glucohub_clinic_batches_duplicate_total")
        elif handled.outcome == "dead_letter":
            self.telemetry.inc("glucohub_clinic_rejected_total", kind=kind, reason=handled.reason)
        else:
            self.telemetry.inc("glucohub_clinic_checkpoints_total", outcome=handled.outcome)

    def _handle(self, group: _Group) -> list[Handled | None]:
        outcomes = iter(
            self._archive_now().store(group.items, group.prepared, utc_now()) if group.items else ()
        )
        out: list[Handled | None] = []
        for message, hub in zip(group.messages, group.hubs, strict=True):
            if hub is None:  # the subscriptions only match hub topics
                log.error("clinic: message on unexpected topic %r ignored", message.topic)
                out.append(None)
                continue
            handled = next(outcomes)
            out.append(handled)
            if handled.outcome == "dead_letter":
                log.warning(
                    "clinic: %s from hub %s dead-lettered%s",
                    hub[1],
                    hub[0],
                    f" (alarm {handled.alarm})" if handled.alarm else "",
                )
        return out


async def run_clinic(settings: Settings, worker_id: str, out: TextIO | None = None) -> None:
    """Run one worker until SIGTERM or SIGINT."""
    worker = ClinicWorker(settings, worker_id, out=out)
    task = asyncio.ensure_future(worker.run())
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        log.info("clinic worker %s stopped (%d items handled)", worker_id, worker.handled)


def enrolment_command(hub_id: str, batch_jwk: str, log_key: str) -> str:
    """The `glucohub hubs add` line that enrols a hub (shell-quoted)."""
    import shlex

    return (
        f"glucohub hubs add --hub {shlex.quote(hub_id)} --batch-key {shlex.quote(batch_jwk)}"
        f" --log-key {shlex.quote(log_key)}"
    )


# -- commands (registered in glucohub/cli.py) -------------------------------------------


def hubs_add(settings: Settings, hub_id: str, batch_key: str, log_key: str) -> int:
    archive = ClinicArchive(clinic_database(settings))
    try:
        archive.enrol(hub_id, batch_key, log_key, utc_now())
        held = archive.held_before_enrolment(hub_id)
    except EnrolmentError as exc:
        raise InputError(str(exc)) from None
    finally:
        archive.close()
    print(f"enrolled hub {hub_id}")
    if held:
        print(
            f"{held} item(s) it sent before it was enrolled are held;"
            f" `glucohub hubs resolve {hub_id}` takes them in"
        )
    return 0


def hubs_list(settings: Settings) -> int:
    archive = ClinicArchive(clinic_database(settings))
    try:
        rows = archive.hubs()
    finally:
        archive.close()
    for row in rows:
        size = "-" if row.checkpoint_size is None else str(row.checkpoint_size)
        print(
            f"{row.hub_id}\t{row.state}\tbatches {row.batches}\tcheckpoint {size}"
            f"\topen alarms {row.open_alarms}"
        )
    return 0


def hubs_resolve(settings: Settings, hub_id: str, by: str) -> int:
    archive = ClinicArchive(clinic_database(settings))
    try:
        resolved, replayed = archive.resolve(hub_id, by, utc_now())
    finally:
        archive.close()
    print(
        f"hub {hub_id}: {resolved} alarm(s) resolved; its items are accepted again"
        f" ({replayed} held while it was stopped or not yet enrolled replayed)"
    )
    return 0


def hubs_reproject(settings: Settings) -> int:
    archive = ClinicArchive(clinic_database(settings))
    try:
        batches, readings = archive.reproject(utc_now())
    finally:
        archive.close()
    print(f"{batches} stored batches projected for the dashboards ({readings} readings new)")
    return 0


def alarms_list(settings: Settings, open_only: bool) -> int:
    archive = ClinicArchive(clinic_database(settings))
    try:
        rows = archive.alarms(open_only=open_only)
    finally:
        archive.close()
    for row in rows:
        state = "resolved" if row.resolved else "open"
        print(
            f"{row.raised_at.isoformat()}\t{row.hub_id}\t{row.kind}\t{state}"
            f"\tx{row.occurrences}\t{row.detail}"
        )
    return 0
