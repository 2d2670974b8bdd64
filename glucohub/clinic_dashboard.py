"""A clinic dashboard process (`glucohub dashboard`): the hub's dashboards, unchanged, on
the clinic database.

The workers project every verified batch into the hub schema of the clinic database
(clinic-wide ids ``<hub>:<patient>``), so the dashboards read it through the same storage
contract as on a hub. What differs is wiring only: live alert transitions and new readings
come from PostgreSQL LISTEN/NOTIFY (every process hears every committed change once), alert
actions lock the patient's engine in the database, the ledger pages show each hub's log
from the archive (`gateway.clinic.hub_logs`), and the accounts (sessions, consent,
throttling) live in the clinic database, so any process serves any session: run several
behind a reverse proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable

from dashboards.app import create_app, live_stats, serve
from gateway.alerting import thresholds_from
from gateway.clinic.hub_logs import ArchivedLogs
from gateway.clinic.services import ArchiveLedger, ClinicAlertControl, DashboardStatus
from gateway.clock import Clock, SystemClock
from gateway.services import Reader, StoreReadModel
from gateway.settings import Settings
from gateway.storage.opening import StorageLocation
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_live import PostgresLiveFeed
from glucohub.accounts import account_storage, open_accounts
from glucohub.clinic import clinic_database

log = logging.getLogger("glucohub.clinic.dashboard")


@contextlib.asynccontextmanager
async def serving(settings: Settings, clock: Clock | None = None) -> AsyncIterator[str]:
    """The dashboards on the clinic archive, listening until the block exits; yields the
    base URL bound."""
    url = clinic_database(settings)
    clock = clock or SystemClock()
    # Create or upgrade the archive's schema (and the hub schema beneath it): a dashboard
    # may start before any worker.
    await asyncio.to_thread(lambda: ClinicArchive(url).close())
    if not await asyncio.to_thread(_has_accounts, url):
        log.warning(
            "the clinic has no dashboard accounts yet, so nobody can sign in: create them"
            " with `glucohub users add NAME --role admin|clinician --config FILE`"
        )
    accounts = await asyncio.to_thread(open_accounts, url)
    reader = Reader(settings.storage.data_dir, url)
    alerts = ClinicAlertControl(url, thresholds_from(settings.alerts, settings.ble), clock)
    status = DashboardStatus(clock)

    def consent_changed() -> None:
        # A worker applied a hub's consent change: live viewers re-read their patients
        # before their next message, as after a grant or revocation in this process.
        accounts.consent_version += 1

    hub_logs = ArchivedLogs(url)
    try:
        app = create_app(
            settings=settings.dashboard,
            read_model=StoreReadModel(reader),
            live=PostgresLiveFeed(url, on_consent=consent_changed),
            alerts=alerts,
            ledger=ArchiveLedger(),
            hub_logs=hub_logs,
            status=status,
            accounts=accounts,
            clock=clock,
            viewer_queue_size=settings.pipeline.viewer_queue_size,
            storage=StorageLocation(settings.storage.data_dir, url),
        )
        status.live = lambda: live_stats(app)
        async with serve(app, settings.dashboard) as base:
            log.info("clinic dashboard on %s", base)
            yield base
    finally:
        await asyncio.to_thread(alerts.close)
        await asyncio.to_thread(hub_logs.close)
        await asyncio.to_thread(reader.close)
        await asyncio.to_thread(accounts.close)


def _has_accounts(url: str) -> bool:
    with account_storage(url) as storage:
        return bool(storage.list_users())


async def run_clinic_dashboard(
    settings: Settings, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve the dashboards on the clinic archive until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with serving(settings) as base:
            if on_ready is not None:
                on_ready(base)
            await stop.wait()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
