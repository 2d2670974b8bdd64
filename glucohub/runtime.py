"""Composition root: wire settings, store, ledger, pipeline, sources and dashboard.

This module (with `glucohub.cli`) is the only place that imports every package.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from gateway.alerting import AlertService, recent_treatments, thresholds_from
from gateway.clock import Clock, FurthestClock, SystemClock
from gateway.clockjump import ClockJump, ClockJumpDetector
from gateway.errors import GlucohubError
from gateway.fanout import FanOut
from gateway.model import Transport
from gateway.pipeline import Hub, Source, Writer
from gateway.protocols import ReadingSink
from gateway.sealing import HubKeys, Sealer, init_keys, load_keys
from gateway.services import (
    Reader,
    StoreDevices,
    StoreDocuments,
    StoreLedgerView,
    StoreOutbox,
    StoreReadModel,
    StoreResume,
    StoreTreatments,
)
from gateway.settings import Settings, UpstreamSettings
from gateway.storage.opening import StorageLocation
from gateway.supervision import Backoff, NamedSource
from gateway.telemetry import Telemetry
from glucohub.clockwatch import clock_synchronized, watch_clock, watch_sync
from glucohub.devicestops import DeviceStops
from glucohub.diskguard import DiskGuard
from glucohub.systemd import Notifier, watchdog

log = logging.getLogger("glucohub")

SourceFactory = Callable[[ReadingSink, Clock], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class Running:
    hub: Hub
    keys: HubKeys
    reader: Reader
    read_model: StoreReadModel
    ledger_view: StoreLedgerView
    alerts: AlertService
    writer: Writer
    url: str | None = None
    disk_guard: DiskGuard | None = None
    setup_sources: list[NamedSource] = dataclasses.field(default_factory=list)
    device_stops: DeviceStops = dataclasses.field(default_factory=DeviceStops)
    # Set by the setup page's enrolment: the [upstream] settings to forward with.
    enrolled: asyncio.Future[UpstreamSettings] = dataclasses.field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def port(self) -> int | None:
        return None if self.url is None else int(self.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def _dashboard(
    settings: Settings, running: Running, clock: Clock
) -> AsyncIterator[str | None]:
    if not settings.dashboard.enabled:
        yield None
        return
    from dashboards.app import create_app, live_stats, serve
    from glucohub import firstrun
    from glucohub.accounts import account_location, open_accounts

    def on_consent(event: dict[str, str]) -> None:
        # The consent change and its ledger event are committed: seal it soon.
        running.hub.ledger_events_written(1)

    accounts = await asyncio.to_thread(
        open_accounts, account_location(settings.storage), on_consent_change=on_consent
    )
    first_run = await firstrun.prepare(
        firstrun.HubSetup(
            settings,
            writer=running.writer,
            read_model=running.read_model,
            reader=running.reader,
            sink=running.hub,
            clock=clock,
            device_stops=running.device_stops,
            on_enrolled=running.enrolled.set_result,
        ),
        running.read_model,
        clock,
    )
    if first_run is not None:
        running.setup_sources += firstrun.sources(first_run, settings)
        if not settings.upstream.url:
            running.setup_sources.append(_upstream_after_setup(settings, running, clock))
    try:
        app = create_app(
            settings=settings.dashboard,
            read_model=running.read_model,
            live=running.hub.fanout,
            alerts=running.alerts,
            ledger=running.ledger_view,
            status=running.hub,
            accounts=accounts,
            viewer_queue_size=settings.pipeline.viewer_queue_size,
            first_run=first_run,
            sink=running.hub,
            treatments=StoreTreatments(
                running.reader,
                lambda fn: running.writer.run(fn, running.writer.store),
                running.hub.ledger_events_written,
                clock,
                on_stored=running.alerts.on_treatments,
            ),
            devices=StoreDevices(
                running.reader,
                lambda fn: running.writer.run(fn, running.writer.store),
                running.device_stops.forget,
            ),
            documents=StoreDocuments(
                running.reader,
                lambda fn: running.writer.run(fn, running.writer.store),
                running.hub.ledger_events_written,
                clock,
            ),
            storage=StorageLocation(settings.storage.data_dir, settings.storage.url),
        )
        running.hub.status_probes["dashboard"] = lambda: live_stats(app)
        running.hub.telemetry.gauge(
            "glucohub_dashboard_viewers", lambda: live_stats(app)["viewers"]
        )
        async with serve(app, settings.dashboard) as url:
            if first_run is not None:
                firstrun.announce(first_run, url)
            yield url
    finally:
        await asyncio.to_thread(accounts.close)


def _mqtt_sources(settings: Settings, running: Running, clock: Clock) -> list[NamedSource]:
    """The MQTT consumer and the upstream forwarder, when their URLs are configured."""
    from device_adapters.mqtt.client import MqttConnection, consumer_config
    from device_adapters.mqtt.consumer import MqttConsumer

    sources: list[NamedSource] = []
    if settings.mqtt.url:
        inbound = MqttConnection(consumer_config(settings.mqtt))
        consumer = MqttConsumer(
            connection=inbound,
            sink=running.hub,
            clock=clock,
            max_unacked=settings.mqtt.receive_maximum,
        )
        running.hub.status_probes["mqtt"] = lambda: {
            "state": inbound.state.value,
            **dataclasses.asdict(consumer.stats()),
        }
        sources += [
            NamedSource("mqtt:connection", inbound.run),
            NamedSource("mqtt:consumer", consumer.run),
        ]
    if settings.upstream.url:
        sources += _upstream_sources(settings.upstream, settings.hub.hub_id, running, clock)
    return sources


def _upstream_sources(
    upstream: UpstreamSettings, hub_id: str, running: Running, clock: Clock
) -> list[NamedSource]:
    """The connection to the clinic's broker and the forwarder of the outbox over it."""
    from device_adapters.mqtt.client import MqttConnection, upstream_config
    from device_adapters.mqtt.upstream import UpstreamForwarder

    outbound = MqttConnection(upstream_config(upstream, hub_id=hub_id))
    outbox = StoreOutbox(
        running.reader,
        lambda fn: running.writer.run(fn, running.writer.store),
        running.hub.outbox_added,
        clock,
    )
    forwarder = UpstreamForwarder(connection=outbound, outbox=outbox, window=upstream.max_inflight)
    running.hub.status_probes["upstream"] = lambda: {
        "state": outbound.state.value,
        "sent": forwarder.sent,
        "last_error": forwarder.last_error,
    }
    return [
        NamedSource("upstream:connection", outbound.run),
        NamedSource("upstream:forwarder", forwarder.run),
    ]


def _upstream_after_setup(settings: Settings, running: Running, clock: Clock) -> NamedSource:
    """A hub enrolled from its setup page forwards from then on, without a restart."""

    async def run() -> None:
        upstream = await running.enrolled
        sources = _upstream_sources(upstream, settings.hub.hub_id, running, clock)
        log.info("upstream: forwarding to %s, enrolled during setup", upstream.url)
        async with asyncio.TaskGroup() as group:
            for source in sources:
                group.create_task(source.run(), name=source.name)

    return NamedSource("upstream:after-setup", run)


def _ble_status(adapter: Any) -> dict[str, object]:
    stats = adapter.stats
    return {
        "connects": stats.connects,
        "link_drops": stats.link_drops,
        "readings": stats.readings,
        "last_error": stats.errors[-1] if stats.errors else "",
    }


async def _ble_sources(settings: Settings, running: Running, clock: Clock) -> list[NamedSource]:
    """A BLE adapter per active registered BLE device (`glucohub ble pair` registers them)."""
    if not settings.ble.enabled:
        return []
    from zoneinfo import ZoneInfo

    from device_adapters.ble.adapter import BleAdapter
    from device_adapters.ble.bleak_transport import BleakTransport

    resume = StoreResume(running.reader)
    sources: list[NamedSource] = []
    for device in await running.read_model.list_devices():
        if device.transport is not Transport.BLE or not device.active or not device.address:
            continue
        patient = await running.read_model.get_patient(device.patient_id)
        adapter = BleAdapter(
            device=device,
            transport=BleakTransport(
                device.address, name=device.name, adapter=settings.ble.adapter or "default"
            ),
            sink=running.hub,
            resume=resume,
            clock=clock,
            tz=ZoneInfo(patient.timezone if patient else "UTC"),
            silence_timeout_s=float(settings.ble.silence_watchdog_s),
        )
        running.hub.status_probes[f"ble:{device.device_id}"] = functools.partial(
            _ble_status, adapter
        )

        async def serve(a: BleAdapter = adapter, device_id: str = device.device_id) -> None:
            await running.device_stops.until_forgotten(device_id, a.run)

        sources.append(NamedSource(f"ble:{device.device_id}", serve))
    log.info("BLE: %d registered devices", len(sources))
    return sources


def _status_line(hub: Hub) -> str:
    health = hub.health()
    queues = health["queues"]
    ledger = health["ledger"]
    assert isinstance(queues, dict) and isinstance(ledger, dict)
    return (
        f"{health['status']}: {queues['ingest']} queued, {queues['unsealed_readings']} unsealed,"
        f" ledger of {ledger['tree_size']}"
    )


class _Service:
    """What systemd hears (when it is the service manager): pings from the start, since
    its watchdog runs from the start too; READY=1 once ingest runs; STOPPING=1."""

    def __init__(self, notifier: Notifier, stop: asyncio.Event) -> None:
        self.notifier = notifier
        self.stop = stop
        self.hub: Hub | None = None
        self._stopping = False

    def status(self) -> str:
        return "starting" if self.hub is None else _status_line(self.hub)

    def say_stopping(self) -> None:
        if not self._stopping:
            self._stopping = True
            self.notifier.notify(
                "STOPPING=1", "STATUS=stopping: draining queues, sealing the open batch"
            )

    async def announce(self, hub: Hub) -> None:
        self.hub = hub
        await hub.started.wait()
        log.info("ready: %s", _status_line(hub))
        self.notifier.notify("READY=1", f"STATUS={_status_line(hub)}")
        await self.stop.wait()
        self.say_stopping()


@contextlib.asynccontextmanager
async def _service_manager(notifier: Notifier, stop: asyncio.Event) -> AsyncIterator[_Service]:
    service = _Service(notifier, stop)
    # A loop blocked by a stuck call misses these pings and systemd restarts the hub. They
    # go on through the shutdown: sealing a large open batch takes a while.
    pinging = asyncio.create_task(watchdog(notifier, service.status), name="systemd:watchdog")
    try:
        yield service
    finally:
        service.say_stopping()
        pinging.cancel()
        await asyncio.gather(pinging, return_exceptions=True)


# Retention runs this often, each transaction removing at most this many batches' readings
# (the writer thread is shared with ingest).
RETENTION_INTERVAL_S = 3600.0
RETENTION_BATCHES = 200


def _retention(settings: Settings, running: Running, clock: Clock) -> NamedSource:
    age = timedelta(days=settings.storage.retention_days)

    async def prune() -> None:
        store = running.writer.store
        while True:
            now = clock.now()
            batches = readings = 0
            while True:
                done = await running.writer.run(
                    store.prune_acknowledged, now - age, now, limit=RETENTION_BATCHES
                )
                batches, readings = batches + done.batches, readings + done.readings
                if done.batches < RETENTION_BATCHES:
                    break
            if batches:
                log.info(
                    "retention: removed %d readings of %d acknowledged batches older than %s",
                    readings,
                    batches,
                    now - age,
                )
            await asyncio.sleep(RETENTION_INTERVAL_S)

    return NamedSource("retention", prune)


def _clock_watch(settings: Settings, running: Running, system_clock: Clock) -> NamedSource:
    detector = ClockJumpDetector(settings.hub.clock_jump_threshold_s)

    async def record(jump: ClockJump) -> None:
        # A hub-wide event: no patient's (patient_id ""), sealed with the next batch.
        await running.writer.run(running.writer.store.add_ledger_event, "", jump.ledger_event())
        running.hub.ledger_events_written(1)

    return NamedSource(
        "clock-watch", functools.partial(watch_clock, system_clock, detector, record)
    )


def _clock_sync(running: Running, probe: Callable[[], bool | None]) -> NamedSource:
    def report(synchronized: bool | None) -> None:
        running.hub.clock_synchronized = synchronized

    return NamedSource("clock-sync", functools.partial(watch_sync, probe, report))


async def run_hub(
    settings: Settings,
    *,
    sources: Sequence[SourceFactory] | Mapping[str, SourceFactory] = (),
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[Running], None] | None = None,
    source_backoff: Backoff | None = None,
    notifier: Notifier | None = None,
    clock_sync: Callable[[], bool | None] = clock_synchronized,
) -> None:
    """Run the whole gateway until SIGINT/SIGTERM (or `stop`), then shut down cleanly.

    Under systemd (`notifier` from its environment) the hub says READY=1 once ingest runs,
    WATCHDOG=1 from the event loop, STOPPING=1 when asked to stop, and STATUS= lines.

    Each source (`sources`, MQTT, BLE) runs supervised: restarted after a failure with
    `source_backoff` (default `Backoff()`), never ending the hub. `sources` given as a
    mapping are logged and reported under their keys (say "ble:<device id>").
    `clock_sync` says whether the system clock is synchronized (None: unknown)."""
    stop = stop or asyncio.Event()
    with one_hub(settings.storage.data_dir):
        async with _service_manager(notifier or Notifier(), stop) as service:
            await _run(
                settings,
                sources,
                stop,
                clock or SystemClock(),
                on_ready,
                source_backoff,
                service,
                clock_sync,
            )


class HubRunning(GlucohubError):
    """Another hub holds the data directory."""


_HELD: set[Path] = set()  # data directories this process holds (the demo, then its hub)


@contextlib.contextmanager
def one_hub(data_dir: Path) -> Iterator[None]:
    """One hub per data directory: a second (another `run` or `demo` on it, say on another
    port) would seal the same log, and the two would fork it. The lock is the kernel's
    (flock(2)), so a hub that dies, even by SIGKILL, lets go of it; within one process it
    may be taken again (the demo holds it while it seeds, then runs the hub)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = data_dir.resolve()
    if key in _HELD:
        yield
        return
    fd = os.open(data_dir / "hub.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HubRunning(
                f"another hub is running on data directory {data_dir}; stop it first"
            ) from None
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
    finally:
        os.close(fd)


async def _run(
    settings: Settings,
    sources: Sequence[SourceFactory] | Mapping[str, SourceFactory],
    stop: asyncio.Event,
    clock: Clock,
    on_ready: Callable[[Running], None] | None,
    source_backoff: Backoff | None,
    service: _Service,
    clock_sync: Callable[[], bool | None],
) -> None:
    data_dir = settings.storage.data_dir
    # Health data: owner-only (init_keys would create it with the umask's mode otherwise).
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    init_keys(data_dir, settings.ledger.key_passphrase or None)
    # A hub restored from a backup seals only once its last published checkpoint is known.
    from gateway.storage.sqlite_backup import seal_hold

    hold = None if settings.storage.url else await asyncio.to_thread(seal_hold, data_dir)
    keys = load_keys(data_dir, settings.hub.hub_id, settings.ledger.key_passphrase or None)
    writer = await Writer.open(data_dir, settings.storage.url)
    store = writer.store
    telemetry = Telemetry()
    fanout = FanOut(
        settings.pipeline.viewer_queue_size,
        on_drop=lambda n: telemetry.inc("glucohub_dashboard_dropped_events_total", n),
    )
    sealer = await writer.run(
        functools.partial(
            Sealer,
            hub_id=settings.hub.hub_id,
            forward=bool(settings.upstream.url),
            clock=clock,
            hold=hold,
        ),
        store,
        keys,
    )
    alerts = AlertService(
        thresholds=thresholds_from(settings.alerts, settings.ble),
        clock=clock,
        writer_run=lambda fn: writer.run(fn, store),
        states=await writer.run(store.alert_engine_states),
        treatments=await writer.run(recent_treatments, store, clock.now()),
    )
    hub = Hub(
        settings=settings,
        writer=writer,
        sealer=sealer,
        clock=clock,
        telemetry=telemetry,
        fanout=fanout,
        alerts=alerts,
        source_backoff=source_backoff,
        # a backward clock step must not make readings on the earlier timeline "future"
        validation_clock=FurthestClock(clock),
    )
    reader = Reader(data_dir, settings.storage.url)
    running = Running(
        hub=hub,
        keys=keys,
        reader=reader,
        alerts=alerts,
        writer=writer,
        read_model=StoreReadModel(reader),
        ledger_view=StoreLedgerView(
            reader,
            keys,
            lambda fn: writer.run(fn, store),
            witness_keys=settings.ledger.witness_keys,
            clock=clock,
        ),
    )
    running.disk_guard = guard = DiskGuard(hub, data_dir, settings.storage.min_free_mb)
    hub.status_probes["disk-guard"] = guard.status
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        hub.clock_synchronized = await asyncio.to_thread(clock_sync)  # before any input
        await guard.check()  # a hub started on a full disk stores nothing from the start
        async with _dashboard(settings, running, clock) as url:
            running.url = url
            if on_ready is not None:
                on_ready(running)
            named = (
                sources.items()
                if isinstance(sources, Mapping)
                else ((f"source-{index}", make) for index, make in enumerate(sources))
            )
            bound: list[Source | NamedSource] = [
                NamedSource(name, functools.partial(make, hub, clock)) for name, make in named
            ]
            bound += _mqtt_sources(settings, running, clock)
            bound += await _ble_sources(settings, running, clock)
            bound.append(_clock_watch(settings, running, clock))
            bound.append(_clock_sync(running, clock_sync))
            bound.append(NamedSource("disk-guard", guard.run))
            if settings.storage.retention_days:
                bound.append(_retention(settings, running, clock))
            bound += running.setup_sources
            announcing = asyncio.create_task(service.announce(hub), name="systemd:notify")
            try:
                await hub.run(stop, bound)
            finally:
                announcing.cancel()
                await asyncio.gather(announcing, return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(reader.close)
        await writer.close()
