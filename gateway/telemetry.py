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

    def __init__(self) -> None:
        self._counters: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
        self._gauges: dict[str, Callable[[], float]] = {}
        for name in self._HELP:
            if name != "glucohub_readings_rejected_total":
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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
