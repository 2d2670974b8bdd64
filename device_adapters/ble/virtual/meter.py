"""A virtual Glucose Service meter: stored records, RACP, bonding, and a link that can drop."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime

from device_adapters.ble import glucose, racp
from device_adapters.ble.codec import DateTime
from device_adapters.ble.errors import AuthenticationRequired, GattError, MalformedPayload
from device_adapters.ble.mapping import MG_DL_PER_KG_L
from device_adapters.ble.uuids import Char, Service
from device_adapters.ble.virtual.base import VirtualPeripheral
from device_adapters.virtual.physiology import GlucoseProfile, meter_samples
from gateway.clock import Clock

FEATURES = (
    glucose.GlucoseFeatureFlags.LOW_BATTERY_DETECTION
    | glucose.GlucoseFeatureFlags.SENSOR_MALFUNCTION_DETECTION
    | glucose.GlucoseFeatureFlags.SENSOR_RESULT_HIGH_LOW_DETECTION
)


def meter_record(seq: int, time: datetime, glucose_mg_dl: float) -> glucose.GlucoseMeasurement:
    """A capillary-plasma fingerstick stored the way meters store it: kg/L, UTC base time."""
    return glucose.GlucoseMeasurement(
        sequence_number=seq,
        base_time=DateTime.from_datetime(time),
        time_offset_min=0,
        concentration=glucose_mg_dl / MG_DL_PER_KG_L,  # mg/dL -> kg/L
        unit=glucose.ConcentrationUnit.KG_PER_L,
        sample_type=glucose.GlucoseType.CAPILLARY_PLASMA,
        sample_location=glucose.SampleLocation.FINGER,
        sensor_status=glucose.SensorStatus(0),
    )


class VirtualMeter(VirtualPeripheral):
    """Stored glucose records served through the Record Access Control Point.

    `drop_after_records=N` drops the link once, right after the N-th record of a transfer has
    been notified (before the RACP indication). `requires_bonding`: RACP writes fail with
    AuthenticationRequired until `pair()`.
    """

    services_offered = frozenset({str(Service.GLUCOSE)})

    def __init__(
        self,
        records: Sequence[glucose.GlucoseMeasurement] = (),
        *,
        address: str = "F0:00:00:00:00:01",
        requires_bonding: bool = True,
        drop_after_records: int | None = None,
        clock: Clock | None = None,
        profile: GlucoseProfile | None = None,
        live_poll_s: float | None = None,
    ) -> None:
        super().__init__(
            address=address, requires_bonding=requires_bonding, clock=clock, live_poll_s=live_poll_s
        )
        self.records: dict[int, glucose.GlucoseMeasurement] = {
            r.sequence_number: r for r in records
        }
        self.drop_after_records = drop_after_records
        self.profile = profile
        self._covered_until: datetime | None = None
        self.records_sent = 0
        self.transfers: list[racp.RacpRequest] = []

    @classmethod
    def for_patient(
        cls,
        profile: GlucoseProfile,
        *,
        start: datetime,
        now: datetime,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
        address: str = "F0:00:00:00:00:01",
        requires_bonding: bool = True,
        drop_after_records: int | None = None,
    ) -> VirtualMeter:
        """A meter holding the patient's fingersticks from `start` to `now`; with `clock` and
        `live_poll_s` new fingersticks are stored as the clock passes them."""
        meter = cls(
            clock=clock,
            profile=profile,
            live_poll_s=live_poll_s,
            address=address,
            requires_bonding=requires_bonding,
            drop_after_records=drop_after_records,
        )
        meter._covered_until = start
        meter.advance(now)
        return meter

    def advance(self, now: datetime) -> None:
        """Store the fingersticks taken up to `now` (a meter does not push: it stores)."""
        if self.profile is None or self._covered_until is None or now <= self._covered_until:
            return
        for s in meter_samples(self.profile, self._covered_until, now):
            seq = s.seq & 0xFFFF  # GLS sequence numbers are uint16
            self.records[seq] = meter_record(seq, s.time, s.glucose_mg_dl)
        self._covered_until = now

    def _read(self, uuid: str) -> bytes:
        if uuid == Char.GLUCOSE_FEATURE:
            return glucose.encode_glucose_feature(glucose.GlucoseFeature(features=FEATURES))
        return super()._read(uuid)

    def _write(self, uuid: str, data: bytes) -> None:
        if uuid != Char.RECORD_ACCESS_CONTROL_POINT:
            super()._write(uuid, data)
            return
        if self.requires_bonding and not self.bonded:
            raise AuthenticationRequired(self.address, "write RACP", "insufficient authentication")
        if uuid not in self._subscriptions:
            raise GattError(self.address, "write RACP", "CCCD improperly configured")
        try:
            request = racp.parse_racp(data)
        except MalformedPayload:
            self._respond(data[0] if data else 0, racp.RacpResponseCode.INVALID_OPERAND)
            return
        if not isinstance(request, racp.RacpRequest):
            self._respond(data[0], racp.RacpResponseCode.OP_CODE_NOT_SUPPORTED)
            return
        self._spawn(self._serve(request))

    def _respond(self, op: int, code: racp.RacpResponseCode) -> None:
        self._notify(
            Char.RECORD_ACCESS_CONTROL_POINT,
            racp.encode_racp(racp.RacpResponse(request_op_code=op, response_code=code)),
        )

    def _select(self, request: racp.RacpRequest) -> list[glucose.GlucoseMeasurement]:
        ordered = [self.records[k] for k in sorted(self.records)]
        op, low, high = request.operator, request.operand, request.operand_max
        R = racp.RacpOperator
        if op is R.ALL_RECORDS:
            return ordered
        if op is R.GREATER_THAN_OR_EQUAL_TO and low is not None:
            return [r for r in ordered if r.sequence_number >= low]
        if op is R.LESS_THAN_OR_EQUAL_TO and low is not None:
            return [r for r in ordered if r.sequence_number <= low]
        if op is R.WITHIN_RANGE_OF and low is not None and high is not None:
            return [r for r in ordered if low <= r.sequence_number <= high]
        if op is R.FIRST_RECORD:
            return ordered[:1]
        if op is R.LAST_RECORD:
            return ordered[-1:]
        return []

    async def _serve(self, request: racp.RacpRequest) -> None:
        self.transfers.append(request)
        op = request.op_code
        if op is racp.RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            count = len(self._select(request))
            self._notify(
                Char.RECORD_ACCESS_CONTROL_POINT,
                racp.encode_racp(racp.RacpNumberOfRecords(count=count)),
            )
            return
        if op is racp.RacpOpCode.DELETE_STORED_RECORDS:
            for r in self._select(request):
                del self.records[r.sequence_number]
            self._respond(op, racp.RacpResponseCode.SUCCESS)
            return
        if op is racp.RacpOpCode.ABORT_OPERATION:
            self._respond(op, racp.RacpResponseCode.SUCCESS)
            return
        selected = self._select(request)
        if not selected:
            self._respond(op, racp.RacpResponseCode.NO_RECORDS_FOUND)
            return
        for n, record in enumerate(selected, start=1):
            self._notify(Char.GLUCOSE_MEASUREMENT, glucose.encode_glucose_measurement(record))
            self.records_sent += 1
            if self.drop_after_records is not None and n >= self.drop_after_records:
                self.drop_after_records = None  # drop once
                self.drop_link()
                return
            await asyncio.sleep(0)  # one notification per connection event
        self._respond(op, racp.RacpResponseCode.SUCCESS)
