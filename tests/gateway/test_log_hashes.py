"""Subtree hashes of a log read on demand (`gateway.log_hashes`): the proofs they give equal
the ones computed over every leaf at once (`ledger.rfc6962`'s reference functions), and a
long log is read in a few large reads, once."""

from __future__ import annotations

import hashlib

import pytest

from gateway.errors import InputError
from gateway.log_hashes import READ_RUNS, RUN, LogHashes
from ledger import rfc6962


class Leaves:
    """A log's leaf hashes, counting what is read."""

    def __init__(self, n: int) -> None:
        self.hashes = [rfc6962.leaf_hash(hashlib.sha256(b"%d" % i).digest()) for i in range(n)]
        self.calls = 0
        self.read = 0

    def __call__(self, start: int, end: int) -> list[bytes]:
        self.calls += 1
        got = self.hashes[start:end]
        self.read += len(got)
        return got


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 511, 600, 1100])
def test_proofs_equal_the_ones_over_every_leaf(size: int) -> None:
    leaves, hashes = Leaves(size), LogHashes()
    for index in sorted({0, 1, size // 2, size - 2, size - 1} & set(range(size))):
        got = rfc6962.inclusion_proof_with(
            lambda a, b: hashes.range_hash(leaves, a, b), index, size
        )
        assert got == rfc6962.inclusion_proof_from_hashes(leaves.hashes, index)
        rfc6962.verify_inclusion(
            leaves.hashes[index], index, size, got, rfc6962.root_from_hashes(leaves.hashes)
        )
    for old in sorted({1, size // 3, size - 1} & set(range(1, size))):
        got = rfc6962.consistency_proof_with(
            lambda a, b: hashes.range_hash(leaves, a, b), old, size
        )
        assert got == rfc6962.consistency_proof_from_hashes(leaves.hashes, old)


def test_a_long_log_is_read_in_a_few_large_reads_then_only_at_its_edges() -> None:
    size = RUN * READ_RUNS * 2 + 100  # two reads' worth of whole runs, and a partial run
    leaves, hashes = Leaves(size), LogHashes()
    rfc6962.inclusion_proof_with(lambda a, b: hashes.range_hash(leaves, a, b), 7, size)
    # Every leaf at most once, except the run holding leaf 7 (its siblings below 256 are
    # read directly); one read per sibling on the path (a tree of 18 levels), where one
    # read per run would be 2 * READ_RUNS = 512.
    assert leaves.read <= size + RUN
    assert leaves.calls <= (size - 1).bit_length() == 18
    before = leaves.read
    rfc6962.inclusion_proof_with(lambda a, b: hashes.range_hash(leaves, a, b), size - 300, size)
    # The runs are known: only the 100 leaves past the last whole run, the 255 siblings
    # inside the leaf's own run, and run 0 (the first proof read inside it, not all of it).
    assert leaves.read - before == 100 + 255 + RUN


def test_missing_leaves_are_an_input_error() -> None:
    leaves = Leaves(300)
    with pytest.raises(InputError, match="no leaves"):
        LogHashes().range_hash(leaves, 0, 600)
