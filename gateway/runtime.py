"""Composition root: wire settings, store, ledger, pipeline, sources and dashboard.

This module (with `gateway.cli`) is the only place that imports every package.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock, SystemClock
from gateway.fanout import FanOut
from gateway.model import Alert
from gateway.pipeline import Hub, Source, Writer
from gateway.protocols import ReadingSink
from gateway.sealing import HubKeys, Sealer, init_keys, load_keys
from gateway.services import Reader, StoreLedgerView, StoreReadModel
from gateway.settings import Settings
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
    port: int | None = None


class _NoAlerts:
    def list(self, patient_id: str | None, open_only: bool) -> list[Alert]:
        return []


async def _serve_dashboard(settings: Settings, running: Running) -> AsyncIterator[int | None]:
    if not settings.dashboard.enabled:
        yield None
        return
    from aiohttp import web
    from dashboards.app import create_app

    app = create_app(
        settings=settings.dashboard,
        read_model=running.read_model,
        live=running.hub.fanout,
        ledger=running.ledger_view,
        status=running.hub,
    )
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.dashboard.host, settings.dashboard.port)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield port
    finally:
        await runner.cleanup()


async def run_hub(
    settings: Settings,
    *,
    sources: Sequence[SourceFactory] = (),
    stop: asyncio.Event | None = None,
    clock: Clock | None = None,
    on_ready: Callable[[Running], None] | None = None,
) -> None:
    """Run the whole gateway until SIGINT/SIGTERM (or `stop`), then shut down cleanly."""
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
        Sealer, store, keys, hub_id=settings.hub.hub_id, forward=bool(settings.upstream.url)
    )
    hub = Hub(
        settings=settings,
        writer=writer,
        sealer=sealer,
        clock=clock,
        telemetry=telemetry,
        fanout=fanout,
    )
    reader = Reader(data_dir)
    alerts = _NoAlerts()
    running = Running(
        hub=hub,
        keys=keys,
        reader=reader,
        read_model=StoreReadModel(reader, alerts.list),
        ledger_view=StoreLedgerView(reader, keys),
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        async with contextlib.asynccontextmanager(_serve_dashboard)(settings, running) as port:
            running.port = port
            if on_ready is not None:
                on_ready(running)
            bound: list[Source] = [functools.partial(make, hub, clock) for make in sources]
            await hub.run(stop, bound)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        await asyncio.to_thread(reader.close)
        await writer.close()
