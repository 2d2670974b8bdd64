"""A virtual heart-rate strap: notifies Heart Rate Measurements with RR intervals."""

from __future__ import annotations

from datetime import datetime

from device_adapters.ble.heart_rate import HeartRateMeasurement, SensorContact, encode_heart_rate
from device_adapters.ble.uuids import Char, Service
from device_adapters.ble.virtual.base import VirtualPeripheral
from device_adapters.virtual.physiology import GlucoseProfile, heart_rate_samples
from gateway.clock import Clock


def measurement(bpm: float, rr_intervals_s: tuple[float, ...]) -> HeartRateMeasurement:
    return HeartRateMeasurement(
        heart_rate_bpm=round(bpm),
        sensor_contact=SensorContact.DETECTED,
        rr_intervals_1024=tuple(round(s * 1024) for s in rr_intervals_s),  # s -> 1/1024 s
    )


class VirtualHeartRateStrap(VirtualPeripheral):
    services_offered = frozenset({str(Service.HEART_RATE)})

    def __init__(
        self,
        *,
        address: str = "F0:00:00:00:00:03",
        profile: GlucoseProfile | None = None,
        start: datetime | None = None,
        interval_s: float = 60.0,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
    ) -> None:
        super().__init__(address=address, clock=clock, live_poll_s=live_poll_s)
        self.profile = profile
        self.interval_s = interval_s
        self._covered_until = start

    @classmethod
    def for_patient(
        cls,
        profile: GlucoseProfile,
        *,
        now: datetime,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
        interval_s: float = 60.0,
        address: str = "F0:00:00:00:00:03",
    ) -> VirtualHeartRateStrap:
        """A strap that notifies the patient's heart rate from `now` on as the clock advances."""
        return cls(
            address=address,
            profile=profile,
            start=now,
            interval_s=interval_s,
            clock=clock,
            live_poll_s=live_poll_s,
        )

    def send(self, bpm: float, rr_intervals_s: tuple[float, ...] = ()) -> bool:
        """Notify one measurement now (if subscribed)."""
        return self._notify(
            Char.HEART_RATE_MEASUREMENT, encode_heart_rate(measurement(bpm, rr_intervals_s))
        )

    def advance(self, now: datetime) -> None:
        if self.profile is None or self._covered_until is None or now <= self._covered_until:
            return
        samples = heart_rate_samples(
            self.profile, self._covered_until, now, interval_s=self.interval_s
        )
        for s in samples:
            self.send(s.bpm, s.rr_intervals_s)
        self._covered_until = now
