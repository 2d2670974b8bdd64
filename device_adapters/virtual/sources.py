"""Simulated devices for one patient: a CGM, a glucose meter and a heart-rate strap.

Each source first backfills history (as a meter or CGM uploads stored records after
pairing), then streams live values as their times pass. Every reading is labelled
with `Source.VIRTUAL` and goes through the same validation, storage and ledger as a
real device's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from device_adapters.virtual.physiology import (
    EPOCH,
    GlucoseProfile,
    cgm_trace,
    demo_profile,
    heart_rate_samples,
    meter_samples,
)
from gateway.model import (
    Device,
    DeviceEvent,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import Origin, ReadingSink
from gateway.units import Unit

log = logging.getLogger("glucohub.virtual")

CHUNK = 2000
HISTORY_HR_INTERVAL_S = 300.0


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualPatient:
    patient: Patient
    profile: GlucoseProfile
    cgm: Device
    meter: Device
    heart_rate: Device

    @property
    def devices(self) -> tuple[Device, ...]:
        return (self.cgm, self.meter, self.heart_rate)


def demo_patients(count: int, seed: int = 7) -> list[VirtualPatient]:
    names = ("Ada (simulated)", "Bea (simulated)", "Cal (simulated)")
    result: list[VirtualPatient] = []
    for index in range(count):
        profile = demo_profile(index, seed)
        pid = f"demo-{index + 1:02d}"
        name = names[index] if index < len(names) else f"Patient {index + 1} (simulated)"

        def device(kind: DeviceKind, suffix: str, label: str, pid: str = pid) -> Device:
            return Device(
                device_id=f"{pid}-{suffix}",
                patient_id=pid,
                kind=kind,
                transport=Transport.VIRTUAL,
                name=f"Simulated {label}",
                simulated=True,
            )

        result.append(
            VirtualPatient(
                patient=Patient(
                    patient_id=pid, display_name=name, timezone=profile.timezone, simulated=True
                ),
                profile=profile,
                cgm=device(DeviceKind.CGM, "cgm", "CGM"),
                meter=device(DeviceKind.METER, "meter", "glucose meter"),
                heart_rate=device(DeviceKind.HEART_RATE, "hr", "heart-rate strap"),
            )
        )
    return result


def _cgm_seq(t: datetime) -> int:
    # CGMS: records are numbered by their time offset in minutes; ours from the epoch.
    return int((t - EPOCH).total_seconds() // 60)


def simulated_readings(
    vp: VirtualPatient,
    start: datetime,
    end: datetime,
    *,
    cgm_interval_min: float,
    hr_interval_s: float,
) -> tuple[list[Reading], list[DeviceEvent]]:
    pid = vp.patient.patient_id
    readings: list[Reading] = []
    events: list[DeviceEvent] = []

    def reading(
        device: Device,
        kind: ReadingKind,
        value: float,
        unit: Unit,
        at: datetime,
        seq: int | None = None,
    ) -> Reading:
        return Reading(
            patient_id=pid,
            device_id=device.device_id,
            kind=kind,
            value=value,
            unit=unit,
            time=at,
            seq=seq,
            source=Source.VIRTUAL,
        )

    warming = False
    for sample in cgm_trace(vp.profile, start, end, interval_min=cgm_interval_min):
        if sample.warmup and not warming:
            events.append(
                DeviceEvent(
                    patient_id=pid,
                    device_id=vp.cgm.device_id,
                    kind=DeviceEventKind.SENSOR_WARMUP,
                    time=sample.time,
                    detail="new sensor warming up (2 h)",
                )
            )
        warming = sample.warmup
        if sample.glucose_mg_dl is None:
            continue
        readings.append(
            reading(
                vp.cgm,
                ReadingKind.CGM_GLUCOSE,
                sample.glucose_mg_dl,
                Unit.MG_DL,
                sample.time,
                _cgm_seq(sample.time),
            )
        )
    for meter in meter_samples(vp.profile, start, end):
        readings.append(
            reading(
                vp.meter,
                ReadingKind.GLUCOSE,
                meter.glucose_mg_dl,
                Unit.MG_DL,
                meter.time,
                meter.seq,
            )
        )
    for hr in heart_rate_samples(vp.profile, start, end, interval_s=hr_interval_s):
        readings.append(reading(vp.heart_rate, ReadingKind.HEART_RATE, hr.bpm, Unit.BPM, hr.time))
    readings.sort(key=lambda r: r.time)
    return readings, events


async def _deliver(
    sink: ReadingSink, readings: Sequence[Reading], events: Sequence[DeviceEvent]
) -> None:
    origin = Origin(source=Source.VIRTUAL, topic="virtual")
    for start in range(0, max(len(readings), 1), CHUNK):
        chunk = readings[start : start + CHUNK]
        await sink.submit(origin=origin, readings=chunk, events=events if start == 0 else ())


async def seed_history(
    sink: ReadingSink,
    vp: VirtualPatient,
    *,
    start: datetime,
    cgm_until: datetime,
    end: datetime,
) -> int:
    """History from before the devices were paired with this hub (an earlier sensor's CGM
    data, heart rate every 5 minutes); the paired devices deliver the rest over BLE."""
    cgm, events = simulated_readings(
        vp, start, cgm_until, cgm_interval_min=5.0, hr_interval_s=HISTORY_HR_INTERVAL_S
    )
    cgm = [r for r in cgm if r.kind is ReadingKind.CGM_GLUCOSE]
    heart, _ = simulated_readings(
        vp, start, end, cgm_interval_min=5.0, hr_interval_s=HISTORY_HR_INTERVAL_S
    )
    heart = [r for r in heart if r.kind is ReadingKind.HEART_RATE]
    readings = sorted(cgm + heart, key=lambda r: r.time)
    await _deliver(sink, readings, events)
    return len(readings)
