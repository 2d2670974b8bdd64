"""RFC 6962 hashing and proofs: published known answers, a naive reference tree, and mutations."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import rfc6962
from ledger.errors import LedgerError, ProofError, RootMismatch
from ledger.rfc6962 import (
    EMPTY_ROOT,
    CompactTree,
    consistency_proof,
    consistency_proof_from_hashes,
    inclusion_proof,
    inclusion_proof_from_hashes,
    leaf_hash,
    node_hash,
    root,
    root_from_hashes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent.parent / "data" / "ledger" / "rfc6962_vectors.json").read_text()
)
KAT_LEAVES = [bytes.fromhex(x) for x in VECTORS["leaves"]]
KAT_ROOTS = [bytes.fromhex(x) for x in VECTORS["roots"]]


def _hexes(xs: list[str]) -> list[bytes]:
    return [bytes.fromhex(x) for x in xs]


# --- a naive reference, written straight from RFC 6962 §2.1 -------------------------------------


def _k(n: int) -> int:
    """Largest power of two strictly smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def naive_mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + naive_mth(d[:k]) + naive_mth(d[k:])).digest()


def naive_path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*naive_path(m, d[:k]), naive_mth(d[k:])]
    return [*naive_path(m - k, d[k:]), naive_mth(d[:k])]


def naive_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [naive_mth(d)]
    k = _k(n)
    if m <= k:
        return [*naive_subproof(m, d[:k], b), naive_mth(d[k:])]
    return [*naive_subproof(m - k, d[k:], False), naive_mth(d[:k])]


def naive_path_shape(m: int, n: int) -> list[str]:
    """Which side each audit-path hash joins on: "L" (a left sibling) or "R" (a right one)."""
    if n == 1:
        return []
    k = _k(n)
    if m < k:
        return [*naive_path_shape(m, k), "R"]
    return [*naive_path_shape(m - k, n - k), "L"]


def naive_subproof_shape(m: int, n: int, b: bool) -> list[str]:
    """Per consistency-proof hash: "seed" (a subtree both trees share), "L" (a left sibling, in
    both roots) or "R" (a right sibling, only in the new root)."""
    if m == n:
        return [] if b else ["seed"]
    k = _k(n)
    if m <= k:
        return [*naive_subproof_shape(m, k, b), "R"]
    return [*naive_subproof_shape(m - k, n - k, False), "L"]


def data(n: int) -> list[bytes]:
    return [f"leaf-{i}".encode() for i in range(n)]


def flip(b: bytes, bit: int) -> bytes:
    bit %= len(b) * 8
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


# --- known answers ---


def test_published_hash_vectors() -> None:
    h = VECTORS["hashes"]
    assert EMPTY_ROOT.hex() == h["empty_root"]  # echo -n | sha256sum
    assert root([]).hex() == h["empty_root"]
    assert leaf_hash(b"").hex() == h["empty_leaf"]  # sha256(0x00)
    assert leaf_hash(b"L123456").hex() == h["leaf_L123456"]  # sha256(0x00 'L123456')
    assert node_hash(b"N123", b"N456").hex() == h["node_N123_N456"]  # sha256(0x01 'N123' 'N456')


@pytest.mark.parametrize("n", range(1, 9))
def test_published_roots(n: int) -> None:
    expected = KAT_ROOTS[n - 1]
    assert root(KAT_LEAVES[:n]) == expected
    assert root_from_hashes([leaf_hash(x) for x in KAT_LEAVES[:n]]) == expected
    tree = CompactTree()
    tree.extend(leaf_hash(x) for x in KAT_LEAVES[:n])
    assert tree.size == n
    assert tree.root() == expected


@pytest.mark.parametrize(
    "vec", VECTORS["inclusion_proofs"], ids=lambda v: f"{v['leaf']}of{v['size']}"
)
def test_published_inclusion_proofs(vec: dict[str, Any]) -> None:
    index, size, proof = vec["leaf"] - 1, vec["size"], _hexes(vec["proof"])
    assert inclusion_proof(KAT_LEAVES[:size], index) == proof
    verify_inclusion(leaf_hash(KAT_LEAVES[index]), index, size, proof, KAT_ROOTS[size - 1])


@pytest.mark.parametrize(
    "vec", VECTORS["consistency_proofs"], ids=lambda v: f"{v['size1']}to{v['size2']}"
)
def test_published_consistency_proofs(vec: dict[str, Any]) -> None:
    m, n, proof = vec["size1"], vec["size2"], _hexes(vec["proof"])
    assert consistency_proof(KAT_LEAVES[:n], m) == proof
    verify_consistency(m, n, KAT_ROOTS[m - 1], KAT_ROOTS[n - 1], proof)


SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


@pytest.mark.parametrize("vec", VECTORS["inclusion_proofs"][1:], ids=lambda v: f"{v['leaf']}")
def test_published_inclusion_proofs_corrupted(vec: dict[str, Any]) -> None:
    # The probes of transparency-dev/merkle's corruptInclusionProof: each must be rejected.
    index, size, proof = vec["leaf"] - 1, vec["size"], _hexes(vec["proof"])
    r, lh = KAT_ROOTS[size - 1], leaf_hash(KAT_LEAVES[index])
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (index - 1, size, r, lh, proof),
        (index + 1, size, r, lh, proof),
        (index ^ 2, size, r, lh, proof),
        (index, size * 2, r, lh, proof),
        (index, size // 2, r, lh, proof),
        (index, size, r, b"WrongLeaf", proof),
        (index, size, EMPTY_ROOT, lh, proof),
        (index, size, SOME_HASH, lh, proof),
        (index, size, r, lh, [*proof, b""]),
        (index, size, r, lh, [*proof, r]),
        (index, size, r, lh, [b"", *proof]),
        (index, size, r, lh, [r, *proof]),
        (index, size, r, lh, proof[:-1]),
        (index, size, r, lh, [proof[0], SOME_HASH, *proof[1:]]),
    ]
    probes += [
        (index, size, r, lh, [flip(p, 3) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for i, s, rr, leaf, pr in probes:
        with pytest.raises(ProofError):
            verify_inclusion(leaf, i, s, pr, rr)


@pytest.mark.parametrize(
    "vec", VECTORS["consistency_proofs"][1:], ids=lambda v: f"{v['size1']}to{v['size2']}"
)
def test_published_consistency_proofs_corrupted(vec: dict[str, Any]) -> None:
    m, n, proof = vec["size1"], vec["size2"], _hexes(vec["proof"])
    r1, r2 = KAT_ROOTS[m - 1], KAT_ROOTS[n - 1]
    probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
        (m - 1, n, r1, r2, proof),
        (m + 1, n, r1, r2, proof),
        (m ^ 2, n, r1, r2, proof),
        (m, n * 2, r1, r2, proof),
        (m, n // 2, r1, r2, proof),
        (m, n, SOME_HASH, r2, proof),
        (m, n, r1, SOME_HASH, proof),
        (m, n, r2, r1, proof),
        (m, n, r1, r2, []),
        (m, n, r1, r2, [*proof, b""]),
        (m, n, r1, r2, [*proof, r1]),
        (m, n, r1, r2, [*proof, r2]),
        (m, n, r1, r2, [b"", *proof]),
        (m, n, r1, r2, [r1, *proof]),
        (m, n, r1, r2, [r2, *proof]),
        (m, n, r1, r2, [proof[0], *proof]),
        (m, n, r1, r2, proof[:-1]),
    ]
    probes += [
        (m, n, r1, r2, [flip(p, 4) if j == i else p for j, p in enumerate(proof)])
        for i in range(len(proof))
    ]
    for s1, s2, a, b, pr in probes:
        with pytest.raises(ProofError):
            verify_consistency(s1, s2, a, b, pr)


def test_edge_cases_of_consistency() -> None:
    r = KAT_ROOTS[0]
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 1, EMPTY_ROOT, r, [])  # everything extends the empty tree
    verify_consistency(1, 1, r, r, [])
    with pytest.raises(RootMismatch):
        verify_consistency(1, 1, r, KAT_ROOTS[1], [])  # same size, two roots: a fork
    with pytest.raises(RootMismatch):
        verify_consistency(0, 1, SOME_HASH, r, [])  # an empty tree has only one root
    with pytest.raises(ProofError):
        verify_consistency(1, 1, r, r, [EMPTY_ROOT])  # roots match but proof not empty
    with pytest.raises(ProofError):
        verify_consistency(2, 1, r, r, [])  # time travel
    with pytest.raises(ProofError):
        verify_consistency(-1, 1, r, r, [])


def test_single_entry_inclusion() -> None:
    h = leaf_hash(b"data")  # in a one-leaf tree root == leaf hash and the path is empty
    verify_inclusion(h, 0, 1, [], h)
    for leaf, rt in ((h, b""), (b"", h), (b"", b"")):
        with pytest.raises(ProofError):
            verify_inclusion(leaf, 0, 1, [], rt)
    for index, size in ((0, 0), (1, 0), (2, 1), (1, 1)):
        with pytest.raises(ProofError):
            verify_inclusion(SOME_HASH, index, size, [], EMPTY_ROOT)


def test_proof_builders_reject_out_of_range() -> None:
    with pytest.raises(ProofError):
        inclusion_proof(data(3), 3)
    with pytest.raises(ProofError):
        inclusion_proof([], 0)
    with pytest.raises(ProofError):
        consistency_proof(data(3), 4)
    assert consistency_proof(data(3), 0) == []
    assert consistency_proof(data(3), 3) == []


# --- against the naive tree ---


def test_compact_tree_matches_naive_root_for_every_size_to_300() -> None:
    leaves = data(300)
    tree = CompactTree()
    assert tree.root() == naive_mth([])
    for n in range(1, 301):
        tree.append(leaf_hash(leaves[n - 1]))
        expected = naive_mth(leaves[:n])
        assert tree.size == n
        assert tree.root() == expected, n
        assert len(tree.to_bytes()) == 8 + 32 * n.bit_count()  # O(log n) state
        assert CompactTree.from_bytes(tree.to_bytes()) == tree
        if n % 37 == 0:
            assert root(leaves[:n]) == expected


def test_every_proof_matches_naive_and_verifies_to_size_40() -> None:
    for n in range(1, 41):
        leaves = data(n)
        hashes = [leaf_hash(x) for x in leaves]
        r = naive_mth(leaves)
        for i in range(n):
            proof = inclusion_proof_from_hashes(hashes, i)
            assert proof == naive_path(i, leaves)
            verify_inclusion(hashes[i], i, n, proof, r)
        for m in range(1, n + 1):
            proof = consistency_proof_from_hashes(hashes, m)
            assert proof == (naive_subproof(m, leaves, True) if m < n else [])
            verify_consistency(m, n, naive_mth(leaves[:m]), r, proof)


def test_proofs_from_a_range_hash_oracle_match_naive_to_size_40() -> None:
    """What a server that keeps subtree hashes (not every leaf) calls."""
    for n in range(1, 41):
        leaves = data(n)
        asked: list[tuple[int, int]] = []

        def range_hash(
            start: int,
            end: int,
            leaves: list[bytes] = leaves,
            asked: list[tuple[int, int]] = asked,
        ) -> bytes:
            asked.append((start, end))
            return naive_mth(leaves[start:end])

        for i in range(n):
            assert rfc6962.inclusion_proof_with(range_hash, i, n) == naive_path(i, leaves)
        for m in range(0, n + 1):
            expected = naive_subproof(m, leaves, True) if 0 < m < n else []
            assert rfc6962.consistency_proof_with(range_hash, m, n) == expected
        assert all(0 <= a < b <= n for a, b in asked)
    with pytest.raises(ProofError):
        rfc6962.inclusion_proof_with(lambda a, b: b"", 5, 5)
    with pytest.raises(ProofError):
        rfc6962.consistency_proof_with(lambda a, b: b"", 6, 5)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), data_=st.data())
def test_inclusion_proofs_verify_and_every_mutation_fails(n: int, data_: st.DataObject) -> None:
    leaves = data(n)
    i = data_.draw(st.integers(0, n - 1), label="index")
    proof = inclusion_proof(leaves, i)
    assert proof == naive_path(i, leaves)
    lh, r = leaf_hash(leaves[i]), naive_mth(leaves)
    verify_inclusion(lh, i, n, proof, r)

    bit = data_.draw(st.integers(0, 255), label="bit")
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = flip(bad[j], bit)
        with pytest.raises(RootMismatch):
            verify_inclusion(lh, i, n, bad, r)
    with pytest.raises(RootMismatch) as exc:
        verify_inclusion(lh, i, n, proof, flip(r, bit))
    assert exc.value.expected_root == flip(r, bit)
    assert exc.value.actual_root == r
    with pytest.raises(RootMismatch):
        verify_inclusion(flip(lh, bit), i, n, proof, r)
    ibit = data_.draw(st.integers(0, 9), label="index bit")
    with pytest.raises(ProofError):
        verify_inclusion(lh, i ^ (1 << ibit), n, proof, r)
    # RFC 6962 roots do not commit to the tree size (that is why checkpoints sign size and root
    # together): another size is accepted exactly when its audit path has the same shape, e.g.
    # leaf 0 of 5 and of 7 both have path [h1, h23, X] joined on the right (X = h4 or h456).
    sbit = data_.draw(st.integers(0, 9), label="size bit")
    n2 = n ^ (1 << sbit)
    if i < n2 and naive_path_shape(i, n2) == naive_path_shape(i, n):
        verify_inclusion(lh, i, n2, proof, r)
    else:
        with pytest.raises(ProofError):
            verify_inclusion(lh, i, n2, proof, r)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 300), data_=st.data())
def test_consistency_proofs_verify_and_every_mutation_fails(n: int, data_: st.DataObject) -> None:
    leaves = data(n)
    m = data_.draw(st.integers(1, n - 1), label="old size")
    proof = consistency_proof(leaves, m)
    assert proof == naive_subproof(m, leaves, True)
    r1, r2 = naive_mth(leaves[:m]), naive_mth(leaves)
    verify_consistency(m, n, r1, r2, proof)

    bit = data_.draw(st.integers(0, 255), label="bit")
    for j in range(len(proof)):
        bad = list(proof)
        bad[j] = flip(bad[j], bit)
        with pytest.raises(RootMismatch):
            verify_consistency(m, n, r1, r2, bad)
    with pytest.raises(RootMismatch):
        verify_consistency(m, n, flip(r1, bit), r2, proof)
    with pytest.raises(RootMismatch):
        verify_consistency(m, n, r1, flip(r2, bit), proof)
    # As for inclusion: a mutated size passes exactly when the proof has the same shape.
    sbit = data_.draw(st.integers(0, 9), label="size bit")
    shape = naive_subproof_shape(m, n, True)
    for m2, n2 in ((m ^ (1 << sbit), n), (m, n ^ (1 << sbit))):
        if 0 < m2 < n2 and naive_subproof_shape(m2, n2, True) == shape:
            verify_consistency(m2, n2, r1, r2, proof)
        else:
            with pytest.raises(ProofError):
                verify_consistency(m2, n2, r1, r2, proof)


# --- compact tree state ---


def test_compact_tree_rejects_bad_state_and_input() -> None:
    with pytest.raises(ProofError):
        CompactTree.from_bytes(b"\x00" * 7)
    # size 3 = 0b11 needs two hashes: 8 + 64 bytes
    with pytest.raises(ProofError):
        CompactTree.from_bytes((3).to_bytes(8, "big") + b"\x00" * 32)
    with pytest.raises(ProofError):
        CompactTree().append(b"short")
    assert CompactTree.from_bytes((0).to_bytes(8, "big")).root() == EMPTY_ROOT


@given(st.binary(max_size=200))
def test_compact_tree_from_random_bytes_raises_only_ledger_errors(blob: bytes) -> None:
    try:
        tree = CompactTree.from_bytes(blob)
    except LedgerError:
        return
    assert tree.to_bytes() == blob


def test_subtree_hash() -> None:
    leaves = data(20)
    hashes = [leaf_hash(x) for x in leaves]
    # level 2, index 3 covers leaves 12..15
    assert subtree_hash(hashes, 2, 3) == naive_mth(leaves[12:16])
    assert subtree_hash(hashes, 0, 19) == hashes[19]
    with pytest.raises(ProofError):
        subtree_hash(hashes, 2, 5)  # leaves 20..23 do not exist yet


def test_module_exports() -> None:
    assert "CompactTree" in rfc6962.__all__


def test_root_does_not_bind_size_so_sizes_must_be_signed() -> None:
    # Leaf 0 of a 5-leaf tree: path [h1, MTH(2..3), h4], all right siblings. A 7-leaf tree's path
    # for leaf 0 is [h1, MTH(2..3), MTH(4..6)], also all right siblings: the verifier cannot tell
    # the claimed sizes apart. Checkpoints sign size and root together for this reason.
    leaves = data(5)
    proof = inclusion_proof(leaves, 0)
    verify_inclusion(leaf_hash(leaves[0]), 0, 7, proof, root(leaves))
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[0]), 0, 9, proof, root(leaves))  # 9 needs 4 hashes
