"""How well the predicted-low alert anticipates real hypoglycaemia, on simulated patients.

For 20 virtual patients (`device_adapters.virtual.physiology.demo_profile(0..19)`) over 14 days:

* truth: the noise-free trace (`true_glucose_mg_dl`) minute by minute. A hypoglycaemic episode
  is < 70 mg/dL for >= 15 minutes; it ends after >= 15 minutes back at >= 70 (consensus
  episode definition), so a brief bounce does not make two episodes. Onset = first minute < 70.
* the alert engine sees only what a hub sees: the noisy 5-minute CGM trace with its gaps and
  sensor warm-ups (`cgm_trace`), each reading arriving at its measurement time.
* caught: a predicted-low alert raised in the 60 minutes before onset (up to onset itself);
  minutes ahead = onset − raised_at. For comparison, the plain LOW alert (CGM < 70) delay.
* false alert: a predicted-low alert after which the true glucose stays >= 70 for the next
  30 minutes (the 20-minute horizon plus 10 minutes of slack).

Run: `.venv/bin/python -m bench.eval_predicted_low`
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from device_adapters.virtual.physiology import cgm_trace, demo_profile, true_glucose_mg_dl
from gateway.clinical.alerts import PatientAlertEngine, Thresholds
from gateway.model import AlertKind, AlertState, Reading, ReadingKind, Source
from gateway.units import Unit

PATIENTS = 20
DAYS = 14
START = datetime(2026, 3, 1, tzinfo=UTC)
LOOKAHEAD_MIN = 60  # a prediction counts for an episode starting up to an hour later
FALSE_WINDOW_MIN = 30


@dataclass(frozen=True, slots=True)
class Episode:
    onset: datetime
    minutes: int


@dataclass(slots=True)
class Tally:
    episodes: int = 0
    caught: int = 0
    alerts: int = 0
    false_alerts: int = 0
    near_misses: int = 0  # false alerts whose true nadir was still below 80 mg/dL
    low_alert_seen: int = 0

    def __iadd__(self, other: Tally) -> Tally:
        self.episodes += other.episodes
        self.caught += other.caught
        self.alerts += other.alerts
        self.false_alerts += other.false_alerts
        self.near_misses += other.near_misses
        self.low_alert_seen += other.low_alert_seen
        return self


def true_minutes(index: int) -> list[float]:
    profile = demo_profile(index)
    return [
        true_glucose_mg_dl(profile, START + timedelta(minutes=m)) for m in range(DAYS * 1440 + 90)
    ]


def episodes_of(truth: list[float]) -> list[Episode]:
    out: list[Episode] = []
    m, n = 0, DAYS * 1440
    while m < n:
        if truth[m] >= 70:
            m += 1
            continue
        onset, below, last_below = m, 0, m
        k = m
        while k < len(truth) and k - last_below < 15:  # ends after 15 min back at >= 70
            if truth[k] < 70:
                below += 1
                last_below = k
            k += 1
        if below >= 15:
            out.append(Episode(onset=START + timedelta(minutes=onset), minutes=below))
        m = k
    return out


def run_engine(index: int, thresholds: Thresholds) -> tuple[list[datetime], list[datetime]]:
    """(predicted-low raise times, low/urgent-low raise times) from the CGM trace."""
    profile = demo_profile(index)
    engine = PatientAlertEngine(f"virt-{index}", thresholds)
    predicted: list[datetime] = []
    lows: list[datetime] = []
    for sample in cgm_trace(profile, START, START + timedelta(days=DAYS)):
        if sample.glucose_mg_dl is None:
            continue
        reading = Reading(
            patient_id=f"virt-{index}",
            device_id="cgm",
            kind=ReadingKind.CGM_GLUCOSE,
            value=sample.glucose_mg_dl,
            unit=Unit.MG_DL,
            time=sample.time,
            source=Source.VIRTUAL,
        )
        for alert in engine.on_reading(reading, sample.time) + engine.tick(sample.time):
            if alert.state is not AlertState.RAISED or alert.updated_at != alert.raised_at:
                continue
            if alert.kind is AlertKind.PREDICTED_LOW:
                predicted.append(alert.raised_at)
            elif alert.kind in (AlertKind.LOW, AlertKind.URGENT_LOW, AlertKind.SUSTAINED_LOW):
                lows.append(alert.raised_at)
    return predicted, lows


def score(
    truth: list[float],
    episodes: list[Episode],
    predicted: list[datetime],
    lows: list[datetime],
    ahead: list[float],
    low_delay: list[float],
) -> Tally:
    tally = Tally(episodes=len(episodes), alerts=len(predicted))
    for ep in episodes:
        leads = [
            (ep.onset - t).total_seconds() / 60
            for t in predicted
            if timedelta(0) <= ep.onset - t <= timedelta(minutes=LOOKAHEAD_MIN)
        ]
        if leads:
            tally.caught += 1
            ahead.append(max(leads))  # the earliest warning for this episode
        delays = [
            (t - ep.onset).total_seconds() / 60
            for t in lows
            if timedelta(minutes=-LOOKAHEAD_MIN) <= t - ep.onset <= timedelta(minutes=ep.minutes)
        ]
        if delays:
            tally.low_alert_seen += 1
            low_delay.append(min(delays))
    for t in predicted:
        m = int((t - START).total_seconds() // 60)
        window = truth[m : m + FALSE_WINDOW_MIN + 1]
        if min(window) >= 70:
            tally.false_alerts += 1
            tally.near_misses += min(window) < 80
    return tally


def evaluate(thresholds: Thresholds, truths: list[list[float]]) -> None:
    total = Tally()
    ahead: list[float] = []
    low_delay: list[float] = []
    for index in range(PATIENTS):
        truth = truths[index]
        predicted, lows = run_engine(index, thresholds)
        total += score(truth, episodes_of(truth), predicted, lows, ahead, low_delay)
    patient_days = PATIENTS * DAYS
    caught_pct = 100 * total.caught / total.episodes if total.episodes else 0.0
    print(f"horizon {thresholds.predicted_low_horizon_min:.0f} min:")
    print(f"  true hypoglycaemic episodes (<70 for >=15 min): {total.episodes}")
    print(f"  caught ahead by predicted-low: {total.caught} ({caught_pct:.0f} %)")
    if ahead:
        q1, med, q3 = statistics.quantiles(ahead, n=4) if len(ahead) > 1 else (ahead[0],) * 3
        print(f"  minutes ahead of true onset: median {med:.0f} (IQR {q1:.0f}-{q3:.0f})")
    if low_delay:
        print(
            f"  for comparison, the LOW alert (CGM < 70) saw {total.low_alert_seen} episodes, "
            f"median {statistics.median(low_delay):+.0f} min after true onset"
        )
    print(
        f"  predicted-low alerts: {total.alerts}, false: {total.false_alerts} "
        f"({total.false_alerts / patient_days:.2f} per patient-day, "
        f"{total.alerts / patient_days:.2f} alerts per patient-day in all)"
    )
    print(f"  of the false alerts, near misses (true nadir 70-79 mg/dL): {total.near_misses}")


def main() -> None:
    print(f"{PATIENTS} virtual patients x {DAYS} days (seed 7), 5-min noisy CGM with gaps")
    truths = [true_minutes(i) for i in range(PATIENTS)]
    horizons = [float(h) for h in sys.argv[1:]] or [20.0]
    for horizon in horizons:
        evaluate(Thresholds(predicted_low_horizon_min=horizon), truths)


if __name__ == "__main__":
    main()
