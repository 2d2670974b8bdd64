"""Sans-I/O sync sessions: what to read, subscribe and write after each (re)connect, and what
each notification means. Pure: the adapter feeds bytes and `now`, and performs the actions.

Meter (GLS): after every connect re-read the feature, re-subscribe, and ask the RACP for
"records with sequence number >= last stored + 1". Records arrive as notifications, then the
RACP indication. A link drop before that indication just means the next connect resumes
from the last stored + 1: nothing lost, and the delivered-set drops any repeat.

CGM (CGMS): read feature (E2E-CRC policy), session start/run time and status; ask the RACP for
records with time offset >= the last stored offset + 1; then stream. A record whose CRC fails
is rejected (counted, dead-lettered) and the stream continues.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from math import floor

from device_adapters.ble import cgm, glucose, racp
from device_adapters.ble.errors import CrcMismatch, MalformedPayload
from device_adapters.ble.heart_rate import parse_heart_rate
from device_adapters.ble.mapping import Mapped, Who, map_cgm, map_glucose, map_heart_rate
from device_adapters.ble.uuids import Char
from gateway.protocols import RejectReason


@dataclass(frozen=True, slots=True, kw_only=True)
class Read:
    uuid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Subscribe:
    uuid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    uuid: str
    data: bytes


Action = Read | Subscribe | Write


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejected:
    uuid: str
    raw: bytes
    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resume:
    """What the store already holds for this device."""

    last_seq: int | None = None
    last_time: datetime | None = None


@dataclass(slots=True, kw_only=True)
class SessionOutput:
    mapped: Mapped = field(default_factory=Mapped)
    rejected: list[Rejected] = field(default_factory=list)

    def add(self, other: Mapped) -> None:
        self.mapped = self.mapped + other

    @property
    def empty(self) -> bool:
        return not (self.mapped.readings or self.mapped.events or self.rejected)


@dataclass(slots=True)
class SessionCounters:
    delivered: int = 0
    duplicates_skipped: int = 0
    malformed: int = 0
    crc_rejected: int = 0
    transfers_started: int = 0
    transfers_completed: int = 0


def _reject(uuid: str, raw: bytes, exc: MalformedPayload) -> Rejected:
    reason = RejectReason.CRC_MISMATCH if isinstance(exc, CrcMismatch) else RejectReason.MALFORMED
    return Rejected(uuid=uuid, raw=raw, reason=reason, detail=str(exc))


class MeterSession:
    """Glucose Service sync. `synced` turns True on the RACP indication ending a transfer."""

    def __init__(self, who: Who, *, tz: tzinfo = UTC) -> None:
        self.who = who
        self.tz = tz
        self.feature: glucose.GlucoseFeature | None = None
        self.highest_seq: int | None = None
        self.synced = False
        self.last_response: racp.RacpResponse | None = None
        self.counters = SessionCounters()
        self._delivered: set[int] = set()
        self._pending: glucose.GlucoseMeasurement | None = None

    def connect_actions(self) -> list[Action]:
        self.synced = False
        self._pending = None
        return [
            Read(uuid=Char.GLUCOSE_FEATURE),
            Subscribe(uuid=Char.GLUCOSE_MEASUREMENT),
            Subscribe(uuid=Char.GLUCOSE_MEASUREMENT_CONTEXT),
            Subscribe(uuid=Char.RECORD_ACCESS_CONTROL_POINT),
        ]

    def resume_from(self, resume: Resume) -> int | None:
        """The first sequence number to ask for (None: ask for all records)."""
        known = [s for s in (resume.last_seq, self.highest_seq) if s is not None]
        if not known or max(known) >= 0xFFFF:
            return None  # nothing stored, or the 16-bit counter is at its end: ask for all
        return max(known) + 1

    def transfer_actions(self, resume: Resume) -> list[Action]:
        first = self.resume_from(resume)
        request = racp.report_all() if first is None else racp.report_from(first)
        self.counters.transfers_started += 1
        return [Write(uuid=Char.RECORD_ACCESS_CONTROL_POINT, data=racp.encode_racp(request))]

    def on_read(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        out = SessionOutput()
        if uuid == Char.GLUCOSE_FEATURE:
            try:
                self.feature = glucose.parse_glucose_feature(data)
            except MalformedPayload as exc:
                out.rejected.append(_reject(uuid, data, exc))
        return out

    def _emit(
        self,
        m: glucose.GlucoseMeasurement,
        ctx: glucose.GlucoseMeasurementContext | None,
        out: SessionOutput,
        raw: bytes,
    ) -> None:
        if m.sequence_number in self._delivered:
            self.counters.duplicates_skipped += 1
            return
        try:
            out.add(map_glucose(m, self.who, tz=self.tz, context=ctx))
        except MalformedPayload as exc:
            out.rejected.append(_reject(Char.GLUCOSE_MEASUREMENT, raw, exc))
            self.counters.malformed += 1
        self._delivered.add(m.sequence_number)
        self.highest_seq = max(self.highest_seq or 0, m.sequence_number)
        self.counters.delivered += 1

    def _flush(self, out: SessionOutput) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._emit(pending, None, out, glucose.encode_glucose_measurement(pending))

    def on_notification(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        out = SessionOutput()
        try:
            if uuid == Char.GLUCOSE_MEASUREMENT:
                m = glucose.parse_glucose_measurement(data)
                self._flush(out)
                if m.context_follows:
                    self._pending = m  # GLS: the context notification comes next
                else:
                    self._emit(m, None, out, data)
            elif uuid == Char.GLUCOSE_MEASUREMENT_CONTEXT:
                ctx = glucose.parse_glucose_context(data)
                pending = self._pending
                if pending is not None and pending.sequence_number == ctx.sequence_number:
                    self._pending = None
                    self._emit(pending, ctx, out, data)
            elif uuid == Char.RECORD_ACCESS_CONTROL_POINT:
                message = racp.parse_racp(data)
                if isinstance(message, racp.RacpResponse):
                    self._flush(out)
                    self.last_response = message
                    self.synced = True
                    if message.ok:
                        self.counters.transfers_completed += 1
        except MalformedPayload as exc:
            self.counters.malformed += 1
            out.rejected.append(_reject(uuid, data, exc))
        return out

    def on_disconnect(self) -> SessionOutput:
        """A record awaiting its context is complete enough to keep."""
        out = SessionOutput()
        self._flush(out)
        return out


class CgmSession:
    """CGM Service sync and live stream."""

    def __init__(self, who: Who) -> None:
        self.who = who
        self.feature: cgm.CgmFeature | None = None
        self.session_start: datetime | None = None
        self.run_time_h: int | None = None
        self.status: cgm.CgmStatus | None = None
        self.synced = False
        self.counters = SessionCounters()
        self._delivered: set[tuple[datetime, int]] = set()
        self._start_time: cgm.CgmSessionStartTime | None = None

    @property
    def crc_required(self) -> bool | None:
        return None if self.feature is None else self.feature.e2e_crc

    def connect_actions(self) -> list[Action]:
        self.synced = False
        return [
            Read(uuid=Char.CGM_FEATURE),
            Read(uuid=Char.CGM_STATUS),
            Read(uuid=Char.CGM_SESSION_START_TIME),
            Read(uuid=Char.CGM_SESSION_RUN_TIME),
            Subscribe(uuid=Char.CGM_MEASUREMENT),
            Subscribe(uuid=Char.RECORD_ACCESS_CONTROL_POINT),
            Subscribe(uuid=Char.CGM_SPECIFIC_OPS_CONTROL_POINT),
        ]

    def on_read(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        out = SessionOutput()
        try:
            if uuid == Char.CGM_FEATURE:
                self.feature = cgm.parse_cgm_feature(data)
            elif uuid == Char.CGM_STATUS:
                self.status = cgm.parse_cgm_status(data, crc_required=self.crc_required)
            elif uuid == Char.CGM_SESSION_START_TIME:
                self._start_time = cgm.parse_cgm_session_start_time(
                    data, crc_required=self.crc_required
                )
            elif uuid == Char.CGM_SESSION_RUN_TIME:
                self.run_time_h = cgm.parse_cgm_session_run_time(
                    data, crc_required=self.crc_required
                ).run_time_h
        except MalformedPayload as exc:
            out.rejected.append(_reject(uuid, data, exc))
        start = self._start_time.to_utc() if self._start_time else None
        if start is None and self.status is not None:
            # CGMS: the status time offset is "now" in session minutes; fall back on it when
            # no collector has set the session start time yet.
            start = now - timedelta(minutes=self.status.time_offset_min)
            start = start.replace(second=0, microsecond=0)
        if start is not None:
            self.session_start = start
        return out

    def transfer_actions(self, resume: Resume) -> list[Action]:
        """RACP: records with time offset >= (last stored time − session start) + 1 minute."""
        self.counters.transfers_started += 1
        request = racp.report_all()
        start = self.session_start
        if start is not None and resume.last_time is not None and resume.last_time >= start:
            offset = floor((resume.last_time - start) / timedelta(minutes=1)) + 1
            if offset <= 0xFFFF:
                request = racp.report_from(offset)
        return [Write(uuid=Char.RECORD_ACCESS_CONTROL_POINT, data=racp.encode_racp(request))]

    def on_notification(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        out = SessionOutput()
        if uuid == Char.CGM_MEASUREMENT:
            self._on_measurements(data, out)
            return out
        try:
            if uuid == Char.RECORD_ACCESS_CONTROL_POINT:
                message = racp.parse_racp(data)
                if isinstance(message, racp.RacpResponse):
                    self.synced = True
                    if message.ok:
                        self.counters.transfers_completed += 1
            elif uuid == Char.CGM_SPECIFIC_OPS_CONTROL_POINT:
                cgm.parse_socp(data, crc_required=self.crc_required)
        except MalformedPayload as exc:
            self.counters.malformed += 1
            out.rejected.append(_reject(uuid, data, exc))
        return out

    def _on_measurements(self, data: bytes, out: SessionOutput) -> None:
        try:
            records = cgm.split_cgm_records(data)
        except MalformedPayload as exc:
            self.counters.malformed += 1
            out.rejected.append(_reject(Char.CGM_MEASUREMENT, data, exc))
            return
        offset = 0
        for raw in records:
            try:
                m = cgm.parse_cgm_record(raw, crc_required=self.crc_required, offset=offset)
            except CrcMismatch as exc:
                self.counters.crc_rejected += 1
                out.rejected.append(_reject(Char.CGM_MEASUREMENT, raw, exc))
                continue
            except MalformedPayload as exc:
                self.counters.malformed += 1
                out.rejected.append(_reject(Char.CGM_MEASUREMENT, raw, exc))
                continue
            finally:
                offset += len(raw)
            if self.session_start is None:
                self.counters.malformed += 1
                detail = "CGM record before the session start time is known"
                out.rejected.append(
                    Rejected(
                        uuid=Char.CGM_MEASUREMENT,
                        raw=raw,
                        reason=RejectReason.SCHEMA,
                        detail=detail,
                    )
                )
                continue
            key = (self.session_start, m.time_offset_min)
            if key in self._delivered:
                self.counters.duplicates_skipped += 1
                continue
            try:
                out.add(map_cgm(m, self.who, session_start=self.session_start))
            except MalformedPayload as exc:  # e.g. a session start near year 9999 + offset
                self.counters.malformed += 1
                out.rejected.append(_reject(Char.CGM_MEASUREMENT, raw, exc))
                continue
            self._delivered.add(key)
            self.counters.delivered += 1

    def on_disconnect(self) -> SessionOutput:
        return SessionOutput()


class HeartRateSession:
    """Heart Rate: subscribe and stream; the strap has no clock or memory."""

    def __init__(self, who: Who) -> None:
        self.who = who
        self.synced = True
        self.counters = SessionCounters()

    def connect_actions(self) -> list[Action]:
        return [Subscribe(uuid=Char.HEART_RATE_MEASUREMENT)]

    def transfer_actions(self, resume: Resume) -> list[Action]:
        return []

    def on_read(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        return SessionOutput()

    def on_notification(self, uuid: str, data: bytes, now: datetime) -> SessionOutput:
        out = SessionOutput()
        if uuid != Char.HEART_RATE_MEASUREMENT:
            return out
        try:
            out.add(map_heart_rate(parse_heart_rate(data), self.who, now=now))
            self.counters.delivered += 1
        except MalformedPayload as exc:
            self.counters.malformed += 1
            out.rejected.append(_reject(uuid, data, exc))
        return out

    def on_disconnect(self) -> SessionOutput:
        return SessionOutput()


Session = MeterSession | CgmSession | HeartRateSession
