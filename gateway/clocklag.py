"""Notice that the hub's own clock is behind its devices' (a Raspberry Pi boots without a
battery clock and runs on a stale time until NTP answers), so their readings are not
refused as "in the future".

A reading more than the allowed skew ahead of the hub's clock is refused, unless the hub's
clock, not the device, is what is wrong. That is believed when

- two or more devices agree (within `agree`) on a time ahead of the hub's clock, and they
  outnumber the devices whose recent readings agree with the hub's clock; or
- the kernel reports the clock unsynchronized, no device's recent readings agree with it,
  and the device is at most `LONE_AHEAD_MAX` ahead (a hub unplugged for a month boots that
  far behind with the time it saved; further needs a second device to agree).

The devices' time so found is kept as an estimate of true time, carried on by the monotonic
clock: readings up to it (plus the skew) are accepted, and the devices that showed it may
move it on (a backlog arriving oldest first), until the hub's clock catches up (NTP steps
it) or the kernel reports it synchronized. A lone device far ahead of the others, or of a
hub whose clock other devices confirm, is still refused.

Pure: the caller passes the wall and monotonic clocks and the kernel's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.clockjump import ClockJump

AGREE = timedelta(minutes=15)  # two clocks this close tell the same time
RECENT_S = 3600.0  # a device's newest reading speaks for this long (monotonic seconds)
LONE_AHEAD_MAX = timedelta(days=31)


@dataclass(frozen=True, slots=True)
class _Seen:
    """A time a device gave, and the monotonic clock when the hub saw it."""

    time: datetime
    mono: float

    def at(self, mono: float) -> datetime:
        return self.time + timedelta(seconds=mono - self.mono)


@dataclass(frozen=True, slots=True, kw_only=True)
class LagVerdict:
    accepted: bool
    now: datetime  # what the reading's time is to be judged against
    detail: str = ""  # why the hub's clock was not found behind (when refused)
    event: ClockJump | None = None  # the hub's clock newly found behind: record it


class ClockLagJudge:
    """Judge readings ahead of the hub's clock (`judge`); learn from stored ones
    (`stored`). Not thread-safe: the hub's writer thread owns it."""

    def __init__(
        self, skew: timedelta, *, agree: timedelta = AGREE, recent_s: float = RECENT_S
    ) -> None:
        self._skew = skew
        self._agree = agree
        self._recent_s = recent_s
        self._stored: dict[str, _Seen] = {}  # each device's newest stored reading
        self._claims: dict[str, _Seen] = {}  # each device's newest refused "future" time
        self._truth: _Seen | None = None
        self._truth_by: frozenset[str] = frozenset()

    def stored(self, device_id: str, newest: datetime, mono: float) -> None:
        """A reading of `device_id` dated `newest` was stored."""
        _keep_newest(self._stored, device_id, _Seen(newest, mono), self._recent_s)

    def behind(self, wall: datetime, mono: float) -> timedelta | None:
        """How far the hub's clock is believed behind, if it is."""
        if self._truth is None:
            return None
        return self._truth.at(mono) - wall

    def judge(
        self,
        device_id: str,
        newest: datetime,
        *,
        wall: datetime,
        mono: float,
        synchronized: bool | None,
    ) -> LagVerdict:
        """One input's newest reading, `newest` from `device_id`, is more than the skew ahead
        of the hub's clock `wall`: is that the hub's clock being behind? `synchronized` is
        the kernel's view of the clock (None: unknown)."""
        if synchronized:
            self._truth = None
            return self._refuse(device_id, newest, mono, wall, "the hub's clock is synchronized")
        truth = self._truth
        if truth is not None and truth.at(mono) - wall <= self._skew:
            truth = self._truth = None  # the hub's clock caught up: NTP stepped it
        if truth is not None and newest <= truth.at(mono) + self._skew:
            return LagVerdict(accepted=True, now=truth.at(mono))
        agreeing = self._near(self._stored.items(), wall, mono)
        others = [
            (d, s) for d, s in (*self._stored.items(), *self._claims.items()) if d != device_id
        ]
        corroborating = self._near(others, newest, mono)
        if corroborating and len(corroborating) + 1 > len(agreeing):
            evidence = f"devices {', '.join([device_id, *corroborating])} agree"
        elif (
            synchronized is False
            and not agreeing
            and (truth is None or device_id in self._truth_by)
            and newest - wall <= LONE_AHEAD_MAX
        ):
            evidence = f"the kernel reports the clock unsynchronized; device {device_id}"
        elif agreeing:
            return self._refuse(
                device_id, newest, mono, wall, f"device {agreeing[0]} agrees with the hub's clock"
            )
        else:
            why = "no other device confirms the hub's clock is behind that far"
            return self._refuse(device_id, newest, mono, wall, why)
        self._truth = _Seen(newest, mono)
        self._truth_by = (self._truth_by if truth else frozenset()) | {device_id, *corroborating}
        event = None if truth else ClockJump(expected=newest, found=wall, evidence=evidence)
        return LagVerdict(accepted=True, now=newest, event=event)

    def _near(self, seen: Iterable[tuple[str, _Seen]], time: datetime, mono: float) -> list[str]:
        """The devices whose recent time, carried on to now, is within `agree` of `time`."""
        return sorted(
            {
                device
                for device, s in seen
                if mono - s.mono <= self._recent_s and abs(s.at(mono) - time) <= self._agree
            }
        )

    def _refuse(
        self, device_id: str, newest: datetime, mono: float, wall: datetime, why: str
    ) -> LagVerdict:
        _keep_newest(self._claims, device_id, _Seen(newest, mono), self._recent_s)
        return LagVerdict(accepted=False, now=wall, detail=why)


def _keep_newest(seen: dict[str, _Seen], device_id: str, new: _Seen, recent_s: float) -> None:
    old = seen.get(device_id)
    if old is None or new.mono - old.mono > recent_s or new.time >= old.at(new.mono):
        seen[device_id] = new
