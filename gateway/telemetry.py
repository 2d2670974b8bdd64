"""Counters and gauges for /metrics (Prometheus text format 0.0.4) and /healthz.

/metrics is unauthenticated: only operational figures belong here (ingest, queues, dead
letters by reason, the ledger), never one derived from a patient's health such as alert
counts by kind, which on a one-patient hub would say who had an urgent low.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import ClassVar


class Telemetry:
    """Monotonic counters with optional labels, plus gauges read at scrape time."""

    _HELP: ClassVar[dict[str, str]] = {
        "glucohub_readings_ingested_total": "Readings durably stored.",
        "glucohub_readings_duplicate_total": "Readings dropped as replays of stored ones.",
        "glucohub_readings_rejected_total": "Inputs refused, by reason (dead-lettered).",
        "glucohub_ledger_batches_total": "Ledger batches sealed and signed.",
        "glucohub_ledger_readings_sealed_total": "Readings sealed into ledger batches.",
        "glucohub_device_events_total": "Device events stored.",
        "glucohub_dashboard_dropped_events_total": "Live events dropped for slow viewers.",
    }
    # Counters that only ever appear with labels (no unlabelled zero line).
    _LABELLED: ClassVar[frozenset[str]] = frozenset({"glucohub_readings_rejected_total"})

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._gauges: dict[str, Callable[[], float]] = {}
        for name in self._HELP:
            if name not in self._LABELLED:
                self._counters[(name, ())] += 0

    def inc(self, name: str, amount: int = 1, **labels: str) -> None:
        if name not in self._HELP:
            raise KeyError(f"unknown metric {name!r}")
        self._counters[(name, tuple(sorted(labels.items())))] += amount

    def value(self, name: str, **labels: str) -> int:
        return self._counters[(name, tuple(sorted(labels.items())))]

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self._gauges[name] = read

    def render(self) -> str:
        lines: list[str] = []
        for name, help_text in self._HELP.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} counter")
            for (metric, labels), count in sorted(self._counters.items()):
                if metric != name:
                    continue
                label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
                lines.append(f"{name}{{{label_text}}} {count}" if labels else f"{name} {count}")
        for name, read in sorted(self._gauges.items()):
            lines.append(f"# TYPE {name} gauge")
            lines.append(f"{name} {read():g}")
        return "\n".join(lines) + "\n"


class ClinicTelemetry(Telemetry):
    """A clinic worker's figures (`glucohub clinic`, `clinic.metrics_port`). Its alarms are
    about hubs' logs (a fork, a bad signature), never about a patient, so counting them by
    kind tells no one's health; no label names a hub or a patient."""

    _HELP: ClassVar[dict[str, str]] = {
        "glucohub_clinic_items_total": "Items consumed and acknowledged, by kind.",
        "glucohub_clinic_batches_verified_total": "Batches verified and stored.",
        "glucohub_clinic_batches_duplicate_total": "Batches verified again: redeliveries.",
        "glucohub_clinic_checkpoints_total": "Checkpoints verified, by outcome.",
        "glucohub_clinic_rejected_total": "Items dead-lettered, by kind and reason.",
        "glucohub_clinic_alarms_total": "Alarms raised (or repeated), by kind.",
        "glucohub_clinic_records_stored_total": "Records (readings, device events) stored.",
        "glucohub_clinic_database_retries_total": "Archive calls retried after a database error.",
    }
    _LABELLED: ClassVar[frozenset[str]] = frozenset(
        {
            "glucohub_clinic_items_total",
            "glucohub_clinic_checkpoints_total",
            "glucohub_clinic_rejected_total",
            "glucohub_clinic_alarms_total",
        }
    )

    def __init__(self) -> None:
        super().__init__()
        # Zero lines for the labels every worker has, so rate() has a start.
        for kind in ("batches", "checkpoints"):
            self.inc("glucohub_clinic_items_total", 0, kind=kind)
        for outcome in ("accepted", "pending", "stale"):
            self.inc("glucohub_clinic_checkpoints_total", 0, outcome=outcome)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
