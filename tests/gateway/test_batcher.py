from gateway.batcher import Batcher, BatchPolicy


def test_seals_when_full() -> None:
    b = Batcher(BatchPolicy(max_readings=10, max_seconds=60))
    b.add(9, now=0.0)
    assert not b.due(0.0)
    b.add(1, now=0.5)
    assert b.due(0.5)


def test_seals_when_the_oldest_waited_long_enough() -> None:
    b = Batcher(BatchPolicy(max_readings=1000, max_seconds=5))
    b.add(1, now=100.0)
    b.add(1, now=104.0)
    assert not b.due(104.9)
    assert b.seconds_until_due(104.0) == 1.0
    assert b.due(105.0)


def test_nothing_pending_is_never_due() -> None:
    b = Batcher(BatchPolicy(max_readings=1, max_seconds=0.001))
    assert not b.due(1e9)
    assert b.seconds_until_due(0.0) is None


def test_partial_seal_restarts_the_timer_for_the_rest() -> None:
    b = Batcher(BatchPolicy(max_readings=10, max_seconds=5))
    b.add(15, now=0.0)
    b.sealed(10, now=1.0)
    assert b.pending == 5
    assert not b.due(5.5)
    assert b.due(6.0)
