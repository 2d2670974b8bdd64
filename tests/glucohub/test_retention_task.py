"""`glucohub run` with storage.retention_days removes the readings the clinic acknowledged
long ago, by itself, and keeps the rest; the ledger still verifies."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.settings import load_settings
from gateway.store import Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.runtime import run_hub

HUB = "glucohub-local"


def cgm(time: datetime, seq: int) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=120.0,
        unit=Unit.MG_DL,
        time=time,
        source=Source.MQTT,
        seq=seq,
    )


def hub_with_history(data_dir: Path, now: datetime) -> None:
    """Batch 0: 3 readings of 400 days ago, acknowledged by the clinic broker; batch 1: 2 of
    400 days ago, not acknowledged; batch 2: 2 of yesterday, acknowledged."""
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    init_keys(data_dir, None)
    sealer = Sealer(store, load_keys(data_dir, HUB, None), hub_id=HUB, forward=True)
    old, recent = now - timedelta(days=400), now - timedelta(days=1)
    for readings, sealed_at in (
        (
            [cgm(old, 1), cgm(old + timedelta(minutes=5), 2), cgm(old + timedelta(minutes=10), 3)],
            old,
        ),
        ([cgm(old + timedelta(minutes=15), 4), cgm(old + timedelta(minutes=20), 5)], old),
        ([cgm(recent, 6), cgm(recent + timedelta(minutes=5), 7)], recent),
    ):
        store.write(readings)
        sealer.seal(100, sealed_at + timedelta(hours=1))
    batches = [r for r in store.outbox_pending(100) if r[1].endswith("/batches")]
    store.outbox_mark_sent(batches[0][0], now)
    store.outbox_mark_sent(batches[2][0], now)
    store.close()


async def test_the_running_hub_removes_acknowledged_old_readings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data_dir = tmp_path / "hub"
    hub_with_history(data_dir, datetime.now(UTC))
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_STORAGE__RETENTION_DAYS": "365",
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
        },
    )
    stop = asyncio.Event()
    caplog.set_level(logging.INFO, logger="glucohub")
    hub = asyncio.create_task(run_hub(settings, stop=stop))
    try:
        for _ in range(100):
            if any("retention: removed 3 readings of 1" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await hub
    store = Store(data_dir, read_only=True)
    try:
        assert [r.seq for r in store.readings()] == [4, 5, 6, 7]
        assert store.pruned_batch_seqs(0, 10) == {0}
    finally:
        store.close()
    report = verify_data_dir(data_dir, HUB)
    assert report.ok and "1 batches' readings removed by retention" in report.message


def test_retention_shorter_than_the_oldest_accepted_reading_is_refused() -> None:
    # A reading replayed after its stored copy was removed must be refused as too old, never
    # stored twice: so retention may not be shorter than pipeline.max_past_age_days.
    with pytest.raises(ConfigError, match=r"storage\.retention_days"):
        load_settings(None, {"GLUCOHUB_STORAGE__RETENTION_DAYS": "90"})
    settings = load_settings(
        None,
        {"GLUCOHUB_STORAGE__RETENTION_DAYS": "90", "GLUCOHUB_PIPELINE__MAX_PAST_AGE_DAYS": "90"},
    )
    assert settings.storage.retention_days == 90
    assert load_settings(None, {}).storage.retention_days == 0
