"""Login throttling policy: pure exponential backoff over a failure count, `now` passed in.

Failures are counted separately per account and per source address (the counts live in the
hub's database, see `accounts.py`). The source limit is the strict one: one address that
guesses is soon held off for up to an hour. The account limit starts later and stays short,
so guessing one password from many addresses is slowed to a few attempts an hour, while an
attacker cannot keep a user out for long: to push an account's delay up they must fail from
somewhere, and each address they fail from is held off longer than the account is.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class Backoff:
    """After `free` failures, wait `base_s`, then twice as long after each further failure,
    up to `max_s`. A key with no failure for `forget_s` starts again from zero."""

    free: int
    base_s: float = 1.0
    max_s: float
    forget_s: float = 24 * 3600.0

    def delay_s(self, failures: int) -> float:
        """Seconds a key must wait after its `failures`-th failure."""
        if failures < self.free:
            return 0.0
        exponent = min(failures - self.free, 64)  # 2**64 s is past any max_s
        return min(self.max_s, self.base_s * 2.0**exponent)


PER_SOURCE = Backoff(free=5, max_s=3600.0)
PER_ACCOUNT = Backoff(free=10, max_s=900.0)


def source_key(address: str) -> str:
    """The throttling key of a client address: an IPv6 client owns a whole /64, so counting
    single IPv6 addresses would let it rotate through 2^64 of them."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
