"""A hub whose clock steps while it runs (no battery clock, NTP arriving late): readings keep
their device times and their order, none is refused, and each step is in the ledger."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import IngestOutcome, Origin, ReadingSink
from gateway.settings import load_settings
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.runtime import run_hub

TRUE_START = datetime(2026, 12, 6, 4, 0, tzinfo=UTC)


class SteppingClock:
    """The system clock of a hub: real monotonic time, and a wall clock the test steps."""

    def __init__(self) -> None:
        self._mono0 = time.monotonic()
        self.offset = timedelta(0)

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return TRUE_START + timedelta(seconds=time.monotonic() - self._mono0) + self.offset


def cgm(minute: int) -> Reading:
    """A CGM reading dated by the sensor, on the true timeline."""
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0 + minute,
        unit=Unit.MG_DL,
        time=TRUE_START + timedelta(minutes=minute),
        source=Source.MQTT,
        seq=minute + 100,
    )


@pytest.mark.slow
async def test_forward_and_backward_steps(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data_dir = tmp_path / "hub"
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.3",
            "GLUCOHUB_HUB__CLOCK_JUMP_THRESHOLD_S": "5",
        },
    )
    clock = SteppingClock()
    stop = asyncio.Event()
    outcomes: list[IngestOutcome] = []

    async def send(sink: ReadingSink, minutes: range) -> None:
        for minute in minutes:  # one message per reading, as a CGM uploader sends them
            outcomes.append(
                await sink.submit(origin=Origin(source=Source.MQTT), readings=[cgm(minute)])
            )

    async def source(sink: ReadingSink, _clock: object) -> None:
        await send(sink, range(0, 3))  # minutes 0-2: the clock is right
        await asyncio.sleep(1.5)
        clock.offset = timedelta(hours=-1)  # the clock steps back an hour
        await asyncio.sleep(2.5)  # the watch looks once a second
        # The sensor's times are now an hour "ahead" of the hub's clock; still stored.
        await send(sink, range(3, 6))
        clock.offset = timedelta(hours=2)  # then an hour ahead of the truth
        await asyncio.sleep(2.5)
        await send(sink, range(6, 9))
        await asyncio.sleep(1.0)  # the last batch seals
        stop.set()

    with caplog.at_level(logging.WARNING, logger="glucohub.clock"):
        await asyncio.wait_for(
            run_hub(settings, sources=[source], stop=stop, clock=clock), timeout=60
        )

    assert outcomes == [IngestOutcome(accepted=1)] * 9, "none refused, none a duplicate"
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT seq, time, batch_seq FROM readings ORDER BY id").fetchall()
        events = db.execute(
            "SELECT patient_id, body, batch_seq FROM ledger_events ORDER BY id"
        ).fetchall()
        dead = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
    finally:
        db.close()
    assert dead == 0
    # stored in arrival order, each with the sensor's own time
    assert [r[0] for r in rows] == list(range(100, 109))
    assert [r[1] for r in rows] == [f"2026-12-06T04:{minute:02}:00.000Z" for minute in range(9)]
    assert all(r[2] is not None for r in rows), "every reading sealed"

    jumps = [(p, json.loads(b), s) for p, b, s in events]
    assert [(p, body["type"], body["direction"]) for p, body, _ in jumps] == [
        ("", "hub_clock_jump", "backward"),
        ("", "hub_clock_jump", "forward"),
    ]
    assert abs(float(jumps[0][1]["jump_s"]) + 3600) < 2
    assert abs(float(jumps[1][1]["jump_s"]) - 3 * 3600) < 2
    assert all(s is not None for _, _, s in jumps), "the jumps are sealed in the ledger"

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "the hub's clock jumped backward by 3600" in warnings[0]
    assert "the hub's clock jumped forward by 10800" in warnings[1]
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message
