"""Wiring for first-run setup: the setup page's `SetupBackend` over the BLE pairing functions
(the same ones `glucohub ble scan/pair` use) and the hub's storage, the setup code on the log,
and a source that starts collecting from the devices paired once setup is finished."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import platform
import tomllib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from dashboards.setup import FirstRun, NearbyDevice, SetupProblem, shown_code
from device_adapters.ble import pairing
from device_adapters.ble.errors import BleError
from gateway.clock import Clock
from gateway.errors import GlucohubError
from gateway.model import Device, Patient, Reading
from gateway.pipeline import Writer
from gateway.protocols import ReadingSink, ReadModel
from gateway.services import Reader, StoreResume
from gateway.settings import ENROLMENT_FILE, Settings, UpstreamSettings
from gateway.supervision import NamedSource
from gateway.units import Unit, glucose_unit
from glucohub.devicestops import DeviceStops

log = logging.getLogger("glucohub.setup")

STORED_WAIT_S = 5.0  # a downloaded reading is stored within a commit delay; wait this long
# In the data directory from step 1 until "Finish setup": a hub restarted in between (a power
# cut, an update) serves the setup page again, at the step it had reached.
PROGRESS_FILE = "setup-in-progress.json"


@dataclass(frozen=True, slots=True)
class Progress:
    patient_id: str
    username: str  # "" until the patient's account exists
    unit: Unit


def read_progress(data_dir: Path) -> Progress | None:
    """The unfinished setup's progress, or None (none, or a file that is not one)."""
    try:
        saved = json.loads((data_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
        return Progress(
            patient_id=str(saved["patient_id"]),
            username=str(saved["username"]),
            unit=glucose_unit(str(saved["unit"])),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("setup: ignoring %s (%s)", data_dir / PROGRESS_FILE, exc)
        return None


def _write_progress(data_dir: Path, progress: Progress) -> None:
    path = data_dir / PROGRESS_FILE
    partial = path.with_suffix(".partial")
    text = json.dumps(
        {"patient_id": progress.patient_id, "username": progress.username,
         "unit": progress.unit.value}
    )  # fmt: skip
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


class HubSetup:
    """`dashboards.setup.SetupBackend` for a running hub (`glucohub.runtime.Running`)."""

    def __init__(
        self,
        settings: Settings,
        *,
        writer: Writer,
        read_model: ReadModel,
        reader: Reader,
        sink: ReadingSink,
        clock: Clock,
        device_stops: DeviceStops | None = None,
        on_enrolled: Callable[[UpstreamSettings], None] | None = None,
    ) -> None:
        self._on_enrolled = on_enrolled
        self._device_stops = device_stops or DeviceStops()
        self.collecting: set[str] = set()  # device ids the hub collects from without setup
        self._writer = writer
        self._read_model = read_model
        self._reader = reader
        self._sink = sink
        self._settings = settings
        self._clock = clock
        self._adapter = settings.ble.adapter
        self._finished: asyncio.Queue[Sequence[Device]] = asyncio.Queue(maxsize=1)

    async def enrol(self, link: str) -> str:
        from glucohub.enrol import enrol_hub

        try:
            enrolled = await enrol_hub(self._settings, link)
        except (GlucohubError, OSError) as exc:  # EnrolmentFailed says it in one line
            log.warning("setup: enrolment failed: %s", exc)
            raise SetupProblem(f"The hub could not connect to the clinic: {exc}.") from None
        log.warning("setup: enrolled with %s as hub %s", enrolled.clinic_name, enrolled.hub_id)
        if self._on_enrolled is not None:
            self._on_enrolled(await asyncio.to_thread(self._enrolled_upstream))
        return enrolled.clinic_name

    def _enrolled_upstream(self) -> UpstreamSettings:
        """The hub's [upstream] with what enrolment wrote (`glucohub.enrol`) over it."""
        with (self.data_dir / ENROLMENT_FILE).open("rb") as handle:
            given = tomllib.load(handle).get("upstream", {})
        return dataclasses.replace(self._settings.upstream, **given)

    @property
    def data_dir(self) -> Path:
        return self._settings.storage.data_dir

    async def phone_app(self, patient: Patient) -> str:
        from glucohub import uploaders
        from glucohub.accounts import account_location

        writer = self._writer
        device_id = await writer.run(
            uploaders.ensure_uploader_device, writer.store, patient.patient_id
        )
        _, secret = await asyncio.to_thread(
            uploaders.create_secret,
            account_location(self._settings.storage),
            patient.patient_id,
            device_id,
            read_only=False,
            label="set up on the hub",
        )
        log.info("setup: a Nightscout uploader secret for patient %s", patient.patient_id)
        return secret

    async def add_patient(self, patient: Patient) -> None:
        writer = self._writer
        await writer.run(writer.store.add_patient, patient)
        log.info("setup: registered patient %s", patient.patient_id)

    async def save_progress(self, patient: Patient, username: str, unit: Unit) -> None:
        progress = Progress(patient_id=patient.patient_id, username=username, unit=unit)
        await asyncio.to_thread(_write_progress, self._settings.storage.data_dir, progress)

    async def scan(self, seconds: float) -> Sequence[NearbyDevice]:
        if not self._settings.ble.enabled:
            raise SetupProblem(
                "Bluetooth devices are switched off in this hub's settings ([ble] enabled = "
                "false). Whoever installed the hub can switch them on and restart it; you can "
                "finish setup now and add devices then."
            )
        try:
            found = await pairing.scan_nearby(seconds)
        except BleError as exc:
            log.warning("setup: scan failed: %s", exc)
            raise SetupProblem(pairing.advice(exc)) from None
        return [NearbyDevice(address=n.address, name=n.name, label=n.label) for n in found]

    async def pair(
        self,
        address: str,
        name: str,
        patient: Patient,
        ask_passkey: Callable[[], Awaitable[int | None]],
    ) -> Device:
        async def ask(_address: str) -> int | None:
            return await ask_passkey()

        try:
            device = await pairing.pair_device(
                address, patient.patient_id, name, adapter=self._adapter, ask_passkey=ask
            )
        except BleError as exc:
            log.warning("setup: pairing %s failed: %s", address, exc)
            raise SetupProblem(pairing.advice(exc)) from None
        writer = self._writer
        if await self._read_model.get_patient(patient.patient_id) is not None:
            active = {d.device_id for d in await self._read_model.list_devices() if d.active}
            if device.device_id not in active:  # new, or removed and paired again
                await writer.run(writer.store.add_device, device)
        log.info("setup: paired and registered %s (%s)", device.device_id, device.kind)
        return device

    async def first_download(self, device: Device, patient: Patient) -> Reading | None:
        from zoneinfo import ZoneInfo

        try:
            count = await pairing.first_download(
                device,
                sink=self._sink,
                resume=StoreResume(self._reader),
                clock=self._clock,
                tz=ZoneInfo(patient.timezone),
                adapter=self._adapter,
            )
        except BleError as exc:
            log.warning("setup: first download from %s failed: %s", device.device_id, exc)
            raise SetupProblem(pairing.advice(exc)) from None
        if count == 0:
            return None
        deadline = self._clock.monotonic() + STORED_WAIT_S
        while True:  # the readings are queued towards storage; the newest shows once committed
            newest = await self._newest(device, patient)
            if newest is not None or self._clock.monotonic() > deadline:
                return newest
            await asyncio.sleep(0.1)

    async def _newest(self, device: Device, patient: Patient) -> Reading | None:
        since = self._clock.now() - timedelta(days=3650)
        mine = [
            r
            for r in await self._read_model.readings(patient.patient_id, since=since)
            if r.device_id == device.device_id
        ]
        return max(mine, key=lambda r: r.time, default=None)

    async def finished(self, devices: Sequence[Device]) -> None:
        path = self._settings.storage.data_dir / PROGRESS_FILE
        await asyncio.to_thread(path.unlink, missing_ok=True)
        log.warning("First-run setup finished: the setup code no longer works")
        self._finished.put_nowait(devices)

    async def collect(self) -> None:
        """A hub source: once setup is finished, serve the devices paired during it (the
        hub's BLE sources were chosen at start, when there were none)."""
        from zoneinfo import ZoneInfo

        from device_adapters.ble.adapter import BleAdapter
        from device_adapters.ble.bleak_transport import BleakTransport

        devices = await self._finished.get()
        resume = StoreResume(self._reader)
        async with asyncio.TaskGroup() as group:
            for device in devices:
                if device.device_id in self.collecting:
                    continue
                patient = await self._read_model.get_patient(device.patient_id)
                adapter = BleAdapter(
                    device=device,
                    transport=BleakTransport(
                        device.address, name=device.name, adapter=self._adapter or "default"
                    ),
                    sink=self._sink,
                    resume=resume,
                    clock=self._clock,
                    tz=ZoneInfo(patient.timezone if patient else "UTC"),
                    silence_timeout_s=float(self._settings.ble.silence_watchdog_s),
                )
                group.create_task(
                    self._device_stops.until_forgotten(device.device_id, adapter.run),
                    name=f"ble:{device.device_id}",
                )
            log.info("setup: collecting from %d paired devices", len(devices))


async def prepare(backend: HubSetup, read_model: ReadModel, clock: Clock) -> FirstRun | None:
    """A first-run setup when the hub has no patient yet, or an unfinished one to resume;
    else None. The caller adds `source(first_run)` to the hub's sources and calls `announce`
    once the page listens."""
    patients = await read_model.list_patients()
    if not patients:
        return FirstRun(backend=backend, clock=clock)
    progress = await asyncio.to_thread(read_progress, backend.data_dir)
    patient = next((p for p in patients if progress and p.patient_id == progress.patient_id), None)
    if progress is None or patient is None:
        return None
    log.warning("First-run setup of %s was not finished: resuming it", patient.patient_id)
    # Devices paired before the restart are already collected by the hub's own BLE sources.
    backend.collecting = {d.device_id for d in await read_model.list_devices() if d.active}
    return FirstRun(
        backend=backend,
        clock=clock,
        patient=patient,
        username=progress.username,
        unit=progress.unit,
    )


def sources(first_run: FirstRun, settings: Settings) -> list[NamedSource]:
    """The hub source that collects from the devices paired during setup (with BLE on)."""
    backend = first_run.backend
    assert isinstance(backend, HubSetup)
    return [NamedSource("setup:devices", backend.collect)] if settings.ble.enabled else []


def announce(first_run: FirstRun, url: str) -> str:
    """Make the setup code and log where to type it (the journal under systemd); the code."""
    code = first_run.new_code()
    parts = urlsplit(url)
    host = parts.hostname or ""
    if host in ("0.0.0.0", "::", ""):  # listening everywhere: name the hub as the LAN sees it
        host = f"{platform.node()}.local"
    address = f"{parts.scheme}://{host}:{parts.port}/setup"
    if host in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "First-run setup: the dashboard listens on this machine only (dashboard.host = "
            '%s); to set up from a phone, set dashboard.host = "0.0.0.0" and restart',
            host,
        )
    where = "its setup was not finished" if first_run.patient else "no patient is registered yet"
    log.warning(
        "First-run setup: %s. Open %s on a phone or computer on the same network and type the "
        "setup code %s",
        where,
        address,
        shown_code(code),
    )
    return code
