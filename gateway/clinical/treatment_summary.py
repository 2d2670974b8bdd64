"""Recorded insulin and carbohydrates over a report's window, beside the glucose metrics.

What the patient's pump, phone app or pen logged (Nightscout treatments), summed per local day:
bolus and injected insulin in units, carbohydrates in grams. Daily means are over the days
that have any such record, not over the whole window: a day without records is a day the
uploader was off (or the patient did not log), not a day without insulin. The pump's
scheduled basal is not in the treatments (only temporary changes to it are), so total daily
insulin on a pump is not known here and is not shown; temporary basal changes are counted.

Pure: treatments in, numbers out; they never enter the glucose metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from gateway.clock import require_utc
from gateway.model import Treatment, TreatmentKind


@dataclass(frozen=True, slots=True, kw_only=True)
class TreatmentSummary:
    days: int  # the report's window
    days_recorded: int  # local days with at least one insulin or carbohydrate record
    insulin_units_per_day: float  # means over the days recorded
    boluses_per_day: float
    carbs_grams_per_day: float
    carb_entries_per_day: float
    temp_basal_changes: int  # over the whole window

    def to_dict(self) -> dict[str, float | int]:
        return {
            "days": self.days,
            "days_recorded": self.days_recorded,
            "insulin_units_per_day": self.insulin_units_per_day,
            "boluses_per_day": self.boluses_per_day,
            "carbs_grams_per_day": self.carbs_grams_per_day,
            "carb_entries_per_day": self.carb_entries_per_day,
            "temp_basal_changes": self.temp_basal_changes,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class DayMark:
    minute: float  # of the local day
    insulin_units: float | None
    carbs_grams: float | None


def in_window(treatments: Iterable[Treatment], *, now: datetime, days: int) -> list[Treatment]:
    """The treatments in `[now − days, now]`, oldest first."""
    end = require_utc(now)
    start = end - timedelta(days=days)
    return sorted((t for t in treatments if start <= t.time <= end), key=lambda t: t.time)


def summarise(
    treatments: Iterable[Treatment], *, now: datetime, days: int, timezone: str
) -> TreatmentSummary | None:
    """The window's insulin and carbohydrates, or None when nothing of either was recorded."""
    zone = ZoneInfo(timezone)
    insulin: dict[date, float] = {}
    boluses: dict[date, int] = {}
    carbs: dict[date, float] = {}
    entries: dict[date, int] = {}
    temp_basals = 0
    for t in in_window(treatments, now=now, days=days):
        day = t.time.astimezone(zone).date()
        if t.kind is TreatmentKind.TEMP_BASAL:
            temp_basals += 1
            continue
        if t.insulin_units:
            insulin[day] = insulin.get(day, 0.0) + t.insulin_units
            boluses[day] = boluses.get(day, 0) + 1
        if t.carbs_grams:
            carbs[day] = carbs.get(day, 0.0) + t.carbs_grams
            entries[day] = entries.get(day, 0) + 1
    recorded = len(insulin.keys() | carbs.keys())
    if not recorded:
        return None
    return TreatmentSummary(
        days=days,
        days_recorded=recorded,
        insulin_units_per_day=sum(insulin.values()) / recorded,
        boluses_per_day=sum(boluses.values()) / recorded,
        carbs_grams_per_day=sum(carbs.values()) / recorded,
        carb_entries_per_day=sum(entries.values()) / recorded,
        temp_basal_changes=temp_basals,
    )


def day_marks(
    treatments: Iterable[Treatment], *, now: datetime, days: int, timezone: str
) -> dict[date, list[DayMark]]:
    """Insulin and carbohydrate records by local day, for the daily profiles."""
    zone = ZoneInfo(timezone)
    out: dict[date, list[DayMark]] = {}
    for t in in_window(treatments, now=now, days=days):
        if t.kind is TreatmentKind.TEMP_BASAL or not (t.insulin_units or t.carbs_grams):
            continue
        local = t.time.astimezone(zone)
        out.setdefault(local.date(), []).append(
            DayMark(
                minute=local.hour * 60 + local.minute + local.second / 60,
                insulin_units=t.insulin_units or None,
                carbs_grams=t.carbs_grams or None,
            )
        )
    return out
