"""A stored record that cannot be sealed is quarantined; the hub seals the rest and stays up.

Such rows reach the database from an older release, a restored backup or a hand edit; the
ingest path refuses them today. They are planted here with sqlite3, as that damage would be.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.storage.rows import (
    QUARANTINED,
)
from gateway.store import (
    DB_FILENAME,
    Store,
)
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.runtime import Running, run_hub

ORIGIN = Origin(source=Source.MQTT, topic="test")


def cgm(seq: int, at: datetime) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0 + seq,
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=seq,
    )


def plant_poison(data_dir: Path) -> None:
    db = sqlite3.connect(data_dir / DB_FILENAME)
    columns = (
        "patient_id, device_id, kind, value, unit, time, time_ms, seq, source, status, dedupe_key"
    )
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # A seq past 2^53 has no I-JSON form (RFC 8785 refuses it); a time with a quote would
    # break the record's JSON; a ledger event whose body is not JSON.
    db.execute(
        f"INSERT INTO readings ({columns}) VALUES ('p1','cgm-1','cgm_glucose',99,'mg/dL',?,0,"
        f"{2**60},'mqtt','','poison-seq')",
        (now,),
    )
    db.execute(
        f"INSERT INTO readings ({columns}) VALUES ('p1','cgm-1','cgm_glucose',99,'mg/dL',"
        "'2026-01-01\"T','0',NULL,'mqtt','','poison-time')"
    )
    db.execute("INSERT INTO ledger_events (patient_id, body) VALUES ('p1', '{not json')")
    db.commit()
    db.close()


async def run_once(data_dir: Path, readings: list[Reading]) -> dict[str, object]:
    """Run the hub, submit `readings`, wait until all are sealed, read /healthz, stop."""
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    ready = asyncio.Event()
    stop = asyncio.Event()
    box: list[Running] = []

    def on_ready(running: Running) -> None:
        box.append(running)
        ready.set()

    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        running = box[0]
        assert (await running.hub.submit(origin=ORIGIN, readings=readings)).accepted == len(
            readings
        )
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                async with http.get(f"{running.url}/healthz") as response:
                    health = await response.json()
                if health["queues"]["unsealed_readings"] == 0:
                    break
                await asyncio.sleep(0.1)
        return dict(health)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        assert task.exception() is None


async def test_poison_records_are_quarantined_and_the_hub_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path)
    store.add_patient(Patient(patient_id="p1", display_name="Ann"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()
    now = datetime.now(UTC).replace(microsecond=0)
    await run_once(tmp_path, [cgm(i, now - timedelta(minutes=30 - i)) for i in range(5)])
    plant_poison(tmp_path)

    with caplog.at_level(logging.CRITICAL, logger="gateway.sealing"):
        health = await run_once(tmp_path, [cgm(i, now - timedelta(minutes=20 - i)) for i in (5, 6)])
    assert health["status"] == "degraded"
    assert health["ledger"] == {"tree_size": 2, "quarantined": 3}
    critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 3 and all("QUARANTINED" in m for m in critical)

    # Restarted, the hub seals new readings past the quarantined ones, again and again.
    for start in (7, 9):
        health = await run_once(tmp_path, [cgm(start, now), cgm(start + 1, now)])
        assert health["ledger"] == {"tree_size": 2 + (start - 5) // 2, "quarantined": 3}

    report = verify_data_dir(tmp_path, "glucohub-local")
    assert report.ok, report.message
    assert report.readings == 11  # every good reading, none of the poison
    store = Store(tmp_path, read_only=True)
    try:
        assert [(q.record, q.patient_id) for q in store.quarantined()] == [
            ("reading", "p1"),
            ("reading", "p1"),
            ("event", "p1"),
        ]
        assert store.count_unsealed() == 0
        poison = store._db.execute(
            "SELECT COUNT(*) FROM readings WHERE batch_seq = ?", (QUARANTINED,)
        ).fetchone()
        assert poison == (2,)  # kept, not deleted
    finally:
        store.close()
