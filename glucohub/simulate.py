"""`glucohub simulate`: N simulated hubs forwarding real signed batches and checkpoints.

Each simulated hub is a real one minus its devices: its own data directory with ledger keys
and a SQLite store, the real `Sealer` (which puts every batch and checkpoint in the store's
outbox in the sealing transaction) and the real `UpstreamForwarder` on its own MQTT
connection. Every tick it stores one CGM reading per patient and seals them into a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import tempfile
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from device_adapters.mqtt.client import BrokerConfig, MqttConnection, parse_broker_url
from device_adapters.mqtt.upstream import OutboxItem, UpstreamForwarder
from gateway.clock import utc_now
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.store import Store
from gateway.units import Unit


class SimulatedHub:
    """A hub over `data_dir` (created, or reopened as it was left)."""

    def __init__(self, data_dir: Path, hub_id: str, patients: int) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        init_keys(data_dir, None)
        self.hub_id = hub_id
        self.data_dir = data_dir
        self.keys = load_keys(data_dir, hub_id, None)
        self.store = Store(data_dir)
        known = {p.patient_id for p in self.store.list_patients()}
        self._devices: list[Device] = []
        for index in range(patients):
            patient_id = f"{hub_id}-p{index}"
            device = Device(
                device_id=f"{patient_id}-cgm",
                patient_id=patient_id,
                kind=DeviceKind.CGM,
                transport=Transport.VIRTUAL,
            )
            if patient_id not in known:
                self.store.add_patient(Patient(patient_id=patient_id, display_name=patient_id))
                self.store.add_device(device)
            self._devices.append(device)
        self._next_seq = {d.device_id: self._after(d.device_id) for d in self._devices}
        self.sealer = Sealer(self.store, self.keys, hub_id=hub_id, forward=True)
        self._added: asyncio.Event | None = None
        self.readings = 0

    def _after(self, device_id: str) -> int:
        last = self.store.last_seq(device_id)
        return 0 if last is None else last + 1

    @property
    def enrolment(self) -> tuple[str, str, str]:
        """(hub id, batch key JWK, log verifier key): what `glucohub hubs add` takes."""
        return (
            self.hub_id,
            json.dumps(self.keys.batch_jwk, sort_keys=True),
            self.keys.log_verifier_key,
        )

    def produce(self, now: datetime, rng: random.Random) -> int:
        """Store one reading per patient and seal them: one batch and one checkpoint."""
        readings = []
        for device in self._devices:
            seq = self._next_seq[device.device_id]
            self._next_seq[device.device_id] = seq + 1
            readings.append(
                Reading(
                    patient_id=device.patient_id,
                    device_id=device.device_id,
                    kind=ReadingKind.CGM_GLUCOSE,
                    value=float(rng.randint(60, 250)),
                    unit=Unit.MG_DL,
                    time=now,
                    source=Source.VIRTUAL,
                    seq=seq,
                )
            )
        stored = len(self.store.write(readings).stored)
        self.sealer.seal(10_000, now)
        self.readings += stored
        if self._added is not None:
            self._added.set()
        return stored

    # -- the Outbox protocol of device_adapters.mqtt.upstream ---------------------------

    def attach(self) -> None:
        """Bind the outbox's wake-up to the running event loop (one per `asyncio.run`)."""
        self._added = asyncio.Event()

    async def pending(self, limit: int) -> list[OutboxItem]:
        if self._added is not None:
            self._added.clear()
        return [
            OutboxItem(item_id=i, topic=t, payload=p)
            for i, t, p in self.store.outbox_pending(limit)
        ]

    async def mark_sent(self, item_id: int) -> None:
        self.store.outbox_mark_sent(item_id, utc_now())

    async def wait_for_new(self) -> None:
        if self._added is None:
            self.attach()
        assert self._added is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._added.wait(), timeout=1.0)

    def outbox_empty(self) -> bool:
        return not self.store.outbox_pending(1)

    def close(self) -> None:
        self.store.close()


def broker_config(mqtt_url: str, client_id: str) -> BrokerConfig:
    host, port, tls = parse_broker_url(mqtt_url, "--mqtt-url")
    return BrokerConfig(host=host, port=port, tls=tls, client_id=client_id, config_key="simulate")


async def forward_until_sent(
    hubs: Sequence[SimulatedHub], mqtt_url: str, produce: Awaitable[None] | None = None
) -> None:
    """Forward every hub's outbox until it is empty (after `produce`, an awaitable, ends)."""
    async with asyncio.TaskGroup() as tasks:
        runners = []
        for hub in hubs:
            hub.attach()
            connection = MqttConnection(broker_config(mqtt_url, f"{hub.hub_id}-upstream"))
            forwarder = UpstreamForwarder(connection=connection, outbox=hub)
            runners.append(tasks.create_task(connection.run()))
            runners.append(tasks.create_task(forwarder.run()))
        if produce is not None:
            await produce
        while not all(hub.outbox_empty() for hub in hubs):  # noqa: ASYNC110 - another store's rows
            await asyncio.sleep(0.1)
        for runner in runners:
            runner.cancel()


@dataclass(frozen=True, slots=True, kw_only=True)
class SimulationResult:
    hubs: int
    batches: int
    readings: int


async def simulate(
    hubs: Sequence[SimulatedHub],
    *,
    mqtt_url: str,
    rate: float,
    batches: int,
    seed: int = 1,
) -> SimulationResult:
    """Each hub seals a batch every 1/`rate` seconds, `batches` times (0: until cancelled),
    and forwards them; returns once everything sealed has been acknowledged by the broker."""
    rng = random.Random(seed)
    sealed_before = sum(hub.sealer.tree_size for hub in hubs)  # hubs reused from a --data-dir

    async def one(hub: SimulatedHub, offset: float) -> None:
        await asyncio.sleep(offset)  # spread the hubs over one period
        count = 0
        while batches == 0 or count < batches:
            hub.produce(utc_now(), rng)
            count += 1
            await asyncio.sleep(1.0 / rate)

    async def produce_all() -> None:
        async with asyncio.TaskGroup() as tasks:
            for hub in hubs:
                tasks.create_task(one(hub, rng.random() / rate))

    await forward_until_sent(hubs, mqtt_url, produce_all())
    return SimulationResult(
        hubs=len(hubs),
        batches=sum(hub.sealer.tree_size for hub in hubs) - sealed_before,
        readings=sum(hub.readings for hub in hubs),
    )


def open_hubs(root: Path, count: int, patients: int, prefix: str) -> list[SimulatedHub]:
    return [
        SimulatedHub(root / f"{prefix}-{i:04d}", f"{prefix}-{i:04d}", patients)
        for i in range(count)
    ]


@contextlib.contextmanager
def hubs_directory(data_dir: Path | None) -> Iterator[Path]:
    """`data_dir`, or a temporary directory removed afterwards."""
    if data_dir is not None:
        data_dir.mkdir(parents=True, exist_ok=True)
        yield data_dir
        return
    with tempfile.TemporaryDirectory(prefix="glucohub-simulate-") as name:
        yield Path(name)


def run_simulate(
    *,
    hubs: int,
    patients: int,
    rate: float,
    batches: int,
    mqtt_url: str,
    data_dir: Path | None,
    prefix: str,
    enrol_file: Path | None,
    enrol_into: str,
) -> SimulationResult:
    """The `glucohub simulate` command: print (or write) the enrolment lines, enrol the hubs
    into a clinic archive when asked, then run."""
    from glucohub.clinic import enrolment_command

    broker_config(mqtt_url, "check")  # a bad URL is refused before anything is made
    with hubs_directory(data_dir) as root:
        simulated = open_hubs(root, hubs, patients, prefix)
        try:
            lines = [enrolment_command(*hub.enrolment) for hub in simulated]
            if enrol_file is not None:
                enrol_file.write_text("".join(line + "\n" for line in lines))
            elif not enrol_into:  # enrolled below: the lines would only be noise to paste
                print("\n".join(lines), flush=True)
            if enrol_into:
                from gateway.storage.postgres_clinic import ClinicArchive

                archive = ClinicArchive(enrol_into)
                try:
                    for hub in simulated:
                        archive.enrol(*hub.enrolment, utc_now())
                finally:
                    archive.close()
                print(f"enrolled {len(simulated)} hubs in the clinic archive", flush=True)
            return asyncio.run(simulate(simulated, mqtt_url=mqtt_url, rate=rate, batches=batches))
        finally:
            for hub in simulated:
                hub.close()
