"""Composition root: wire settings, store, ledger, pipeline, sources and dashboard.

This module (with `glucohub.cli`) is the only place that imports every package.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.alerting import AlertService, thresholds_from
from gateway.clock import Clock, SystemClock
from gateway.fanout import FanOut
from gateway.model import Transport
from gateway.pipeline import Hub, Source, Writer
from gateway.protocols import ReadingSink
from gateway.sealing import HubKeys, Sealer, init_keys, load_keys
from gateway.services import Reader, StoreLedgerView, StoreOutbox, StoreReadModel, StoreResume
from gateway.settings import Settings
from gateway.store import DB_FILENAME
from gateway.supervision import Backoff, NamedSource
from gateway.telemetry import Telemetry

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

    @property
    def port(self) -> int | None:
        return None if self.url is None else int(self.url.rsplit(":", 1)[1])


@contextlib.asynccontextmanager
async def _dashboard(settings: Settings, running: Running) -> AsyncIterator[str | None]:
    if not settings.dashboard.enabled:
        yield None
        return
    from dashboards.app import create_app, live_stats, serve
    from glucohub.accounts import open_accounts

    def on_consent(event: dict[str, str]) -> None:
        # The consent change and its ledger event are committed: seal it soon.
        running.hub.ledger_events_written(1)

    accounts = await asyncio.to_thread(
        open_accounts, settings.storage.data_dir / DB_FILENAME, on_consent_change=on_consent
    )
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
            sink=running.hub,
        )
        running.hub.status_probes["dashboard"] = lambda: live_stats(app)
        running.hub.telemetry.gauge(
            "glucohub_dashboard_viewers", lambda: live_stats(app)["viewers"]
        )
        async with serve(app, settings.dashboard) as url:
            yield url
    finally:
        await asyncio.to_thread(accounts.close)


def _mqtt_sources(settings: Settings, running: Running, clock: Clock) -> list[NamedSource]:
    """The MQTT consumer and the upstream forwarder, when their URLs are configured."""
    from device_adapters.mqtt.client import MqttConnection, consumer_config, upstream_config
    from device_adapters.mqtt.consumer import MqttConsumer
    from device_adapters.mqtt.upstream import UpstreamForwarder

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
        outbound = MqttConnection(upstream_config(settings.upstream, hub_id=settings.hub.hub_id))
        outbox = StoreOutbox(
            running.reader,
            lambda fn: running.writer.run(fn, running.writer.store),
            running.hub.outbox_added,
            clock,
        )
        forwarder = UpstreamForwarder(
            connection=outbound, outbox=outbox, window=settings.upstream.max_inflight
        )
        running.hub.status_probes["upstream"] = lambda: {
            "state": outbound.state.value,
            "sent": forwarder.sent,
            "last_error": forwarder.last_error,
        }
        sources += [
            NamedSource("upstream:connection", outbound.run),
            NamedSource("upstream:forwarder", forwarder.run),
        ]
    return sources


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

        async def serve(a: BleAdapter = adapter) -> None:
            await a.run()

        sources.append(NamedSource(f"ble:{device.device_id}", serve))
    log.info("BLE: %d registered devices", len(sources))
    return sources


async def run_hub(
    settings: Settings,
    *,
    sources: Sequence[SourceFactory] | Mapping[str, SourceFactory] = (),
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[Running], None] | None = None,
    source_backoff: Backoff | None = None,
) -> None:
    """Run the whole gateway until SIGINT/SIGTERM (or `stop`), then shut down cleanly.

    Each source (`sources`, MQTT, BLE) runs supervised: restarted after a failure with
    `source_backoff` (default `Backoff()`), never ending the hub. `sources` given as a
    mapping are logged and reported under their keys (say "ble:<device id>")."""
    clock = clock or SystemClock()
    stop = stop or asyncio.Event()
    data_dir = settings.storage.data_dir
    init_keys(data_dir, settings.ledger.key_passphrase or None)
    keys = load_keys(data_dir, settings.hub.hub_id, settings.ledger.key_passphrase or None)
    writer = await Writer.open(data_dir)
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
        ),
        store,
        keys,
    )
    alerts = AlertService(
        thresholds=thresholds_from(settings.alerts, settings.ble),
        clock=clock,
        writer_run=lambda fn: writer.run(fn, store),
        states=await writer.run(store.alert_engine_states),
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
    )
    reader = Reader(data_dir)
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
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with _dashboard(settings, running) as url:
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
            await hub.run(stop, bound)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(reader.close)
        await writer.close()
