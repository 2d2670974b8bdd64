from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dashboards.ratelimit import FailureWindow


def test_blocks_after_limit_until_the_oldest_failure_ages_out() -> None:
    window = FailureWindow(limit=3, window_s=60.0)
    for t in (0.0, 10.0, 20.0):
        assert window.retry_after("k", t) == 0.0
        window.fail("k", t)
    # Three failures at 0, 10, 20: blocked until the first leaves the window at 0 + 60.
    assert window.retry_after("k", 30.0) == 30.0
    assert window.retry_after("other", 30.0) == 0.0
    assert window.retry_after("k", 60.0) == 0.0


def test_memory_is_bounded() -> None:
    window = FailureWindow(limit=2, window_s=60.0, max_keys=10)
    for i in range(100):
        window.fail(f"k{i}", 0.0)
    assert len(window._failures) == 10


@given(st.lists(st.floats(min_value=0, max_value=1000), max_size=30), st.integers(1, 6))
def test_never_blocks_with_fewer_than_limit_failures_in_window(
    times: list[float], limit: int
) -> None:
    window = FailureWindow(limit=limit, window_s=100.0)
    seen: list[float] = []
    for t in sorted(times):
        recent = [s for s in seen if s > t - 100.0]
        blocked = window.retry_after("k", t) > 0
        assert blocked == (len(recent) >= limit)
        window.fail("k", t)
        seen.append(t)
