"""Batch consensus metrics: 1,000 patients x 14 days of 5-minute CGM data in under 10 s.

Prints the wall time of `metrics_for_many` and, as a ratio, how it compares with a baseline
measured in the same run over the same arrays: a plain numpy grouped mean and SD (one
`bincount` pass each), i.e. the least any per-patient summary of this data can cost here.
Run: `.venv/bin/python -m bench bench_metrics` (or `python -m bench.bench_metrics`).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from gateway.clinical.metrics import metrics_for_many

PATIENTS = 1_000
DAYS = 14
INTERVAL_MIN = 5
BUDGET_S = 10.0


def make_frame(seed: int = 7) -> tuple[pd.DataFrame, datetime]:
    """Synthetic but CGM-like: per-patient level, daily sine, AR noise, 2 % missed readings."""
    rng = np.random.default_rng(seed)
    per_patient = DAYS * 24 * 60 // INTERVAL_MIN
    end = datetime(2026, 3, 15, tzinfo=UTC)
    start = end - timedelta(days=DAYS)
    minutes = np.arange(per_patient) * INTERVAL_MIN
    level = rng.normal(150, 30, PATIENTS)[:, None]
    swing = rng.uniform(20, 60, PATIENTS)[:, None]
    noise = rng.normal(0, 12, (PATIENTS, per_patient)).cumsum(axis=1) * 0.05
    glucose = level + swing * np.sin(2 * np.pi * minutes / 1440.0)[None, :] + noise
    glucose = np.clip(glucose, 40, 400)
    keep = rng.random((PATIENTS, per_patient)) > 0.02
    patient = np.repeat(np.array([f"p{i:04d}" for i in range(PATIENTS)]), per_patient)
    t_ns = np.tile(minutes.astype(np.int64) * 60_000_000_000, PATIENTS) + int(
        pd.Timestamp(start).value
    )
    frame = pd.DataFrame(
        {
            "patient_id": patient[keep.ravel()],
            "time": pd.to_datetime(t_ns[keep.ravel()], utc=True),
            "glucose_mg_dl": glucose.ravel()[keep.ravel()],
        }
    )
    return frame, end


def baseline(frame: pd.DataFrame) -> float:
    """Plain numpy grouped mean and SD over the same data: the floor we compare against."""
    t0 = time.perf_counter()
    codes, _ = pd.factorize(frame["patient_id"])
    g = frame["glucose_mg_dl"].to_numpy()
    n = np.bincount(codes)
    mean = np.bincount(codes, weights=g) / n
    sd = np.sqrt(np.bincount(codes, weights=(g - mean[codes]) ** 2) / (n - 1))
    assert np.isfinite(sd).all()
    return time.perf_counter() - t0


def main() -> None:
    frame, now = make_frame()
    zones = {
        f"p{i:04d}": ("Europe/London" if i % 2 else "America/New_York") for i in range(PATIENTS)
    }
    rows = len(frame)
    base = min(baseline(frame) for _ in range(3))
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        result = metrics_for_many(frame, now=now, days=DAYS, timezones=zones)
        best = min(best, time.perf_counter() - t0)
    assert len(result) == PATIENTS
    verdict = "PASS" if best < BUDGET_S else "FAIL"
    print(f"rows: {rows:,} ({PATIENTS} patients x {DAYS} days, {INTERVAL_MIN}-min, 2% missing)")
    print(f"metrics_for_many: {best:.2f} s (budget {BUDGET_S:.0f} s) {verdict}")
    print(f"baseline numpy grouped mean+SD: {base:.3f} s; ratio {best / base:.1f}x")
    print(f"throughput: {rows / best / 1e6:.2f} M readings/s")
    print(f"median TIR across patients: {result['in_range_percent'].median():.1f} %")


if __name__ == "__main__":
    main()
