"""Acknowledgements, snoozes and consent changes are sealed within batch_max_seconds, even
when no reading arrives after them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.model import (
    AlertKind,
    Device,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.store import Store
from gateway.units import Unit
from glucohub.runtime import Running, run_hub

MAX_SECONDS = 0.5


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    store = Store(tmp_path)
    store.add_patient(Patient(patient_id="p1", display_name="Ann"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(tmp_path),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": str(MAX_SECONDS),
        },
    )
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
    yield await asyncio.wait_for(ready, 20)
    stop.set()
    await asyncio.wait_for(task, 30)


async def unsealed_events(running: Running) -> int:
    return await running.reader.run(lambda s: s.count_unsealed_events())


async def sealed_within(running: Running, seconds: float) -> bool:
    deadline = asyncio.get_running_loop().time() + seconds
    while asyncio.get_running_loop().time() < deadline:
        if await unsealed_events(running) == 0:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_acknowledgement_and_snooze_are_sealed_without_a_new_reading(
    running: Running,
) -> None:
    low = Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=45.0,
        unit=Unit.MG_DL,
        time=datetime.now(UTC),
        source=Source.MQTT,
        seq=1,
    )
    await running.hub.submit(origin=Origin(source=Source.MQTT), readings=[low])
    for _ in range(100):
        urgent = [a for a in running.alerts.open_alerts("p1") if a.kind is AlertKind.URGENT_LOW]
        if urgent:
            break
        await asyncio.sleep(0.05)
    assert await sealed_within(running, MAX_SECONDS + 1.5)
    (alert,) = urgent
    await running.alerts.acknowledge(alert.alert_id, by="dr")
    assert await unsealed_events(running) > 0  # the acknowledgement is a ledger event
    assert await sealed_within(running, MAX_SECONDS + 1.5)
    await running.alerts.snooze("p1", AlertKind.HIGH, minutes=30, by="dr")
    assert await sealed_within(running, MAX_SECONDS + 1.5)


async def test_a_consent_change_is_sealed_without_a_new_reading(running: Running) -> None:
    # As the dashboard's consent change does: the event is committed, then the hub is told.
    store = Store(running.writer.store.data_dir)
    store.add_ledger_event(
        "p1", {"type": "consent", "event": "consent_granted", "patient_id": "p1"}
    )
    store.close()
    running.hub.ledger_events_written(1)
    for _ in range(int((MAX_SECONDS + 1.5) / 0.05)):
        batches = await running.read_model.latest_batches(5)
        if batches:
            break
        await asyncio.sleep(0.05)
    assert batches and batches[0].reading_count == 0  # the consent event alone
    assert await unsealed_events(running) == 0
