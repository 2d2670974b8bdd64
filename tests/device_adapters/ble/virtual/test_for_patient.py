"""The demo path: virtual devices fed from the simulator, through the real adapter."""

import asyncio
from datetime import UTC, datetime, timedelta

from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.virtual import VirtualCgm, VirtualHeartRateStrap, VirtualMeter
from device_adapters.virtual.physiology import cgm_trace, demo_profile, meter_samples
from gateway.model import Device, DeviceKind, ReadingKind, Transport

from ..fakes import FakeSink, no_sleep

NOW = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)


class StepClock:
    def __init__(self, now: datetime) -> None:
        self.t = now

    def now(self) -> datetime:
        return self.t

    def monotonic(self) -> float:
        return self.t.timestamp()


def _device(kind: DeviceKind) -> Device:
    return Device(device_id=f"{kind}-1", patient_id="p1", kind=kind, transport=Transport.BLE)


async def test_meter_for_patient_delivers_the_simulator_fingersticks() -> None:
    profile = demo_profile(0)
    start = NOW - timedelta(days=3)
    meter = VirtualMeter.for_patient(profile, start=start, now=NOW)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.METER), transport=meter, sink=sink, resume=sink, sleep=no_sleep
    )
    await adapter.run(until_synced=True)
    expected = {(s.time, s.glucose_mg_dl) for s in meter_samples(profile, start, NOW)}
    assert expected and {(r.time, r.value) for r in sink.readings} == expected


async def test_cgm_for_patient_backfills_then_streams_live() -> None:
    profile = demo_profile(1)
    clock = StepClock(NOW)
    cgm = VirtualCgm.for_patient(profile, now=NOW, clock=clock, live_poll_s=0)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.CGM),
        transport=cgm,
        sink=sink,
        resume=sink,
        clock=clock,
        sleep=no_sleep,
    )
    task = asyncio.create_task(adapter.run())
    backfill = [
        s for s in cgm_trace(profile, NOW - timedelta(hours=24), NOW) if s.glucose_mg_dl is not None
    ]
    for _ in range(10_000):
        if len(sink.readings) >= len(backfill):
            break
        await asyncio.sleep(0)
    assert len(sink.readings) == len(backfill)
    clock.t = NOW + timedelta(minutes=30)  # six more 5-minute readings (minus any gap)
    live = [s for s in cgm_trace(profile, NOW, clock.t) if s.glucose_mg_dl is not None]
    for _ in range(10_000):
        if len(sink.readings) >= len(backfill) + len(live):
            break
        await asyncio.sleep(0)
    adapter.stop()
    await task
    assert len({r.time for r in sink.readings}) == len(backfill) + len(live)
    assert all(r.kind is ReadingKind.CGM_GLUCOSE for r in sink.readings)


async def test_hr_strap_for_patient_streams_as_the_clock_moves() -> None:
    clock = StepClock(NOW)
    strap = VirtualHeartRateStrap.for_patient(demo_profile(0), now=NOW, clock=clock, live_poll_s=0)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.HEART_RATE),
        transport=strap,
        sink=sink,
        clock=clock,
        sleep=no_sleep,
    )
    task = asyncio.create_task(adapter.run())
    clock.t = NOW + timedelta(minutes=5)  # 5 one-minute samples, each with 2 RR intervals
    for _ in range(10_000):
        if len(sink.readings) >= 15:
            break
        await asyncio.sleep(0)
    adapter.stop()
    await task
    kinds = [r.kind for r in sink.readings]
    assert kinds.count(ReadingKind.HEART_RATE) == 5 and kinds.count(ReadingKind.RR_INTERVAL) == 10
