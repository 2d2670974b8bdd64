"""RFC 6962 / RFC 9162 Merkle tree hashing, audit paths and consistency proofs.

Leaves passed as "leaves" are leaf *data* (RFC 6962 §2.1 D[n]); everything called a hash is
32 bytes of SHA-256. Verifiers take every input explicitly, return None on success and raise
`ProofError` (or its subclass `RootMismatch`) naming what did not match.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

from ledger.errors import ProofError, RootMismatch

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactTree",
    "consistency_proof",
    "consistency_proof_from_hashes",
    "consistency_proof_with",
    "inclusion_proof",
    "inclusion_proof_from_hashes",
    "inclusion_proof_with",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_hashes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
# RFC 6962 §2.1: the hash of an empty list is the hash of an empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d) (RFC 6962 §2.1)."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right) (RFC 6962 §2.1)."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- building: a tree held as its levels -------------------------------------------------------
#
# Pairing adjacent nodes level by level and promoting an odd last node unchanged gives exactly the
# RFC 6962 tree: node (level l, index i) is MTH of leaves [i*2^l, min((i+1)*2^l, n)). Proof of
# that equivalence: a range of length m <= 2^(l+1) splits (RFC 6962 §2.1, k = largest power of
# two < m) at 2^l when m > 2^l, i.e. into nodes (l, 2i) and (l, 2i+1); when m <= 2^l it is node
# (l, 2i) itself — the promotion.


def _levels(leaf_hashes: Sequence[bytes]) -> list[list[bytes]]:
    level = list(leaf_hashes)
    levels = [level]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        levels.append(nxt)
        level = nxt
    return levels


def _range_hash(levels: list[list[bytes]], start: int, end: int) -> bytes:
    """MTH of leaves [start, end) where that range is a node of the tree."""
    height = (end - start - 1).bit_length()
    return levels[height][start >> height]


def _check_hashes(hashes: Iterable[bytes], what: str) -> list[bytes]:
    out = list(hashes)
    for i, h in enumerate(out):
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError(f"{what}[{i}] is not a {HASH_SIZE}-byte hash")
    return out


def root_from_hashes(leaf_hashes: Sequence[bytes]) -> bytes:
    """Root of the tree whose leaf hashes are given (EMPTY_ROOT for none); level by level,
    as `_levels` builds it, keeping one level at a time."""
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    sha256, prefix = hashlib.sha256, _NODE_PREFIX
    while len(level) > 1:
        paired = [
            sha256(prefix + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf data (RFC 6962 §2.1)."""
    return root_from_hashes([leaf_hash(d) for d in leaves])


def subtree_hash(leaf_hashes: Sequence[bytes], level: int, index: int) -> bytes:
    """Hash of the complete subtree of 2**level leaves starting at leaf index * 2**level."""
    start, end = index << level, (index + 1) << level
    if level < 0 or index < 0 or end > len(leaf_hashes):
        raise ProofError(f"no complete subtree at level {level}, index {index}")
    return root_from_hashes(leaf_hashes[start:end])


def inclusion_proof_from_hashes(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) (RFC 6962 §2.1.1), leaf hashes given."""
    size = len(leaf_hashes)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    levels = _levels(leaf_hashes)
    proof: list[bytes] = []
    for height, level in enumerate(levels[:-1]):
        sibling = (index >> height) ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) over leaf data."""
    return inclusion_proof_from_hashes([leaf_hash(d) for d in leaves], index)


def consistency_proof_from_hashes(leaf_hashes: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) (RFC 6962 §2.1.2); empty when old_size is 0 or n."""
    size = len(leaf_hashes)
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} outside 0..{size}")
    if old_size in (0, size):
        return []
    levels = _levels(leaf_hashes)
    return consistency_proof_with(lambda a, b: _range_hash(levels, a, b), old_size, size)


# MTH(D[start:end]) of the log's leaves, for the ranges a proof asks for.
RangeHash = Callable[[int, int], bytes]


def consistency_proof_with(range_hash: RangeHash, old_size: int, size: int) -> list[bytes]:
    """PROOF(old_size, D[size]) from `range_hash`, for a caller that keeps subtree hashes
    (or reads leaves on demand) instead of holding every leaf hash."""
    if not 0 <= old_size <= size:
        raise ProofError(f"old size {old_size} outside 0..{size}")
    if old_size in (0, size):
        return []
    proof: list[bytes] = []
    _subproof(range_hash, old_size, 0, size, True, proof)
    return proof


def inclusion_proof_with(range_hash: RangeHash, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 6962 §2.1.1) from `range_hash`: the hashes of the
    siblings on the way down, listed from the leaf up."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    top_down: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = 1 << ((end - start - 1).bit_length() - 1)  # largest power of two < n
        if index < start + k:
            top_down.append(range_hash(start + k, end))
            end = start + k
        else:
            top_down.append(range_hash(start, start + k))
            start += k
    return top_down[::-1]


def _subproof(
    range_hash: RangeHash, m: int, start: int, end: int, whole: bool, out: list[bytes]
) -> None:
    # SUBPROOF(m, D[start:end], b), RFC 6962 §2.1.2, m counted from `start`.
    n = end - start
    if m == n:
        if not whole:
            out.append(range_hash(start, end))
        return
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    if m <= k:
        _subproof(range_hash, m, start, start + k, whole, out)
        out.append(range_hash(start + k, end))
    else:
        _subproof(range_hash, m - k, start + k, end, False, out)
        out.append(range_hash(start, start + k))


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    """PROOF(old_size, D[n]) over leaf data."""
    return consistency_proof_from_hashes([leaf_hash(d) for d in leaves], old_size)


# --- verifying -----------------------------------------------------------------------------------


def _check_one(h: bytes, what: str) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        raise ProofError(f"{what} is not a {HASH_SIZE}-byte hash")


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ProofError(f"{what} must be a non-negative integer, got {value!r}")


def _inclusion_shape(index: int, size: int) -> tuple[int, int]:
    # A path splits into `inner` hashes below the point where the leaf's path leaves the right
    # edge of the tree and `border` hashes above it (one per left subtree on the right edge).
    inner = (index ^ (size - 1)).bit_length()
    border = (index >> inner).bit_count()
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        seed = node_hash(h, seed) if (index >> i) & 1 else node_hash(seed, h)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for i, h in enumerate(proof):
        if (index >> i) & 1:
            seed = node_hash(h, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for h in proof:
        seed = node_hash(h, seed)
    return seed


def _root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    inner, border = _inclusion_shape(index, size)
    if len(proof) != inner + border:
        raise ProofError(
            f"inclusion proof for leaf {index} of {size} has {len(proof)} hashes, "
            f"expected {inner + border}"
        )
    node = _chain_inner(leaf, proof[:inner], index)
    return _chain_border_right(node, proof[inner:])


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` leaves with head `root`."""
    _check_size(index, "leaf index")
    _check_size(size, "tree size")
    if index >= size:
        raise ProofError(f"leaf index {index} outside tree of size {size}")
    _check_one(leaf_hash, "leaf hash")
    _check_one(root, "root")
    path = _check_hashes(proof, "proof")
    computed = _root_from_inclusion(index, size, leaf_hash, path)
    if computed != root:
        raise RootMismatch(
            root, computed, what=f"inclusion of leaf {index} in tree of {size}: root"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (old_size, old_root) is a prefix of (new_size, new_root).

    Stricter than RFC 9162 §2.1.4.2 at the edges: for old_size == 0 the old root must be the empty
    root and the proof empty; for old_size == new_size the roots must match and the proof be empty.
    """
    _check_size(old_size, "old size")
    _check_size(new_size, "new size")
    _check_one(old_root, "old root")
    _check_one(new_root, "new root")
    path = _check_hashes(proof, "proof")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}")
    if old_size == 0 or old_size == new_size:
        if path:
            raise ProofError(
                f"consistency proof {old_size}->{new_size} must be empty, has {len(path)} hashes"
            )
        expected_old = EMPTY_ROOT if old_size == 0 else new_root
        if old_root != expected_old:
            raise RootMismatch(old_root, expected_old, what=f"tree of size {old_size}: old root")
        return

    # The old tree's last leaf at `old_size - 1`; everything below `shift` is a complete subtree
    # shared by both trees, whose hash is either given (old_size a power of two) or proof[0].
    shift = (old_size & -old_size).bit_length() - 1
    inner, border = _inclusion_shape(old_size - 1, new_size)
    inner -= shift
    if old_size == 1 << shift:
        seed, rest = old_root, path
    else:
        if not path:
            raise ProofError(f"consistency proof {old_size}->{new_size} is empty")
        seed, rest = path[0], path[1:]
    if len(rest) != inner + border:
        raise ProofError(
            f"consistency proof {old_size}->{new_size} has {len(path)} hashes, "
            f"expected {len(path) - len(rest) + inner + border}"
        )
    index = (old_size - 1) >> shift
    # The old root is rebuilt from the left-hand hashes only; the new root from all of them.
    old_computed = _chain_inner_right(seed, rest[:inner], index)
    old_computed = _chain_border_right(old_computed, rest[inner:])
    if old_computed != old_root:
        raise RootMismatch(
            old_root, old_computed, what=f"consistency {old_size}->{new_size}: old root"
        )
    new_computed = _chain_inner(seed, rest[:inner], index)
    new_computed = _chain_border_right(new_computed, rest[inner:])
    if new_computed != new_root:
        raise RootMismatch(
            new_root, new_computed, what=f"consistency {old_size}->{new_size}: new root"
        )


# --- incremental -----------------------------------------------------------------------------


class CompactTree:
    """An append-only Merkle tree kept as O(log n) hashes: one per complete left subtree.

    `to_bytes()` is the size as 8 bytes big-endian, then popcount(size) hashes, largest first.
    """

    __slots__ = ("_size", "_stack")

    def __init__(self) -> None:
        self._size = 0
        self._stack: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf_hash: bytes) -> None:
        """Append one leaf hash (not leaf data)."""
        _check_one(leaf_hash, "leaf hash")
        h, s = leaf_hash, self._size
        while s & 1:  # each trailing 1 bit of the size is a complete subtree to merge with
            h = node_hash(self._stack.pop(), h)
            s >>= 1
        self._stack.append(h)
        self._size += 1

    def extend(self, leaf_hashes: Iterable[bytes]) -> None:
        for h in leaf_hashes:
            self.append(h)

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        r = self._stack[-1]
        for h in reversed(self._stack[:-1]):
            r = node_hash(h, r)
        return r

    def copy(self) -> CompactTree:
        other = CompactTree()
        other._size = self._size
        other._stack = list(self._stack)
        return other

    def to_bytes(self) -> bytes:
        return self._size.to_bytes(8, "big") + b"".join(self._stack)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactTree:
        if len(data) < 8:
            raise ProofError("compact tree state shorter than its 8-byte size")
        size = int.from_bytes(data[:8], "big")
        body = data[8:]
        if len(body) != size.bit_count() * HASH_SIZE:
            raise ProofError(
                f"compact tree state for size {size} has {len(body)} hash bytes, "
                f"expected {size.bit_count() * HASH_SIZE}"
            )
        tree = cls()
        tree._size = size
        tree._stack = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return tree

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactTree):
            return NotImplemented
        return self._size == other._size and self._stack == other._stack

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"CompactTree(size={self._size}, root={self.root().hex()})"
