"""A patient's therapy settings as a Nightscout profile carries them, typed: insulin action
time, carbohydrate ratio, insulin sensitivity, basal rates and targets by time of day.

The shape is Nightscout's profile document (nightscout/cgm-remote-monitor,
lib/profilefunctions.js: `store[name]` holds `dia`,
`carbratio`, `sens`, `basal`, `target_low`, `target_high` as lists of
{"time": "HH:MM", "value": n, "timeAsSeconds": s}, plus `timezone` and `units`). AndroidAPS
(ProfileSealed/ProfileStore JSON) and Loop (NightscoutKit ProfileSet) upload it so. Pure:
the forecast helper may read ISF and carbohydrate ratio from it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gateway.errors import InputError, UnknownUnit
from gateway.units import Unit, parse_unit, to_canonical

_DAY_S = 24 * 3600
MAX_STEPS = 48  # a schedule step per half hour at most (AndroidAPS: one per hour)


class ProfileError(InputError):
    """A profile document that does not have Nightscout's profile shape."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleStep:
    start_s: int  # seconds after local midnight at which `value` starts
    value: float


@dataclass(frozen=True, slots=True, kw_only=True)
class TherapyProfile:
    """One named profile of a profile store. Glucose values are in `unit` as uploaded."""

    name: str
    dia_hours: float
    carb_ratio_g_per_u: tuple[ScheduleStep, ...]
    isf_per_u: tuple[ScheduleStep, ...]  # `unit` per insulin unit
    basal_u_per_h: tuple[ScheduleStep, ...]
    target_low: tuple[ScheduleStep, ...]
    target_high: tuple[ScheduleStep, ...]
    timezone: str
    unit: Unit

    def carb_ratio_at(self, when: datetime) -> float:
        """Grams of carbohydrate one unit of insulin covers at `when`."""
        return _value_at(self.carb_ratio_g_per_u, self._seconds(when))

    def isf_mg_dl_at(self, when: datetime) -> float:
        """mg/dL one unit of insulin lowers glucose by at `when` (converted from mmol/L)."""
        value = _value_at(self.isf_per_u, self._seconds(when))
        return to_canonical(value, self.unit)[0]

    def basal_at(self, when: datetime) -> float:
        return _value_at(self.basal_u_per_h, self._seconds(when))

    def _seconds(self, when: datetime) -> int:
        local = when.astimezone(zone(self.timezone))
        return local.hour * 3600 + local.minute * 60 + local.second


_FIXED = re.compile(r"(?:GMT|UTC|Etc/GMT)?([+-])(\d{1,2}):?(\d{2})?")


def zone(name: str) -> tzinfo:
    """The time zone a profile names: an IANA name (AndroidAPS, Loop's usual identifiers),
    a fixed offset such as iOS's "GMT-0500", else UTC (Nightscout's moment-timezone falls
    back alike)."""
    if not name or name.upper() in ("UTC", "GMT"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", a long name
        pass
    fixed = _FIXED.fullmatch(name.strip())
    if fixed is None:
        return UTC
    sign, hours, minutes = fixed.groups()
    offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
    return timezone(-offset if sign == "-" else offset)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProfileSet:
    """A profile document: the profiles by name and which one is in use."""

    default_profile: str
    profiles: Mapping[str, TherapyProfile]

    @property
    def active(self) -> TherapyProfile:
        return self.profiles[self.default_profile]


def _value_at(steps: Sequence[ScheduleStep], seconds: int) -> float:
    current = steps[0].value
    for step in steps:
        if step.start_s <= seconds:
            current = step.value
    return current


def parse_profile_set(document: Mapping[str, object]) -> ProfileSet:
    """The typed profiles of a Nightscout profile document; `ProfileError` says what is
    wrong. Fields it does not know (loopSettings, mills, ...) are not its business."""
    store = document.get("store")
    if not isinstance(store, dict) or not store:
        raise ProfileError("a profile needs a non-empty `store` object")
    default = document.get("defaultProfile")
    if not isinstance(default, str) or default not in store:
        raise ProfileError("`defaultProfile` must name a profile of `store`")
    fallback_units = document.get("units")
    profiles = {
        str(name): _profile(str(name), body, fallback_units) for name, body in store.items()
    }
    return ProfileSet(default_profile=default, profiles=profiles)


def _profile(name: str, body: object, fallback_units: object) -> TherapyProfile:
    if not isinstance(body, dict):
        raise ProfileError(f"profile {name!r} must be an object")
    units = body.get("units", fallback_units)
    try:
        unit = parse_unit(units) if isinstance(units, str) else Unit.MG_DL
    except UnknownUnit:
        raise ProfileError(f"profile {name!r}: units {units!r} is not mg/dl or mmol") from None
    if unit not in (Unit.MG_DL, Unit.MMOL_L):
        raise ProfileError(f"profile {name!r}: units {units!r} is not mg/dl or mmol")
    zone_name = body.get("timezone") or ""
    if not isinstance(zone_name, str):
        raise ProfileError(f"profile {name!r}: timezone must be a text")
    dia = _number(body.get("dia"), f"profile {name!r}: dia")
    if not 0 < dia <= 24:
        raise ProfileError(f"profile {name!r}: dia {dia} is not 0-24 hours")
    return TherapyProfile(
        name=name,
        dia_hours=dia,
        carb_ratio_g_per_u=_schedule(body, "carbratio", name),
        isf_per_u=_schedule(body, "sens", name),
        basal_u_per_h=_schedule(body, "basal", name, zero_ok=True),
        target_low=_schedule(body, "target_low", name),
        target_high=_schedule(body, "target_high", name),
        timezone=zone_name,
        unit=unit,
    )


def _schedule(
    body: Mapping[str, object], field: str, name: str, *, zero_ok: bool = False
) -> tuple[ScheduleStep, ...]:
    where = f"profile {name!r}: {field}"
    given = body.get(field)
    if isinstance(given, int | float) and not isinstance(given, bool):
        given = [{"time": "00:00", "value": given}]  # old profiles: one value all day
    if not isinstance(given, list) or not given:
        raise ProfileError(f"{where} must be a non-empty list of {{time, value}}")
    if len(given) > MAX_STEPS:
        raise ProfileError(f"{where} has {len(given)} steps (at most {MAX_STEPS})")
    steps = [_step(item, where) for item in given]
    steps.sort(key=lambda s: s.start_s)
    for step in steps:
        if step.value < 0 or (step.value == 0 and not zero_ok):
            raise ProfileError(f"{where}: value {step.value} must be above 0")
    return tuple(steps)


def _step(item: object, where: str) -> ScheduleStep:
    if not isinstance(item, dict):
        raise ProfileError(f"{where}: each step must be an object")
    value = _number(item.get("value"), f"{where} value")
    seconds = item.get("timeAsSeconds")
    if seconds is None:
        seconds = _clock_seconds(item.get("time"), where)
    if isinstance(seconds, str):
        seconds = _number(seconds, f"{where} timeAsSeconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ProfileError(f"{where}: timeAsSeconds must be a number")
    if not 0 <= seconds < _DAY_S:
        raise ProfileError(f"{where}: timeAsSeconds {seconds} is not within a day")
    return ScheduleStep(start_s=int(seconds), value=value)


def _clock_seconds(text: object, where: str) -> int:
    if not isinstance(text, str):
        raise ProfileError(f"{where}: a step needs time (HH:MM) or timeAsSeconds")
    hours, _, minutes = text.partition(":")
    if not (hours.isdigit() and minutes.isdigit()):
        raise ProfileError(f"{where}: time {text!r} is not HH:MM")
    return int(hours) * 3600 + int(minutes) * 60


def _number(value: object, where: str) -> float:
    if isinstance(value, str):  # Loop and old Nightscout editors send numbers as text
        try:
            value = float(value)
        except ValueError:
            raise ProfileError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProfileError(f"{where} must be a number, got {value!r}")
    return float(value)
