"""A hub that starts with its clock far behind (no battery clock, before NTP) receives a day
of readings from two devices: none refused, none re-dated or reordered, the situation in the
ledger; then NTP steps the clock forward. A device years ahead of a hub whose clock other
devices confirm is still refused, saying why."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import IngestOutcome, Origin, ReadingSink
from gateway.settings import Settings, load_settings
from gateway.storage.opening import open_storage
from gateway.store import Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.cli import main
from glucohub.runtime import run_hub

TRUE_START = datetime(2026, 12, 5, 6, 0, tzinfo=UTC)
BEHIND = timedelta(days=3)


class HubClock:
    """The hub's system clock under the test's control: `advance` moves the wall and the
    monotonic clock together (time passing); `step` moves the wall alone (NTP); real time
    passes too. `synchronized` is what the kernel would say."""

    def __init__(self, wall: datetime) -> None:
        self._mono0 = time.monotonic()
        self._wall0 = wall
        self._advanced = 0.0
        self._stepped = timedelta(0)
        self.synchronized = False

    def monotonic(self) -> float:
        return time.monotonic() - self._mono0 + self._advanced

    def now(self) -> datetime:
        return self._wall0 + timedelta(seconds=self.monotonic()) + self._stepped

    def advance(self, seconds: float) -> None:
        self._advanced += seconds

    def step(self, by: timedelta) -> None:
        self._stepped += by


def register(data_dir: Path, url: str = "") -> None:
    store = open_storage(data_dir, url)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    for device, kind in (("cgm-1", DeviceKind.CGM), ("meter-1", DeviceKind.METER)):
        store.add_device(
            Device(device_id=device, patient_id="p1", kind=kind, transport=Transport.MQTT)
        )
    store.close()


def settings(data_dir: Path, url: str = "") -> Settings:
    return load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_STORAGE__URL": url,
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.3",
            "GLUCOHUB_HUB__CLOCK_JUMP_THRESHOLD_S": "5",
        },
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        return ""
    return str(request.getfixturevalue("postgres_url"))


def reading(device: str, at: datetime, seq: int) -> Reading:
    kind = ReadingKind.CGM_GLUCOSE if device == "cgm-1" else ReadingKind.GLUCOSE
    return Reading(
        patient_id="p1",
        device_id=device,
        kind=kind,
        value=90.0 + seq % 50,
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
        seq=seq,
    )


def day_of_readings() -> list[Reading]:
    """A CGM every 5 minutes for a day; a fingerstick every 3 hours, a minute after it."""
    sent: list[Reading] = []
    for i in range(288):
        at = TRUE_START + timedelta(minutes=5 * i)
        sent.append(reading("cgm-1", at, i))
        if i % 36 == 0:
            sent.append(reading("meter-1", at + timedelta(minutes=1), i // 36))
    return sent


@pytest.mark.slow
async def test_a_hub_three_days_behind_stores_a_day_and_keeps_it_through_the_ntp_step(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    storage_url: str,
) -> None:
    data_dir = tmp_path / "hub"
    register(data_dir, storage_url)
    clock = HubClock(TRUE_START - BEHIND)
    stop = asyncio.Event()
    outcomes: list[IngestOutcome] = []
    day = day_of_readings()
    after_ntp = [
        reading("cgm-1", TRUE_START + timedelta(days=1, minutes=5 * i), 288 + i) for i in range(3)
    ]

    async def send(sink: ReadingSink, one: Reading, behind: timedelta) -> None:
        # the hub's clock runs on as the devices' time goes by, `behind` them
        clock.advance((one.time - (clock.now() + behind)).total_seconds())
        outcomes.append(await sink.submit(origin=Origin(source=Source.MQTT), readings=[one]))

    async def devices(sink: ReadingSink, _clock: object) -> None:
        for one in day:
            await send(sink, one, BEHIND)
        await asyncio.sleep(0.5)  # the day's last batch seals
        clock.step(BEHIND)  # NTP answers: the clock steps three days forward
        clock.synchronized = True
        await asyncio.sleep(2.5)  # the watch looks once a second
        for one in after_ntp:
            await send(sink, one, timedelta(0))
        await asyncio.sleep(1.0)
        stop.set()

    await asyncio.wait_for(
        run_hub(
            settings(data_dir, storage_url),
            sources=[devices],
            stop=stop,
            clock=clock,
            clock_sync=lambda: clock.synchronized,
        ),
        timeout=120,
    )

    sent = [*day, *after_ntp]
    assert len(sent) == 299 and outcomes == [IngestOutcome(accepted=1)] * 299
    store = open_storage(data_dir, storage_url, read_only=True)
    try:
        sealed: list[Reading] = []
        events: list[dict[str, object]] = []
        for seq in store.batch_seqs():
            sealed += store.batch_readings(seq)
            events += store.batch_events(seq)
        shown = list(store.readings(patient_id="p1"))
        dead = store.dead_letters()
    finally:
        store.close()
    assert dead == []
    # sealed in arrival order, each with its device's own time (equality: time, value, seq)
    assert sealed == sent
    assert shown == sent  # and by time, the same order: the day is intact
    # received by the hub's clock: three days "before" the devices' times during the day,
    # on time after the step (to within the seconds the hub took)
    lags = [r.time - r.received_at for r in shown if r.received_at is not None]
    assert len(lags) == 299
    assert all(BEHIND - timedelta(seconds=5) < lag <= BEHIND for lag in lags[:296])
    assert all(timedelta(seconds=-5) < lag <= timedelta(0) for lag in lags[296:])

    # the ledger says so: the hub found behind by the devices' times, then the step forward
    clock_events = [e for e in events if e["type"] == "hub_clock_jump"]
    assert [e["direction"] for e in clock_events] == ["behind", "forward"]
    behind, forward = clock_events
    assert behind["expected"] == "2026-12-05T06:00:00.000Z"  # the first CGM reading's time
    assert abs(float(str(behind["jump_s"])) + BEHIND.total_seconds()) < 5
    assert behind["evidence"] == "the kernel reports the clock unsynchronized; device cgm-1"
    assert abs(float(str(forward["jump_s"])) - BEHIND.total_seconds()) < 5

    report = verify_data_dir(data_dir, "glucohub-local", storage_url=storage_url)
    assert report.ok, report.message
    assert report.readings == 299

    # the export lists the day in its order, each reading with both times
    monkeypatch.setenv("GLUCOHUB_STORAGE__URL", storage_url)
    assert main(["export", "--data-dir", str(data_dir)]) == 0
    exported = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["device_id"], e["seq"]) for e in exported] == [(r.device_id, r.seq) for r in sent]
    first = exported[0]
    assert first["time"] == "2026-12-05T06:00:00.000Z"
    assert first["received_at"].startswith("2026-12-02T06:00:0")  # the hub's clock then


@pytest.mark.slow
async def test_a_device_two_years_ahead_is_refused_while_the_other_agrees_with_the_hub(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "hub"
    register(data_dir)
    clock = HubClock(TRUE_START)  # right, though the kernel does not know it yet
    stop = asyncio.Event()
    outcomes: list[IngestOutcome] = []

    async def devices(sink: ReadingSink, _clock: object) -> None:
        on_time = reading("cgm-1", clock.now() - timedelta(seconds=30), 1)
        far = reading("meter-1", clock.now() + timedelta(days=730), 1)
        # an unregistered device saying the same is no second opinion
        stranger = dataclasses.replace(far, device_id="meter-x")
        for one in (on_time, stranger, far):
            outcomes.append(await sink.submit(origin=Origin(source=Source.MQTT), readings=[one]))
        stop.set()

    await asyncio.wait_for(
        run_hub(
            settings(data_dir),
            sources=[devices],
            stop=stop,
            clock=clock,
            clock_sync=lambda: clock.synchronized,
        ),
        timeout=60,
    )

    assert outcomes == [IngestOutcome(accepted=1)] + [IngestOutcome(rejected=1)] * 2
    store = Store(data_dir)
    try:
        unknown, letter = store.dead_letters()
        assert store.count_unsealed_events() == 0  # all sealed at shutdown
        clock_events = [
            e
            for seq in store.batch_seqs()
            for e in store.batch_events(seq)
            if e["type"] == "hub_clock_jump"
        ]
    finally:
        store.close()
    assert unknown.reason == "unknown_device" and unknown.device_id == "meter-x"
    assert letter.reason == "future_time" and letter.device_id == "meter-1"
    assert letter.detail.endswith(" s in the future (device cgm-1 agrees with the hub's clock)")
    assert clock_events == []
