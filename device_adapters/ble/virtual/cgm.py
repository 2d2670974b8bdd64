"""A virtual CGM: session times, status, RACP by time offset, SOCP, E2E-CRC, live stream."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from device_adapters.ble import cgm, racp
from device_adapters.ble.errors import GattError, MalformedPayload
from device_adapters.ble.uuids import Char, Service
from device_adapters.ble.virtual.base import VirtualPeripheral
from device_adapters.virtual.physiology import GlucoseProfile, cgm_trace
from gateway.clock import Clock

INTERVAL_MIN = 5
F = cgm.CgmFeatureFlags


class VirtualCgm(VirtualPeripheral):
    """Records keyed by time offset (minutes since `session_start`).

    `e2e_crc`: the feature advertises E2E-CRC and every value carries it. `corrupt_crc_at`:
    offsets whose record is sent once with a wrong CRC. `records_per_notification` packs
    several records into one notification, as CGMS allows. `drop_after_records`: drop the link
    once, mid-backfill.
    """

    services_offered = frozenset({str(Service.CONTINUOUS_GLUCOSE_MONITORING)})

    def __init__(
        self,
        *,
        session_start: datetime,
        address: str = "F0:00:00:00:00:02",
        e2e_crc: bool = True,
        run_time_h: int = 240,
        records_per_notification: int = 1,
        corrupt_crc_at: set[int] | None = None,
        drop_after_records: int | None = None,
        profile: GlucoseProfile | None = None,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
    ) -> None:
        super().__init__(address=address, clock=clock, live_poll_s=live_poll_s)
        self.session_start = session_start.replace(second=0, microsecond=0)
        self.e2e_crc = e2e_crc
        self.run_time_h = run_time_h
        self.records_per_notification = records_per_notification
        self.corrupt_crc_at = set(corrupt_crc_at or ())
        self.drop_after_records = drop_after_records
        self.profile = profile
        self.records: dict[int, cgm.CgmMeasurement] = {}
        self._covered_until = self.session_start
        self._last_offset = 0
        self._backfilling = False
        self.records_sent = 0
        self.session_running = True
        self.transfers: list[racp.RacpRequest] = []

    @classmethod
    def for_patient(
        cls,
        profile: GlucoseProfile,
        *,
        now: datetime,
        session_start: datetime | None = None,
        clock: Clock | None = None,
        live_poll_s: float | None = None,
        address: str = "F0:00:00:00:00:02",
        e2e_crc: bool = True,
        corrupt_crc_at: set[int] | None = None,
    ) -> VirtualCgm:
        """A CGM whose session began `session_start` (default: 24 h before `now`), holding the
        patient's 5-minute trace up to `now`; with `clock` + `live_poll_s` it notifies each new
        reading as the clock passes it."""
        device = cls(
            session_start=session_start or now - timedelta(hours=24),
            address=address,
            e2e_crc=e2e_crc,
            corrupt_crc_at=corrupt_crc_at,
            profile=profile,
            clock=clock,
            live_poll_s=live_poll_s,
        )
        device.advance(now)
        return device

    def offset_of(self, t: datetime) -> int:
        return int((t - self.session_start) // timedelta(minutes=1))

    def add_reading(self, time: datetime, glucose_mg_dl: float, *, notify: bool = True) -> int:
        """Store one reading (and notify it live when subscribed); returns its time offset."""
        offset = self.offset_of(time)
        previous = self.records.get(offset - INTERVAL_MIN)
        trend = None
        if previous is not None and isinstance(previous.glucose_mg_dl, float):
            trend = round((glucose_mg_dl - previous.glucose_mg_dl) / INTERVAL_MIN, 1)
        record = cgm.CgmMeasurement(
            glucose_mg_dl=round(glucose_mg_dl),
            time_offset_min=offset,
            trend_mg_dl_min=trend,
            quality_pct=100.0,
        )
        self.records[offset] = record
        self._last_offset = max(self._last_offset, offset)
        if notify and not self._backfilling:
            self._send([record])
        return offset

    def advance(self, now: datetime) -> None:
        if self.profile is None or now <= self._covered_until:
            return
        for s in cgm_trace(self.profile, self._covered_until, now, interval_min=INTERVAL_MIN):
            if s.glucose_mg_dl is not None and s.time >= self.session_start:
                self.add_reading(s.time, s.glucose_mg_dl)
        self._covered_until = now
        self._last_offset = max(self._last_offset, self.offset_of(now))

    def _encode(self, records: list[cgm.CgmMeasurement]) -> bytes:
        out = b""
        for r in records:
            raw = cgm.encode_cgm_record(r, with_crc=self.e2e_crc)
            if r.time_offset_min in self.corrupt_crc_at and self.e2e_crc:
                self.corrupt_crc_at.discard(r.time_offset_min)
                raw = raw[:-2] + bytes([raw[-2] ^ 0xFF, raw[-1]])  # one corrupted CRC
            out += raw
        return out

    def _send(self, records: list[cgm.CgmMeasurement]) -> bool:
        if not (self.is_connected and Char.CGM_MEASUREMENT in self._subscriptions):
            return False  # stored only; the collector fetches it through the RACP
        self.records_sent += len(records)
        return self._notify(Char.CGM_MEASUREMENT, self._encode(records))

    def _read(self, uuid: str) -> bytes:
        crc = self.e2e_crc
        if uuid == Char.CGM_FEATURE:
            features = F.CGM_TREND_INFORMATION_SUPPORTED | F.CGM_QUALITY_SUPPORTED
            features |= F.LOW_BATTERY_DETECTION_SUPPORTED | F.SENSOR_MALFUNCTION_DETECTION_SUPPORTED
            if crc:
                features |= F.E2E_CRC_SUPPORTED
            return cgm.encode_cgm_feature(cgm.CgmFeature(features=features))
        if uuid == Char.CGM_STATUS:
            status = cgm.CgmStatusOctet(0 if self.session_running else 1)
            value = cgm.CgmStatus(
                time_offset_min=self._last_offset,
                status=status,
                cal_temp=cgm.CgmCalTempOctet(0),
                warning=cgm.CgmWarningOctet(0),
            )
            return cgm.encode_cgm_status(value, with_crc=crc)
        if uuid == Char.CGM_SESSION_START_TIME:
            start = cgm.CgmSessionStartTime.from_utc(self.session_start)
            return cgm.encode_cgm_session_start_time(start, with_crc=crc)
        if uuid == Char.CGM_SESSION_RUN_TIME:
            run = cgm.CgmSessionRunTime(run_time_h=self.run_time_h)
            return cgm.encode_cgm_session_run_time(run, with_crc=crc)
        return super()._read(uuid)

    def _write(self, uuid: str, data: bytes) -> None:
        if uuid == Char.RECORD_ACCESS_CONTROL_POINT:
            if uuid not in self._subscriptions:
                raise GattError(self.address, "write RACP", "CCCD improperly configured")
            try:
                request = racp.parse_racp(data)
            except MalformedPayload:
                self._racp_respond(data[0] if data else 0, racp.RacpResponseCode.INVALID_OPERAND)
                return
            if isinstance(request, racp.RacpRequest):
                self._spawn(self._serve(request))
            return
        if uuid == Char.CGM_SPECIFIC_OPS_CONTROL_POINT:
            self._socp(data)
            return
        super()._write(uuid, data)

    def _racp_respond(self, op: int, code: racp.RacpResponseCode) -> None:
        message = racp.RacpResponse(request_op_code=op, response_code=code)
        self._notify(Char.RECORD_ACCESS_CONTROL_POINT, racp.encode_racp(message))

    def _socp(self, data: bytes) -> None:
        code = cgm.SocpResponseCode.SUCCESS
        try:
            message = cgm.parse_socp(data, crc_required=self.e2e_crc)
            op: int = message.op_code
            if message.op_code is cgm.SocpOpCode.START_THE_SESSION:
                self.session_running = True
            elif message.op_code is cgm.SocpOpCode.STOP_THE_SESSION:
                self.session_running = False
            elif message.op_code is not cgm.SocpOpCode.SET_CGM_COMMUNICATION_INTERVAL:
                code = cgm.SocpResponseCode.OP_CODE_NOT_SUPPORTED
        except MalformedPayload:
            op = data[0] if data else 0
            code = cgm.SocpResponseCode.INVALID_OPERAND
        reply = cgm.SocpMessage(
            op_code=cgm.SocpOpCode.RESPONSE_CODE,
            operand=cgm.SocpResponse(request_op_code=op, response_code=code),
        )
        self._notify(
            Char.CGM_SPECIFIC_OPS_CONTROL_POINT, cgm.encode_socp(reply, with_crc=self.e2e_crc)
        )

    async def _serve(self, request: racp.RacpRequest) -> None:
        self.transfers.append(request)
        op = request.op_code
        ordered = [self.records[k] for k in sorted(self.records)]
        if request.operator is racp.RacpOperator.GREATER_THAN_OR_EQUAL_TO:
            low = request.operand or 0
            ordered = [r for r in ordered if r.time_offset_min >= low]
        elif request.operator is not racp.RacpOperator.ALL_RECORDS:
            self._racp_respond(op, racp.RacpResponseCode.OPERATOR_NOT_SUPPORTED)
            return
        if op is racp.RacpOpCode.REPORT_NUMBER_OF_STORED_RECORDS:
            message = racp.RacpNumberOfRecords(count=len(ordered))
            self._notify(Char.RECORD_ACCESS_CONTROL_POINT, racp.encode_racp(message))
            return
        if op is not racp.RacpOpCode.REPORT_STORED_RECORDS:
            self._racp_respond(op, racp.RacpResponseCode.OP_CODE_NOT_SUPPORTED)
            return
        if not ordered:
            self._racp_respond(op, racp.RacpResponseCode.NO_RECORDS_FOUND)
            return
        step = max(1, self.records_per_notification)
        sent = 0
        for i in range(0, len(ordered), step):
            batch = ordered[i : i + step]
            self._send(batch)
            sent += len(batch)
            if self.drop_after_records is not None and sent >= self.drop_after_records:
                self.drop_after_records = None
                self.drop_link()
                return
            await asyncio.sleep(0)
        self._racp_respond(op, racp.RacpResponseCode.SUCCESS)
