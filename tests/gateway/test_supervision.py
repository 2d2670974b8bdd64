"""Supervised sources: a source that fails is logged, restarted with capped, jittered exponential
backoff and shown in /healthz; the hub keeps ingesting from the others meanwhile."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import Clock
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin, ReadingSink
from gateway.settings import load_settings
from gateway.store import Store
from gateway.supervision import Backoff, SourceState, SourceStatus, describe, supervise
from gateway.units import Unit
from glucohub.runtime import Running, run_hub


class Recorder:
    """A fake sleep that records the delays it is asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


async def test_failing_source_restarts_with_capped_exponential_backoff_then_delivers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0
    delivered: list[str] = []

    async def source() -> None:
        nonlocal runs
        runs += 1
        if runs <= 6:
            raise OverflowError("date value out of range")
        delivered.append("reading")

    status = SourceStatus()
    sleep = Recorder()
    jitters = iter([0.0, 0.0, 0.0, 0.0, 0.0, 0.999999])
    with caplog.at_level(logging.ERROR, logger="glucohub.supervision"):
        await supervise(
            "ble:meter-9",
            source,
            status,
            backoff=Backoff(first_s=1.0, cap_s=8.0, healthy_after_s=60.0),
            monotonic=lambda: 0.0,  # every run "lasts" 0 s: failures keep counting up
            sleep=sleep,
            jitter=lambda: next(jitters),
        )
    assert delivered == ["reading"] and runs == 7
    # jitter 0 halves the base delay 1, 2, 4, 8, 8 (capped); jitter ~1 keeps the whole cap
    assert sleep.delays[:5] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert sleep.delays[5] == pytest.approx(8.0, abs=1e-4)
    assert status.state is SourceState.FINISHED and status.restarts == 6
    assert status.last_error == "OverflowError: date value out of range"
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 6
    first = errors[0].getMessage().splitlines()[0]
    assert "ble:meter-9" in first and "OverflowError: date value out of range" in first


async def test_a_long_healthy_run_resets_the_backoff() -> None:
    clock = iter([0.0, 0.0, 10.0, 20.0, 30.0, 130.0, 200.0])  # (start, failure) per run
    runs = 0

    async def source() -> None:
        nonlocal runs
        runs += 1
        if runs <= 3:
            raise RuntimeError("link lost")

    sleep = Recorder()
    await supervise(
        "mqtt:consumer",
        source,
        SourceStatus(),
        backoff=Backoff(first_s=1.0, cap_s=60.0, healthy_after_s=60.0),
        monotonic=lambda: next(clock),
        sleep=sleep,
        jitter=lambda: 0.0,
    )
    # run 1 failed at once (0.5), run 2 after 10 s (1.0), run 3 after 100 s: healthy, so 0.5
    assert sleep.delays == [0.5, 1.0, 0.5]


def test_secrets_in_exception_messages_are_not_logged_or_shown() -> None:
    text = describe(ConnectionError("cannot reach mqtts://hub:hunter2@broker.local:8883/x"))
    assert "hunter2" not in text
    assert text == "ConnectionError: cannot reach mqtts://***@broker.local:8883/x"
    group = ExceptionGroup("source", [ValueError("a"), KeyError("b")])
    assert describe(group) == "ExceptionGroup: [ValueError: a; KeyError: 'b']"


async def test_cancellation_during_backoff_stops_the_supervisor() -> None:
    async def source() -> None:
        raise RuntimeError("boom")

    status = SourceStatus()
    task = asyncio.create_task(supervise("source-0", source, status, backoff=Backoff(first_s=30.0)))
    for _ in range(100):
        if status.state is SourceState.RESTARTING:
            break
        await asyncio.sleep(0)
    assert status.state is SourceState.RESTARTING
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def _register(data_dir: Path) -> None:
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    for device_id in ("steady-1", "flaky-1"):
        store.add_device(
            Device(
                device_id=device_id,
                patient_id="p1",
                kind=DeviceKind.CGM,
                transport=Transport.MQTT,
            )
        )
    store.close()


def _reading(device_id: str, seq: int) -> Reading:
    return Reading(
        patient_id="p1",
        device_id=device_id,
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0 + seq % 50,
        unit=Unit.MG_DL,
        time=datetime.now(UTC) - timedelta(minutes=500 - seq),
        source=Source.MQTT,
        seq=seq,
    )


async def test_hub_keeps_ingesting_while_a_failing_source_restarts(data_dir: Path) -> None:
    _register(data_dir)
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    flaky_runs = 0
    steady_stored_during_backoff = asyncio.Event()
    health_while_failing: list[dict[str, object]] = []

    async def flaky(sink: ReadingSink, clock: Clock) -> None:
        nonlocal flaky_runs
        flaky_runs += 1
        if flaky_runs <= 2:
            raise OverflowError("date value out of range")
        await steady_stored_during_backoff.wait()
        await sink.submit(origin=Origin(source=Source.MQTT), readings=[_reading("flaky-1", 1)])

    async def steady(sink: ReadingSink, clock: Clock) -> None:
        seq = 0
        while True:
            seq += 1
            await sink.submit(
                origin=Origin(source=Source.MQTT), readings=[_reading("steady-1", seq)]
            )
            running = ready.result() if ready.done() else None
            if running is not None and flaky_runs == 2 and not health_while_failing:
                health_while_failing.append(running.hub.health())
                steady_stored_during_backoff.set()
            await asyncio.sleep(0.01)

    hub = asyncio.create_task(
        run_hub(
            settings,
            sources=[flaky, steady],
            stop=stop,
            on_ready=ready.set_result,
            source_backoff=Backoff(first_s=0.2, cap_s=0.4),
        )
    )
    running = await asyncio.wait_for(ready, 10)
    try:
        for _ in range(200):
            task = running.hub.source_status.get("source-0")
            if task is not None and task.state is SourceState.FINISHED:
                break
            assert not hub.done(), "the hub exited"
            await asyncio.sleep(0.05)
        assert running.hub.source_status["source-0"].state is SourceState.FINISHED
        final_health = running.hub.health()
    finally:
        stop.set()
        await asyncio.wait_for(hub, 20)

    (during,) = health_while_failing
    assert during["status"] == "degraded"
    sources = during["sources"]
    assert isinstance(sources, dict)
    assert sources["source-0"]["task"]["state"] == "restarting"
    assert sources["source-0"]["task"]["last_error"] == "OverflowError: date value out of range"
    assert sources["source-1"]["task"]["state"] == "running"
    assert final_health["status"] == "ok"
    assert final_health["sources"]["source-0"]["task"]["restarts"] == 2  # type: ignore[index]

    store = Store(data_dir)
    try:
        steady_last, flaky_last = store.last_seq("steady-1"), store.last_seq("flaky-1")
    finally:
        store.close()
    assert flaky_last == 1  # the restarted source delivered
    assert steady_last is not None and steady_last > 5  # the other kept flowing throughout
