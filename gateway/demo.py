"""`glucohub demo`: the whole gateway on simulated patients, on embedded defaults."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path

from device_adapters.virtual.sources import VirtualPatient, backfill, demo_patients, stream_live
from gateway.clock import Clock, SystemClock
from gateway.model import ReadingKind
from gateway.protocols import ReadingSink
from gateway.runtime import Running, SourceFactory, run_hub
from gateway.settings import Settings, StorageSettings
from gateway.store import DB_FILENAME, Store

log = logging.getLogger("glucohub.demo")

DEMO_DATA_DIR = Path("var/demo")
DEMO_CLINICIAN = "demo-clinician"


def demo_settings(settings: Settings) -> Settings:
    """The demo keeps its data apart unless a data dir was chosen explicitly."""
    if settings.storage.data_dir == StorageSettings().data_dir:
        settings = settings.replace("storage", data_dir=DEMO_DATA_DIR)
    return settings


def prepare(
    store: Store, patients: list[VirtualPatient], history_days: int, now: datetime
) -> dict[str, datetime]:
    """Register the simulated patients and devices; return where each one's data resumes."""
    resume: dict[str, datetime] = {}
    for vp in patients:
        if store.get_patient(vp.patient.patient_id) is None:
            store.add_patient(vp.patient)
        for device in vp.devices:
            if store.get_device(device.device_id) is None:
                store.add_device(device)
        latest = store.latest_reading(vp.patient.patient_id, [ReadingKind.CGM_GLUCOSE])
        start = now - timedelta(days=history_days)
        resume[vp.patient.patient_id] = max(start, latest.time) if latest else start
    return resume


def _patient_source(vp: VirtualPatient, since: datetime) -> SourceFactory:
    async def run(sink: ReadingSink, clock: Clock) -> None:
        now = clock.now()
        count = await backfill(sink, vp, start=since, end=now)
        log.info("%s: %d historical readings delivered", vp.patient.patient_id, count)
        await stream_live(sink, vp, clock, since=now)

    return run


async def run_demo(settings: Settings, clock: Clock | None = None) -> None:
    settings = demo_settings(settings)
    clock = clock or SystemClock()
    patients = demo_patients(settings.demo.patients, settings.demo.seed)
    store = Store(settings.storage.data_dir)
    try:
        resume = prepare(store, patients, settings.demo.history_days, clock.now())
    finally:
        store.close()
    login = ensure_demo_clinician(settings, [vp.patient.patient_id for vp in patients])

    def ready(running: Running) -> None:
        print(f"Glucohub demo running with {len(patients)} simulated patients.", flush=True)
        print(f"Dashboard: {running.url or 'disabled'}/", flush=True)
        if login is not None:
            print(f"Demo clinician login: {login[0]} / {login[1]}", flush=True)
        print("Press Ctrl-C to stop.", flush=True)

    sources = [_patient_source(vp, resume[vp.patient.patient_id]) for vp in patients]
    await run_hub(settings, sources=sources, clock=clock, on_ready=ready)


def ensure_demo_clinician(settings: Settings, patient_ids: list[str]) -> tuple[str, str] | None:
    """Create (or reset the password of) the demo clinician and grant it every demo patient.

    A fresh random password each start: the demo never ships a known credential."""
    if not settings.dashboard.enabled:
        return None
    from dashboards import accounts

    db_path = settings.storage.data_dir / DB_FILENAME
    password = secrets.token_urlsafe(12)
    try:
        accounts.users_add(db_path, DEMO_CLINICIAN, "clinician", password)
    except accounts.AccountError:
        accounts.users_passwd(db_path, DEMO_CLINICIAN, password)
    store = Store(settings.storage.data_dir)
    try:
        for patient_id in patient_ids:
            accounts.grant(
                db_path,
                patient_id,
                DEMO_CLINICIAN,
                by="demo",
                on_consent_change=lambda event: store.add_ledger_event(
                    event.get("patient_id", ""), {"type": "consent", **event}
                ),
            )
    finally:
        store.close()
    return DEMO_CLINICIAN, password
