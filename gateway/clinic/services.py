"""What a clinic dashboard process serves besides the hub's read side: alert actions on the
clinic's engines (`ClinicAlertControl`), a ledger view for a site that keeps no log of its
own (`ArchiveLedger`; each hub's is `gateway.clinic.hub_logs`), and its health
(`DashboardStatus`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from gateway.clinical.alerts import Thresholds
from gateway.clock import Clock
from gateway.errors import InputError
from gateway.model import Alert, AlertKind
from gateway.protocols import DisclosedBatch, QuarantinedRecord
from gateway.storage.postgres_clinic_alerts import ClinicAlerts

T = TypeVar("T")


class ClinicAlertControl:
    """`AlertControl` at the clinic: each action locks the patient's engine in the clinic
    database, so it takes turns with the workers feeding that engine, and its transition
    reaches every dashboard process through NOTIFY (none is published here: this process
    hears its own notification like the others)."""

    def __init__(self, url: str, thresholds: Thresholds, clock: Clock) -> None:
        self._url = url
        self._thresholds = thresholds
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-alerts")
        self._alerts: ClinicAlerts | None = None

    async def _run(self, fn: Callable[[ClinicAlerts], T]) -> T:
        def call() -> T:
            if self._alerts is None:
                self._alerts = ClinicAlerts(self._url, self._thresholds)
            return fn(self._alerts)

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def acknowledge(
        self, alert_id: str, *, by: str, by_patient: bool = False
    ) -> Alert | None:
        now = self._clock.now()
        return await self._run(
            lambda a: a.acknowledge(alert_id, by=by, by_patient=by_patient, now=now)
        )

    async def snooze(
        self, patient_id: str, kind: AlertKind, *, minutes: int, by: str, by_patient: bool = False
    ) -> None:
        now = self._clock.now()
        await self._run(
            lambda a: a.snooze(
                patient_id, kind, minutes=minutes, by=by, by_patient=by_patient, now=now
            )
        )

    def close(self) -> None:
        def shut() -> None:
            if self._alerts is not None:
                self._alerts.close()

        self._executor.submit(shut).result()
        self._executor.shutdown(wait=True)


class ArchiveLedger:
    """The clinic signs no log of its own: each hub's log is verified into the archive, and
    the dashboards serve it through `gateway.clinic.hub_logs.ArchivedLogs`. The public log
    routes of this site (`/log/checkpoint`, tiles, cosignatures) answer "none"."""

    def verifier_key(self) -> str:
        return ""

    def batch_public_jwk(self) -> dict[str, str]:
        return {}

    async def checkpoint_note(self) -> str | None:
        return None

    async def tile(self, path: str) -> bytes | None:
        return None

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        raise InputError("the clinic keeps no log of its own")

    async def inclusion_proof(self, seq: int) -> tuple[int, list[bytes]]:
        raise InputError("the clinic keeps no log of its own")

    async def batch_view(self, seq: int, patients: AbstractSet[str]) -> DisclosedBatch | None:
        return None

    async def inclusion_proof_file(
        self, seq: int, patients: AbstractSet[str]
    ) -> DisclosedBatch | None:
        return None

    async def quarantined(self) -> list[QuarantinedRecord]:
        return []

    async def add_cosignature(self, text: str) -> None:
        raise InputError("the clinic keeps no log of its own to cosign")


class DashboardStatus:
    """`/healthz` and `/metrics` of a clinic dashboard process: its live viewers only (the
    workers serve the archive's figures)."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._started = clock.monotonic()
        self.live: Callable[[], dict[str, int]] = dict

    def health(self) -> dict[str, object]:
        return {
            "status": "ok",
            "role": "clinic-dashboard",
            "uptime_s": round(self._clock.monotonic() - self._started, 1),
            "live": self.live(),
        }

    def prometheus_text(self) -> str:
        live = self.live()
        lines = [
            "# HELP glucohub_dashboard_viewers Open live channels of this dashboard process.",
            "# TYPE glucohub_dashboard_viewers gauge",
            f"glucohub_dashboard_viewers {live.get('viewers', 0)}",
            "# HELP glucohub_dashboard_dropped_events_total Live messages dropped from slow"
            " viewers' queues.",
            "# TYPE glucohub_dashboard_dropped_events_total counter",
            f"glucohub_dashboard_dropped_events_total {live.get('dropped_total', 0)}",
        ]
        return "\n".join(lines) + "\n"
