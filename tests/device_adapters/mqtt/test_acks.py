"""In-order PUBACK release and reconnect backoff (pure)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.mqtt.acks import InOrderAcks
from device_adapters.mqtt.backoff import Backoff


def test_completion_out_of_order_is_released_in_arrival_order() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    for key, name in ((5, "a"), (9, "b"), (2, "c")):
        acks.arrived(key, name)
    assert acks.completed(9) == []  # "a" arrived first and is not done
    assert acks.completed(5) == ["a", "b"]
    assert acks.completed(2) == ["c"]
    assert len(acks) == 0


@given(st.permutations(list(range(30))))
def test_any_completion_order_releases_everything_in_arrival_order(order: list[int]) -> None:
    acks: InOrderAcks[int] = InOrderAcks()
    for key in range(30):
        acks.arrived(key, key)
    released: list[int] = []
    for key in order:
        released += acks.completed(key)
    assert released == list(range(30))


def test_unknown_and_repeated_keys_are_refused() -> None:
    acks: InOrderAcks[str] = InOrderAcks()
    acks.arrived(1, "x")
    with pytest.raises(ValueError):
        acks.arrived(1, "y")
    with pytest.raises(KeyError):
        acks.completed(2)


def test_backoff_ceiling_doubles_then_caps() -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0)
    # 0.5 x 2^n: 0.5, 1, 2, 4, 8, 16, then 32 is capped to 30
    assert [backoff.ceiling(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 16, 30]
    assert backoff.ceiling(10_000) == 30


@given(st.integers(0, 10_000), st.integers(0, 2**32))
def test_backoff_delay_is_jittered_within_half_to_full_ceiling(attempt: int, seed: int) -> None:
    backoff = Backoff(initial_s=0.5, max_s=30.0)
    delay = backoff.delay(attempt, random.Random(seed))
    assert backoff.ceiling(attempt) / 2 <= delay <= backoff.ceiling(attempt)
