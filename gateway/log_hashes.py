"""MTH (RFC 6962 §2.1) of any range of a log's leaves, read from storage as needed (pure:
the caller passes the function that reads leaf hashes).

Each complete run of 256 leaves (aligned) never changes once it is under a signed
checkpoint, so its hash is kept (32 bytes per 256 batches): a proof over a long log then
reads only the leaves at its edges, not every leaf, once the runs are known. The runs a
range needs and lacks are read together, in a few large reads rather than one per run.
Not thread-safe: use one from one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from gateway.errors import InputError
from ledger import rfc6962

# leaves(start, end): the leaf hashes of leaves start..end-1, in order (fewer if absent).
LeafReader = Callable[[int, int], Sequence[bytes]]

RUN = 256
# At most this many runs' leaves (2 MiB of hashes) are read at once when filling runs.
READ_RUNS = 256


class LogHashes:
    def __init__(self) -> None:
        self._runs: dict[int, bytes] = {}

    def range_hash(self, leaves: LeafReader, start: int, end: int) -> bytes:
        n = end - start
        if n <= RUN:
            if n == RUN and start % RUN == 0:
                cached = self._runs.get(start // RUN)
                if cached is None:
                    cached = self._runs[start // RUN] = _root(leaves, start, end)
                return cached
            return _root(leaves, start, end)
        if start % RUN == 0:
            self._fill(leaves, start // RUN, (end // RUN))
        # RFC 6962 splits at the largest power of two below n: runs stay aligned.
        k = 1 << ((n - 1).bit_length() - 1)
        return rfc6962.node_hash(
            self.range_hash(leaves, start, start + k), self.range_hash(leaves, start + k, end)
        )

    def _fill(self, leaves: LeafReader, first: int, last: int) -> None:
        """Hash the runs first..last-1 not known yet, reading their leaves in large reads."""
        run = first
        while run < last:
            if run in self._runs:
                run += 1
                continue
            stop = run + 1
            while stop < last and stop - run < READ_RUNS and stop not in self._runs:
                stop += 1
            got = _read(leaves, run * RUN, stop * RUN)
            for i in range(run, stop):
                offset = (i - run) * RUN
                self._runs[i] = rfc6962.root_from_hashes(got[offset : offset + RUN])
            run = stop


def _read(leaves: LeafReader, start: int, end: int) -> Sequence[bytes]:
    got = leaves(start, end)
    if len(got) != end - start:
        raise InputError(f"the log has no leaves {start}..{end - 1}")
    return got


def _root(leaves: LeafReader, start: int, end: int) -> bytes:
    return rfc6962.root_from_hashes(_read(leaves, start, end))
