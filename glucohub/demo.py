"""`glucohub demo`: the whole gateway on simulated patients, on embedded defaults."""

from __future__ import annotations

import asyncio
import logging
import secrets
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.transport import GattTransport
from device_adapters.ble.virtual import VirtualCgm, VirtualHeartRateStrap, VirtualMeter
from device_adapters.virtual.sources import VirtualPatient, demo_patients, seed_history
from gateway.clock import Clock, SystemClock
from gateway.model import Device, ReadingKind
from gateway.protocols import ReadingSink
from gateway.services import Reader, StoreResume
from gateway.settings import Settings, StorageSettings
from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from glucohub.runtime import Running, SourceFactory, one_hub, run_hub

log = logging.getLogger("glucohub.demo")

DEMO_DATA_DIR = Path("var/demo")
DEMO_CLINICIAN = "demo-clinician"
CGM_SESSION_SO_FAR = timedelta(hours=24)  # the current sensor's data comes over BLE
HEART_RATE_INTERVAL_S = 5.0


def demo_settings(settings: Settings) -> Settings:
    """The demo keeps its data apart unless a data dir was chosen explicitly."""
    if settings.storage.data_dir == StorageSettings().data_dir:
        settings = settings.replace("storage", data_dir=DEMO_DATA_DIR)
    return settings


def prepare(
    store: HubStorage, patients: list[VirtualPatient], history_days: int, now: datetime
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


def _patient_source(
    vp: VirtualPatient, resume_from: datetime, storage: StorageSettings, live_poll_s: float
) -> SourceFactory:
    """Seed history older than the CGM's current session, then run the patient's three
    simulated devices through the real BLE adapters (the same bytes a device sends)."""

    async def run(sink: ReadingSink, clock: Clock) -> None:
        now = clock.now()
        session_start = max(resume_from, now - CGM_SESSION_SO_FAR)
        seeded = await seed_history(sink, vp, start=resume_from, cgm_until=session_start, end=now)
        log.info("%s: %d historical readings seeded", vp.patient.patient_id, seeded)
        reader = Reader(storage.data_dir, storage.url)
        resume = StoreResume(reader)
        devices: list[tuple[Device, GattTransport]] = [
            (
                vp.meter,
                VirtualMeter.for_patient(
                    vp.profile, start=resume_from, now=now, clock=clock, live_poll_s=live_poll_s
                ),
            ),
            (
                vp.cgm,
                VirtualCgm.for_patient(
                    vp.profile,
                    now=now,
                    session_start=session_start,
                    clock=clock,
                    live_poll_s=live_poll_s,
                ),
            ),
            (
                vp.heart_rate,
                VirtualHeartRateStrap.for_patient(
                    vp.profile,
                    now=now,
                    clock=clock,
                    live_poll_s=live_poll_s,
                    interval_s=HEART_RATE_INTERVAL_S,
                ),
            ),
        ]
        adapters = [
            BleAdapter(
                device=device,
                transport=transport,
                sink=sink,
                resume=resume,
                clock=clock,
                tz=ZoneInfo(vp.patient.timezone),
            )
            for device, transport in devices
        ]
        try:
            async with asyncio.TaskGroup() as group:
                for adapter in adapters:
                    group.create_task(adapter.run(), name=f"ble-{adapter.device.device_id}")
        finally:
            for adapter in adapters:
                adapter.stop()
            await asyncio.to_thread(reader.close)

    return run


async def run_demo(settings: Settings, clock: Clock | None = None) -> None:
    settings = demo_settings(settings)
    with one_hub(settings.storage.data_dir):  # before seeding it or resetting the login
        await _run_demo(settings, clock or SystemClock())


async def _run_demo(settings: Settings, clock: Clock) -> None:
    patients = demo_patients(settings.demo.patients, settings.demo.seed)
    store = open_storage(settings.storage.data_dir, settings.storage.url)
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

    sources = [
        _patient_source(vp, resume[vp.patient.patient_id], settings.storage, 1.0) for vp in patients
    ]
    await run_hub(settings, sources=sources, clock=clock, on_ready=ready)


def ensure_demo_clinician(settings: Settings, patient_ids: list[str]) -> tuple[str, str] | None:
    """Create (or reset the password of) the demo clinician and grant it every demo patient.

    A fresh random password each start: the demo never ships a known credential."""
    if not settings.dashboard.enabled:
        return None
    from dashboards.accounts import AccountError
    from glucohub import accounts

    db_path = accounts.account_location(settings.storage)
    password = secrets.token_urlsafe(12)
    try:
        accounts.users_add(db_path, DEMO_CLINICIAN, "clinician", password)
    except AccountError:
        accounts.users_passwd(db_path, DEMO_CLINICIAN, password)
    for patient_id in patient_ids:  # each grant is a ledger event, in its transaction
        accounts.grant(db_path, patient_id, DEMO_CLINICIAN, by="demo")
    return DEMO_CLINICIAN, password
