from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from dashboards.ratelimit import PER_ACCOUNT, PER_SOURCE, Backoff, source_key


def test_free_failures_then_doubling_up_to_the_cap() -> None:
    policy = Backoff(free=3, base_s=1.0, max_s=10.0)
    assert [policy.delay_s(n) for n in range(1, 9)] == [0, 0, 1, 2, 4, 8, 10, 10]
    assert policy.delay_s(10**9) == 10.0  # no overflow for absurd counts


@given(st.integers(min_value=0, max_value=10**6))
def test_an_account_is_never_held_longer_than_the_source_that_failed_it(failures: int) -> None:
    # Every failure an attacker adds to an account also counts against their own address,
    # so the address waits at least as long as the account it is locking.
    assert PER_ACCOUNT.delay_s(failures) <= PER_SOURCE.delay_s(failures)
    assert PER_ACCOUNT.delay_s(failures) <= 900.0


def test_ipv6_clients_are_counted_per_64() -> None:
    assert (
        source_key("2001:db8:1:2::1") == source_key("2001:db8:1:2:ffff::9") == ("2001:db8:1:2::/64")
    )
    assert source_key("2001:db8:1:3::1") != source_key("2001:db8:1:2::1")
    assert source_key("::ffff:192.0.2.7") == "192.0.2.7" == source_key("192.0.2.7")
    assert source_key("unix-socket") == "unix-socket"
