"""Offline inclusion proof files for one batch."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.batch import seal_batch
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.errors import BundleError
from ledger.keys import generate_key, public_jwk
from ledger.note import NoteSigner
from ledger.proof import PROOF_FORMAT, check_inclusion_bundle, make_inclusion_bundle

BATCH_KEY = generate_key()
BATCH_JWK = public_jwk(BATCH_KEY.public_key(), kid="b1")
LOG = NoteSigner("glucohub.local/hub-a", generate_key())


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def mth(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 over leaf hashes, written out independently."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return h(b"\x01" + mth(hashes[:k]) + mth(hashes[k:]))


def path(hashes: list[bytes], m: int) -> list[bytes]:
    """RFC 6962 §2.1.1 PATH(m, D[n]) over leaf hashes."""
    if len(hashes) == 1:
        return []
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    if m < k:
        return [*path(hashes[:k], m), mth(hashes[k:])]
    return [*path(hashes[k:], m - k), mth(hashes[:k])]


JWS: list[bytes] = []
for seq in range(7):
    JWS.append(
        seal_batch(
            hub_id="hub-a",
            batch_seq=seq,
            start="s",
            end="e",
            readings=[{"value": seq}],
            prev_jws=JWS[-1] if JWS else None,
            signing_key=BATCH_KEY,
            kid="b1",
        ).jws
    )
LEAVES = [h(b"\x00" + h(j)) for j in JWS]
NOTE = sign_checkpoint(Checkpoint(origin=LOG.name, size=7, root_hash=mth(LEAVES)), LOG)


def proof_for(index: int) -> str:
    return make_inclusion_bundle(JWS[index], index, 7, path(LEAVES, index), NOTE)


@pytest.mark.parametrize("index", range(7))
def test_every_batch_proves_inclusion(index: int) -> None:
    report = check_inclusion_bundle(proof_for(index), LOG.verifier_key(), batch_jwk=BATCH_JWK)
    assert (report.batch_seq, report.tree_size) == (index, 7)
    assert report.leaf_hash == LEAVES[index]
    assert report.root_hash == mth(LEAVES)
    assert report.payload is not None
    assert report.payload.readings == ({"value": index},)


def test_layout_and_without_batch_key() -> None:
    obj = json.loads(proof_for(3))
    assert obj["format"] == PROOF_FORMAT
    assert obj["audit_path"] == [base64.b64encode(x).decode() for x in path(LEAVES, 3)]
    assert check_inclusion_bundle(proof_for(3), LOG.verifier_key()).payload is None


def _edit(index: int, **changes: Any) -> str:
    return json.dumps({**json.loads(proof_for(index)), **changes})


def test_other_batch_jws_fails_naming_the_batch() -> None:
    with pytest.raises(BundleError, match="not in the checkpointed log") as info:
        check_inclusion_bundle(_edit(2, jws=JWS[3].decode()), LOG.verifier_key())
    assert info.value.batch_seq == 2


def test_wrong_index_fails() -> None:
    with pytest.raises(BundleError) as info:
        check_inclusion_bundle(_edit(2, leaf_index=3), LOG.verifier_key())
    assert info.value.batch_seq == 3


def test_tampered_path_fails() -> None:
    bad = [base64.b64encode(x).decode() for x in path(LEAVES, 2)]
    bad[0] = base64.b64encode(bytes(32)).decode()
    with pytest.raises(BundleError, match="not in the checkpointed log"):
        check_inclusion_bundle(_edit(2, audit_path=bad), LOG.verifier_key())


def test_checkpoint_by_another_key_fails() -> None:
    impostor = NoteSigner(LOG.name, generate_key())
    note = sign_checkpoint(Checkpoint(origin=LOG.name, size=7, root_hash=mth(LEAVES)), impostor)
    with pytest.raises(BundleError, match="trusted log key") as info:
        check_inclusion_bundle(_edit(2, checkpoint=note), LOG.verifier_key())
    assert info.value.batch_seq == 2


def test_tree_size_must_match_checkpoint() -> None:
    with pytest.raises(BundleError, match="tree of 8"):
        check_inclusion_bundle(_edit(2, tree_size=8), LOG.verifier_key())


def test_batch_signature_checked_when_key_given() -> None:
    other = public_jwk(generate_key().public_key())
    with pytest.raises(BundleError, match="batch signature") as info:
        check_inclusion_bundle(proof_for(4), LOG.verifier_key(), batch_jwk=other)
    assert info.value.batch_seq == 4


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        json.dumps({"format": PROOF_FORMAT}),
        _edit(1, format="other/1"),
        _edit(1, leaf_index=-1),
        _edit(1, leaf_index=True),
        _edit(1, jws=5),
        _edit(1, audit_path="abc"),
        _edit(1, audit_path=["!!"]),
    ],
)
def test_malformed_proof_files(text: str) -> None:
    with pytest.raises(BundleError):
        check_inclusion_bundle(text, LOG.verifier_key())


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
    max_leaves=8,
)


@given(st.sampled_from(sorted(json.loads(proof_for(0)))), json_values)
def test_random_field_values_raise_only_bundle_error(field: str, value: object) -> None:
    with contextlib.suppress(BundleError):
        check_inclusion_bundle(_edit(5, **{field: value}), LOG.verifier_key())


@given(st.binary(max_size=300))
def test_random_bytes_raise_only_bundle_error(data: bytes) -> None:
    with pytest.raises(BundleError):
        check_inclusion_bundle(data, LOG.verifier_key())
