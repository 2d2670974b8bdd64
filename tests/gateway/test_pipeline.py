"""The running pipeline in-process: validation, durability callbacks, sealing, fan-out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway import pipeline as pipeline_module
from gateway.clock import SystemClock
from gateway.model import (
    Device,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import (
    BatchSealed,
    IngestOutcome,
    LiveEvent,
    Origin,
    ReadingSink,
    ReadingsStored,
    RejectReason,
)
from gateway.settings import Settings, load_settings
from gateway.store import Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.runtime import Running, run_hub

ORIGIN = Origin(source=Source.MQTT, topic="glucohub/v1/p1/cgm-1/readings", raw=b"{}")


def settings_for(data_dir: Path, **env: str) -> Settings:
    base = {
        "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
        "GLUCOHUB_DASHBOARD__ENABLED": "false",
        "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "100",
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
    }
    base.update({f"GLUCOHUB_{k.upper()}": v for k, v in env.items()})
    return load_settings(None, base)


def register(data_dir: Path) -> None:
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()


def cgm(seq: int, value: float = 110.0, at: datetime | None = None) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=at or datetime.now(UTC) - timedelta(minutes=1000 - seq),
        source=Source.MQTT,
        seq=seq,
    )


class HubUnderTest:
    def __init__(self) -> None:
        self.ready = asyncio.Event()
        self.stop = asyncio.Event()
        self.running: Running | None = None

    def on_ready(self, running: Running) -> None:
        self.running = running
        self.ready.set()

    @property
    def sink(self) -> ReadingSink:
        assert self.running is not None
        return self.running.hub


@pytest.fixture
async def hub(data_dir: Path) -> AsyncIterator[HubUnderTest]:
    async with running_hub(data_dir) as under_test:
        yield under_test


@contextlib.asynccontextmanager
async def running_hub(data_dir: Path, **env: str) -> AsyncIterator[HubUnderTest]:
    """A registered hub run in-process until the block ends, then stopped cleanly."""
    register(data_dir)
    under_test = HubUnderTest()
    task = asyncio.create_task(
        run_hub(
            settings_for(data_dir, **env),
            stop=under_test.stop,
            on_ready=under_test.on_ready,
            # This hub's clock is right, whatever the test machine's kernel says: a reading
            # ahead of it is the device's error (tests/glucohub/test_clock_lag.py: otherwise).
            clock_sync=lambda: True,
        )
    )
    await asyncio.wait_for(under_test.ready.wait(), 10)
    try:
        yield under_test
    finally:
        under_test.stop.set()
        await asyncio.wait_for(task, 20)


async def test_good_readings_are_stored_and_sealed(hub: HubUnderTest, data_dir: Path) -> None:
    outcome = await hub.sink.submit(origin=ORIGIN, readings=[cgm(i) for i in range(250)])
    assert outcome == IngestOutcome(accepted=250)
    hub.stop.set()
    await asyncio.sleep(0.5)
    for _ in range(100):
        report = verify_data_dir(data_dir, "glucohub-local")
        if report.readings == 250:
            break
        await asyncio.sleep(0.1)
    assert report.ok, report.message
    assert report.readings == 250
    assert report.batches == 3  # 100 + 100 + 50: batch_max_readings is 100


async def test_bad_readings_become_dead_letters_with_reasons(
    hub: HubUnderTest, data_dir: Path
) -> None:
    stranger = Reading(
        patient_id="p1",
        device_id="unknown-9",
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0,
        unit=Unit.MG_DL,
        time=datetime.now(UTC),
        source=Source.MQTT,
        seq=1,
    )
    future = cgm(2, at=datetime.now(UTC) + timedelta(hours=1))
    outcomes = [
        await hub.sink.submit(origin=ORIGIN, readings=[one])
        for one in (cgm(1), cgm(3, value=5.0), stranger, future)
    ]
    assert outcomes == [IngestOutcome(accepted=1)] + [IngestOutcome(rejected=1)] * 3
    assert hub.running is not None
    text = hub.running.hub.prometheus_text()
    for reason in ("out_of_range", "unknown_device", "future_time"):
        assert f'glucohub_readings_rejected_total{{reason="{reason}"}} 1' in text
    assert "glucohub_readings_ingested_total 1" in text
    store = Store(data_dir)
    reasons = sorted(letter.reason for letter in store.dead_letters())
    store.close()
    assert reasons == sorted(
        r.value
        for r in (RejectReason.OUT_OF_RANGE, RejectReason.UNKNOWN_DEVICE, RejectReason.FUTURE_TIME)
    )


async def test_a_message_is_stored_all_or_nothing(hub: HubUnderTest, data_dir: Path) -> None:
    """One bad reading in an array: the whole message is one dead letter, nothing stored."""
    outcome = await hub.sink.submit(
        origin=ORIGIN, readings=[cgm(1), cgm(2, value=5.0), cgm(3, value=2000.0), cgm(4)]
    )
    assert outcome == IngestOutcome(rejected=4)
    assert await hub.sink.submit(origin=ORIGIN, readings=[cgm(1)]) == IngestOutcome(accepted=1)
    assert hub.running is not None
    text = hub.running.hub.prometheus_text()
    assert 'glucohub_readings_rejected_total{reason="out_of_range"} 1' in text
    store = Store(data_dir)
    letters = store.dead_letters()
    seqs = [r.seq for r in store.readings()]
    store.close()
    assert [(d.reason, d.payload) for d in letters] == [("out_of_range", ORIGIN.raw)]
    assert "reading 1" in letters[0].detail
    assert seqs == [1]


async def test_a_different_reading_under_a_known_seq_is_a_counted_flagged_conflict(
    hub: HubUnderTest, data_dir: Path
) -> None:
    first = cgm(5, value=110.0)
    assert await hub.sink.submit(origin=ORIGIN, readings=[first]) == IngestOutcome(accepted=1)
    replay = await hub.sink.submit(origin=ORIGIN, readings=[first])
    assert replay == IngestOutcome(duplicates=1)
    reset = cgm(5, value=150.0, at=datetime.now(UTC))  # the device's counter started again
    raw = b'{"kind":"cgm_glucose","value":150,"unit":"mg/dL","seq":5}'
    origin = Origin(source=Source.MQTT, topic=ORIGIN.topic, raw=raw)
    assert await hub.sink.submit(origin=origin, readings=[reset]) == IngestOutcome(rejected=1)
    assert hub.running is not None
    text = hub.running.hub.prometheus_text()
    assert 'glucohub_readings_rejected_total{reason="conflict"} 1' in text
    assert "glucohub_readings_duplicate_total 1" in text
    store = Store(data_dir)
    letters = store.dead_letters()
    events = store.device_events("p1")
    values = [r.value for r in store.readings()]
    store.close()
    assert [(d.reason, d.payload, d.device_id) for d in letters] == [("conflict", raw, "cgm-1")]
    assert [(e.kind, e.device_id, e.seq) for e in events] == [
        (DeviceEventKind.SEQ_CONFLICT, "cgm-1", 5)
    ]
    assert values == [110.0]


async def test_an_input_that_breaks_the_writer_is_a_dead_letter_and_the_hub_runs_on(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defence in depth, with validation switched off: a seq canonical JSON cannot hold
    reaches the store, and a reading makes validation itself raise."""

    def lenient(reading: Reading, *args: object, **kwargs: object) -> None:
        if reading.seq == 666:
            raise ZeroDivisionError("a bug in a validator")

    monkeypatch.setattr(pipeline_module, "validate", lenient)
    async with running_hub(data_dir) as hub:
        huge = await hub.sink.submit(
            origin=ORIGIN, readings=[cgm(1), cgm(2**60, at=datetime.now(UTC))]
        )
        buggy = await hub.sink.submit(origin=ORIGIN, readings=[cgm(666)])
        good = await hub.sink.submit(origin=ORIGIN, readings=[cgm(3), cgm(4)])
        assert (huge, buggy, good) == (
            IngestOutcome(rejected=2),
            IngestOutcome(rejected=1),
            IngestOutcome(accepted=2),
        )
        assert hub.running is not None
        text = hub.running.hub.prometheus_text()
        assert 'glucohub_readings_rejected_total{reason="unstorable"} 2' in text
    store = Store(data_dir)
    letters = store.dead_letters()
    store.close()
    assert [d.reason for d in letters] == ["unstorable", "unstorable"]
    assert str(2**60) in letters[0].detail and "ZeroDivisionError" in letters[1].detail
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message
    assert report.readings == 2


async def test_replays_are_counted_not_stored_twice(hub: HubUnderTest) -> None:
    one, two, three = cgm(1), cgm(2), cgm(3)
    first = await hub.sink.submit(origin=ORIGIN, readings=[one, two])
    again = await hub.sink.submit(origin=ORIGIN, readings=[two, three])
    assert first == IngestOutcome(accepted=2)
    assert again == IngestOutcome(accepted=1, duplicates=1)


async def test_on_durable_runs_only_after_commit(hub: HubUnderTest, data_dir: Path) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    def durable(outcome: IngestOutcome) -> None:
        # At this moment another connection must already see the rows.
        store = Store(data_dir)
        seen.append(store.count_readings())
        store.close()
        done.set()

    await hub.sink.enqueue(origin=ORIGIN, readings=[cgm(i) for i in range(5)], on_durable=durable)
    await asyncio.wait_for(done.wait(), 10)
    assert seen == [5]


async def test_live_events_reach_a_viewer(hub: HubUnderTest) -> None:
    assert hub.running is not None
    events: list[LiveEvent] = []

    async def watch() -> None:
        async for event in hub.running.hub.fanout.subscribe():  # type: ignore[union-attr]
            events.append(event)
            if isinstance(event, BatchSealed):
                return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.05)
    await hub.sink.submit(origin=ORIGIN, readings=[cgm(i) for i in range(3)])
    await asyncio.wait_for(watcher, 10)
    stored = [e for e in events if isinstance(e, ReadingsStored)]
    assert [r.seq for e in stored for r in e.readings] == [0, 1, 2]
    sealed = [e for e in events if isinstance(e, BatchSealed)]
    assert sealed[0].batch.reading_count == 3 and sealed[0].tree_size == 1


async def test_sealing_resumes_after_a_crash_before_sealing(data_dir: Path) -> None:
    register(data_dir)
    store = Store(data_dir)
    store.write([cgm(i) for i in range(30)])  # stored, never sealed: as after a SIGKILL
    store.close()
    stop = asyncio.Event()
    stop.set()  # start, then shut down at once: the shutdown must seal what is stored
    await asyncio.wait_for(run_hub(settings_for(data_dir), stop=stop), 20)
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message
    assert report.readings == 30


def test_clock_is_utc() -> None:
    assert SystemClock().now().utcoffset() == timedelta(0)


async def test_a_snooze_survives_a_restart(data_dir: Path) -> None:
    from gateway.model import AlertKind

    register(data_dir)
    under_test = HubUnderTest()
    settings = settings_for(data_dir)
    task = asyncio.create_task(
        run_hub(settings, stop=under_test.stop, on_ready=under_test.on_ready)
    )
    await asyncio.wait_for(under_test.ready.wait(), 10)
    assert under_test.running is not None
    await under_test.running.alerts.snooze("p1", AlertKind.HIGH, minutes=60, by="dr-who")
    # Crash: no orderly shutdown of the alert stage (the snooze was persisted at once).
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

    again = HubUnderTest()
    task = asyncio.create_task(run_hub(settings, stop=again.stop, on_ready=again.on_ready))
    await asyncio.wait_for(again.ready.wait(), 10)
    try:
        assert again.running is not None
        engine = again.running.alerts._engines["p1"]
        assert engine.snoozed_until(AlertKind.HIGH) is not None  # restored from the store
        now = datetime.now(UTC)
        high = cgm(900, value=200.0, at=now - timedelta(seconds=30))  # high, not urgent
        await again.sink.submit(origin=ORIGIN, readings=[high])
        await asyncio.sleep(0.3)
        assert AlertKind.HIGH not in {a.kind for a in again.running.alerts.open_alerts("p1")}
    finally:
        again.stop.set()
        await asyncio.wait_for(task, 20)


async def test_a_full_batch_is_sealed_without_waiting_for_the_timer(data_dir: Path) -> None:
    """Readings that fill a batch while a checkpoint is being signed still wake the seal
    stage: with the timer at an hour, only the count can seal them."""
    async with running_hub(
        data_dir, ledger__batch_max_readings="20", ledger__batch_max_seconds="3600"
    ) as under_test:
        assert under_test.running is not None
        telemetry = under_test.running.hub.telemetry
        for round_ in range(15):
            # Two full batches back to back: the second is written while the first seals.
            first = range(round_ * 40, round_ * 40 + 20)
            second = range(round_ * 40 + 20, round_ * 40 + 40)
            await under_test.sink.submit(origin=ORIGIN, readings=[cgm(i) for i in first])
            await under_test.sink.submit(origin=ORIGIN, readings=[cgm(i) for i in second])
            expected = (round_ + 1) * 40
            for _ in range(300):
                if telemetry.value("glucohub_ledger_readings_sealed_total") >= expected:
                    break
                await asyncio.sleep(0.01)
            sealed = telemetry.value("glucohub_ledger_readings_sealed_total")
            assert sealed == expected, f"round {round_}: {sealed} of {expected} sealed after 3 s"
