"""The judge of readings ahead of the hub's clock (gateway/clocklag.py): the hub's clock is
believed behind when devices agree on it, or the kernel says the clock is unsynchronized and
no device contradicts; a lone device far ahead is still refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from gateway.clocklag import ClockLagJudge

TRUE_NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)
HUB_WALL = TRUE_NOW - timedelta(days=3)  # booted with a stale clock
SKEW = timedelta(minutes=5)


def judge() -> ClockLagJudge:
    return ClockLagJudge(SKEW)


def test_two_devices_agreeing_show_the_hub_behind_though_the_kernel_cannot_say() -> None:
    j = judge()
    first = j.judge("cgm-1", TRUE_NOW, wall=HUB_WALL, mono=100.0, synchronized=None)
    assert not first.accepted and first.now == HUB_WALL
    assert first.detail == "no other device confirms the hub's clock is behind that far"
    # 30 s later the meter says the same time (within 15 minutes): it is the hub's clock
    second = j.judge(
        "meter-1",
        TRUE_NOW + timedelta(seconds=20),
        wall=HUB_WALL + timedelta(seconds=30),
        mono=130.0,
        synchronized=None,
    )
    assert second.accepted and second.now == TRUE_NOW + timedelta(seconds=20)
    assert second.event is not None
    assert second.event.ledger_event() == {
        "type": "hub_clock_jump",
        "direction": "behind",
        "jump_s": -(3 * 86400 - 10.0),  # the hub's 08:00:30 against the devices' 08:00:20
        "expected": "2026-12-06T08:00:20.000Z",
        "found": "2026-12-03T08:00:30.000Z",
        "evidence": "devices meter-1, cgm-1 agree",
    }
    # from now on the CGM's next reading is within the estimate: accepted, no new event
    third = j.judge(
        "cgm-1",
        TRUE_NOW + timedelta(minutes=5),
        wall=HUB_WALL + timedelta(minutes=5),
        mono=400.0,
        synchronized=None,
    )
    assert third.accepted and third.event is None


def test_an_unsynchronized_kernel_lets_a_lone_device_show_it() -> None:
    j = judge()
    lone = j.judge("cgm-1", TRUE_NOW, wall=HUB_WALL, mono=0.0, synchronized=False)
    assert lone.accepted and lone.event is not None
    assert lone.event.direction == "behind" and lone.event.seconds == -3 * 86400
    assert lone.event.evidence == "the kernel reports the clock unsynchronized; device cgm-1"
    assert j.behind(HUB_WALL + timedelta(seconds=60), 60.0) == timedelta(days=3)


def test_a_backlog_arriving_oldest_first_moves_the_estimate_on_with_one_event() -> None:
    """A meter's day of records, one message each, within a second of the hub's clock."""
    j = judge()
    start = TRUE_NOW - timedelta(days=1)
    verdicts = [
        j.judge(
            "meter-1",
            start + timedelta(minutes=5 * i),
            wall=HUB_WALL,
            mono=i / 1000,
            synchronized=False,
        )
        for i in range(289)
    ]
    assert all(v.accepted for v in verdicts)
    assert sum(v.event is not None for v in verdicts) == 1


def test_a_device_two_years_ahead_is_refused_while_another_agrees_with_the_hub() -> None:
    j = judge()
    j.stored("cgm-1", TRUE_NOW - timedelta(minutes=2), mono=0.0)  # a live CGM, on time
    ahead = TRUE_NOW + timedelta(days=730)
    verdict = j.judge("meter-9", ahead, wall=TRUE_NOW, mono=60.0, synchronized=False)
    assert not verdict.accepted and verdict.now == TRUE_NOW
    assert verdict.detail == "device cgm-1 agrees with the hub's clock"


def test_a_lone_device_two_years_ahead_needs_a_second_device() -> None:
    """Even with the kernel unsynchronized and nothing to contradict it: more than 31 days."""
    j = judge()
    verdict = j.judge(
        "meter-9", TRUE_NOW + timedelta(days=730), wall=TRUE_NOW, mono=0.0, synchronized=False
    )
    assert not verdict.accepted
    assert verdict.detail == "no other device confirms the hub's clock is behind that far"


def test_a_device_far_beyond_the_devices_agreed_time_is_refused() -> None:
    j = judge()
    j.judge("cgm-1", TRUE_NOW, wall=HUB_WALL, mono=0.0, synchronized=False)
    j.stored("cgm-1", TRUE_NOW, mono=0.0)
    assert j.judge("meter-1", TRUE_NOW, wall=HUB_WALL, mono=1.0, synchronized=False).accepted
    j.stored("meter-1", TRUE_NOW, mono=1.0)
    stray = j.judge(
        "scale-1", TRUE_NOW + timedelta(days=730), wall=HUB_WALL, mono=2.0, synchronized=False
    )
    assert not stray.accepted
    assert stray.detail == "no other device confirms the hub's clock is behind that far"


def test_a_synchronized_clock_is_believed() -> None:
    j = judge()
    j.judge("cgm-1", TRUE_NOW, wall=HUB_WALL, mono=0.0, synchronized=None)
    verdict = j.judge("meter-1", TRUE_NOW, wall=HUB_WALL, mono=1.0, synchronized=True)
    assert not verdict.accepted and verdict.detail == "the hub's clock is synchronized"


def test_the_estimate_ends_when_the_hubs_clock_catches_up() -> None:
    j = judge()
    assert j.judge("cgm-1", TRUE_NOW, wall=HUB_WALL, mono=0.0, synchronized=False).accepted
    # NTP steps the clock to the truth 10 minutes later; a device then an hour ahead of it
    # is not "the hub's clock behind" any more: another device agrees with the hub.
    j.stored("meter-1", TRUE_NOW + timedelta(minutes=9), mono=540.0)
    later = TRUE_NOW + timedelta(minutes=10)
    verdict = j.judge(
        "cgm-1", later + timedelta(hours=1), wall=later, mono=600.0, synchronized=None
    )
    assert j.behind(later, 600.0) is None
    assert not verdict.accepted and verdict.detail == "device meter-1 agrees with the hub's clock"
