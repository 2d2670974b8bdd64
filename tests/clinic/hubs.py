"""Real hubs for clinic tests: keys, a SQLite store and the real Sealer, no broker."""

from __future__ import annotations

import random
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit
from glucohub.simulate import SimulatedHub

START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def make_hub(directory: Path, hub_id: str, patients: int = 2) -> SimulatedHub:
    return SimulatedHub(directory / hub_id, hub_id, patients)


def produce(
    hub: SimulatedHub, count: int, start_minute: int = 0, *, sent: bool = True
) -> list[tuple[str, bytes]]:
    """Seal `count` batches; return the outbox items they added (topic, payload) in order.
    With `sent`, mark them sent (the test delivers them itself); else the forwarder will."""
    before = {item_id for item_id, _t, _p in hub.store.outbox_pending(100_000)}
    rng = random.Random(start_minute)
    for i in range(count):
        hub.produce(START + timedelta(minutes=start_minute + i), rng)
    items = [i for i in hub.store.outbox_pending(100_000) if i[0] not in before]
    if sent:
        for item_id, _topic, _payload in items:
            hub.store.outbox_mark_sent(item_id, START)
    return [(topic, bytes(payload)) for _id, topic, payload in items]


def copy_hub(hub: SimulatedHub, directory: Path, patients: int = 2) -> SimulatedHub:
    """A second data directory with the same keys and log: a backup restored elsewhere.
    (SQLite in WAL mode: the database and its WAL file copied together, between commits.)"""
    shutil.copytree(hub.data_dir, directory)
    return SimulatedHub(directory, hub.hub_id, patients)


def cgm(hub: SimulatedHub, patient: int, value: float, time: datetime, seq: int) -> Reading:
    """A CGM reading of the hub's patient number `patient` (its `-cgm` device)."""
    patient_id = f"{hub.hub_id}-p{patient}"
    return Reading(
        patient_id=patient_id,
        device_id=f"{patient_id}-cgm",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=time,
        source=Source.VIRTUAL,
        seq=seq,
    )


def seal(
    hub: SimulatedHub, readings: list[Reading], now: datetime, *, sent: bool = True
) -> list[tuple[str, bytes]]:
    """Store `readings` on the hub and seal them (with any ledger events it holds, such as
    consent changes): one batch. Returns the outbox items added, as `produce` does."""
    before = {item_id for item_id, _t, _p in hub.store.outbox_pending(100_000)}
    hub.store.write(readings)
    hub.sealer.seal(10_000, now)
    items = [i for i in hub.store.outbox_pending(100_000) if i[0] not in before]
    if sent:
        for item_id, _topic, _payload in items:
            hub.store.outbox_mark_sent(item_id, now)
    return [(topic, bytes(payload)) for _id, topic, payload in items]
