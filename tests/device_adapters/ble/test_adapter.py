"""Full sessions through the virtual peripherals and the real adapter, into a fake sink."""

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

from device_adapters.ble import racp
from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.session import CgmSession
from device_adapters.ble.virtual import VirtualCgm, VirtualHeartRateStrap, VirtualMeter
from device_adapters.ble.virtual.meter import meter_record
from gateway.model import Device, DeviceEventKind, DeviceKind, ReadingKind, Transport
from gateway.protocols import RejectReason

from .fakes import FakeSink, no_sleep

T0 = datetime(2024, 3, 1, tzinfo=UTC)


def _device(kind: DeviceKind, device_id: str) -> Device:
    return Device(device_id=device_id, patient_id="p1", kind=kind, transport=Transport.BLE)


async def _until(predicate: object, *, spins: int = 10_000) -> None:
    for _ in range(spins):
        if callable(predicate) and predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_meter_500_records_link_drop_at_200_resumes_at_201() -> None:
    records = [
        meter_record(seq, T0 + timedelta(hours=seq), 80 + seq % 200) for seq in range(1, 501)
    ]
    meter = VirtualMeter(records, requires_bonding=True, drop_after_records=200)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.METER, "meter-1"),
        transport=meter,
        sink=sink,
        resume=sink,
        sleep=no_sleep,
    )
    stats = await adapter.run(until_synced=True, max_attempts=5)

    seqs = Counter(r.seq for r in sink.readings)
    assert len(seqs) == 500 and set(seqs) == set(range(1, 501))
    assert max(seqs.values()) == 1  # none twice
    assert meter.bonded  # paired before the records came
    assert stats.link_drops == 1 and meter.connect_count == 2
    # the first transfer asked for everything, the second for ">= 201"
    assert meter.transfers == [racp.report_all(), racp.report_from(201)]
    # readings carry the meter's values: seq 7 -> 80 + 7 = 87 mg/dL, at T0 + 7 h
    r7 = next(r for r in sink.readings if r.seq == 7)
    assert r7.value == 87.0 and r7.time == T0 + timedelta(hours=7)
    assert DeviceEventKind.DISCONNECTED in {e.kind for e in sink.events}
    assert not meter.is_connected


async def test_meter_resume_uses_store_across_adapter_restarts() -> None:
    records = [meter_record(seq, T0 + timedelta(hours=seq), 100) for seq in range(1, 11)]
    meter = VirtualMeter(records, requires_bonding=False)
    sink = FakeSink()
    device = _device(DeviceKind.METER, "meter-2")
    await BleAdapter(device=device, transport=meter, sink=sink, resume=sink, sleep=no_sleep).run(
        until_synced=True
    )
    meter.records[11] = meter_record(11, T0 + timedelta(hours=11), 150)
    await BleAdapter(device=device, transport=meter, sink=sink, resume=sink, sleep=no_sleep).run(
        until_synced=True
    )
    assert [r.seq for r in sink.readings] == list(range(1, 12))
    assert meter.transfers[-1] == racp.report_from(11)


async def test_cgm_backfill_with_corrupted_crc_is_dead_lettered_and_stream_continues() -> None:
    start = T0
    cgm = VirtualCgm(session_start=start, corrupt_crc_at={50}, records_per_notification=2)
    for k in range(24):  # two hours of 5-minute readings, offsets 0..115
        cgm.add_reading(start + timedelta(minutes=5 * k), 100 + k)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.CGM, "cgm-1"),
        transport=cgm,
        sink=sink,
        resume=sink,
        sleep=no_sleep,
    )
    await adapter.run(until_synced=True)
    times = [r.time for r in sink.readings if r.kind is ReadingKind.CGM_GLUCOSE]
    assert len(times) == 23 and len(set(times)) == 23
    assert start + timedelta(minutes=50) not in times  # the corrupted one
    assert start + timedelta(minutes=55) in times  # its neighbour in the same notification
    (dead,) = sink.dead_letters
    assert dead.reason is RejectReason.CRC_MISMATCH
    assert dead.origin.device_id == "cgm-1"
    assert isinstance(adapter.session, CgmSession)
    assert adapter.session.counters.crc_rejected == 1
    # value at offset 115: 100 + 23 = 123 mg/dL
    last = max(sink.readings, key=lambda r: r.time)
    assert last.time == start + timedelta(minutes=115) and last.value == 123.0


async def test_cgm_drop_mid_backfill_resumes_by_time_offset_then_streams_live() -> None:
    start = T0
    cgm = VirtualCgm(session_start=start, drop_after_records=10)
    for k in range(30):
        cgm.add_reading(start + timedelta(minutes=5 * k), 90 + k)
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.CGM, "cgm-2"),
        transport=cgm,
        sink=sink,
        resume=sink,
        sleep=no_sleep,
    )
    task = asyncio.create_task(adapter.run())
    await _until(lambda: len(sink.readings) == 30)
    # live: a new reading at offset 150 is notified and delivered
    cgm.add_reading(start + timedelta(minutes=150), 180)
    await _until(lambda: len(sink.readings) == 31)
    adapter.stop()
    await task
    times = Counter(r.time for r in sink.readings)
    assert max(times.values()) == 1
    assert sink.readings[-1].time == start + timedelta(minutes=150)
    # 10 records (offsets 0..45) arrived before the drop: resume asks for >= 45 + 1 = 46
    assert adapter.stats.link_drops == 1
    assert cgm.transfers == [racp.report_all(), racp.report_from(46)]


async def test_heart_rate_strap_streams_rr_intervals() -> None:
    strap = VirtualHeartRateStrap()
    sink = FakeSink()
    adapter = BleAdapter(
        device=_device(DeviceKind.HEART_RATE, "hr-1"), transport=strap, sink=sink, sleep=no_sleep
    )
    task = asyncio.create_task(adapter.run())
    await _until(lambda: strap.is_connected and strap._subscriptions)
    strap.send(72, (0.8, 1.0))  # 0.8 s -> round(819.2) = 819/1024 s = 799.805 ms
    await _until(lambda: len(sink.readings) == 3)
    adapter.stop()
    await task
    hr = [r for r in sink.readings if r.kind is ReadingKind.HEART_RATE]
    rr = [r for r in sink.readings if r.kind is ReadingKind.RR_INTERVAL]
    assert [r.value for r in hr] == [72.0]
    assert [r.value for r in rr] == [799.805, 1000.0]
    assert rr[0].time < rr[1].time and all(r.seq is None for r in sink.readings)


async def test_silence_watchdog_reports_disconnected() -> None:
    strap = VirtualHeartRateStrap()
    sink = FakeSink()
    silenced: list[str] = []
    adapter = BleAdapter(
        device=_device(DeviceKind.HEART_RATE, "hr-2"),
        transport=strap,
        sink=sink,
        silence_timeout_s=0.01,
        on_silence=silenced.append,
        sleep=no_sleep,
    )
    await adapter.run(max_attempts=1)
    assert silenced == ["hr-2"]
    assert any(
        e.kind is DeviceEventKind.DISCONNECTED and "no data" in e.detail for e in sink.events
    )
    assert not strap.is_connected
