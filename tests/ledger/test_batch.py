"""Signed, hash-chained batches: format, sealing, opening and chain verification."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger._b64 import b64url_decode, b64url_encode
from ledger.batch import (
    SealedBatch,
    open_batch,
    seal_batch,
    verify_batch_chain,
)
from ledger.errors import BadSignature, BatchVerificationError, MalformedBatch
from ledger.jws import compact_header, sign_compact
from ledger.keys import generate_key

KEY = generate_key()
OTHER = generate_key()
NONCE = bytes(range(32))


def reading(i: int) -> dict[str, Any]:
    return {
        "patient_id": "p1",
        "device_id": "cgm-1",
        "kind": "cgm_glucose",
        "time": f"2024-05-01T12:{i % 60:02d}:00.000Z",
        "value": 100.0 + i,
        "unit": "mg/dL",
        "seq": i,
        "source": "ble",
        "original_value": None,
        "original_unit": None,
        "status": [],
    }


def chain(n: int, per_batch: int = 3, hub_id: str = "hub-a") -> list[SealedBatch]:
    sealed: list[SealedBatch] = []
    for seq in range(n):
        sealed.append(
            seal_batch(
                hub_id=hub_id,
                batch_seq=seq,
                start="2024-05-01T12:00:00.000Z",
                end="2024-05-01T12:05:00.000Z",
                readings=[reading(seq * per_batch + k) for k in range(per_batch)],
                prev_jws=sealed[-1].jws if sealed else None,
                signing_key=KEY,
                kid="k1",
            )
        )
    return sealed


def test_payload_is_the_canonical_batch_object() -> None:
    sealed = seal_batch(
        hub_id="hub-a",
        batch_seq=0,
        start="2024-05-01T12:00:00.000Z",
        end="2024-05-01T12:00:00.000Z",
        readings=[{"value": 120.0, "kind": "glucose"}],
        events=[{"type": "consent", "granted": True}],
        prev_jws=None,
        signing_key=KEY,
        kid="k1",
        nonce=NONCE,
    )
    _, payload_b64, _ = sealed.jws.split(b".")
    # Members in UTF-16 order; 120.0 is written as ES6 does ("120"); nonce = b64url(00..1f).
    assert b64url_decode(payload_b64) == (
        b'{"batch_seq":0,"end":"2024-05-01T12:00:00.000Z",'
        b'"events":[{"granted":true,"type":"consent"}],"hub_id":"hub-a",'
        b'"nonce":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8","prev_batch_hash":"",'
        b'"readings":[{"kind":"glucose","value":120}],"start":"2024-05-01T12:00:00.000Z"}'
    )
    assert compact_header(sealed.jws) == {"alg": "EdDSA", "kid": "k1"}
    # Leaf data D = SHA-256(JWS); RFC 6962 leaf hash = SHA-256(0x00 || D).
    assert sealed.leaf_data == hashlib.sha256(sealed.jws).digest()
    assert sealed.leaf_hash == hashlib.sha256(b"\x00" + sealed.leaf_data).digest()
    opened = open_batch(sealed.jws, KEY.public_key())
    assert opened == sealed.payload  # 120 == 120.0 in Python
    assert opened.readings == ({"kind": "glucose", "value": 120},)
    assert opened.events == ({"type": "consent", "granted": True},)
    assert (opened.hub_id, opened.batch_seq, opened.prev_batch_hash) == ("hub-a", 0, "")


def test_prev_hash_is_sha256_of_previous_jws() -> None:
    first, second = chain(2)
    expected = b64url_encode(hashlib.sha256(first.jws).digest())
    assert second.payload.prev_batch_hash == expected
    assert open_batch(second.jws, KEY.public_key()).prev_batch_hash == expected


def test_nonce_is_fresh_32_random_bytes() -> None:
    a, b = (
        seal_batch(
            hub_id="h",
            batch_seq=0,
            start="s",
            end="e",
            readings=[],
            prev_jws=None,
            signing_key=KEY,
            kid="k",
        )
        for _ in range(2)
    )
    assert len(b64url_decode(a.payload.nonce)) == 32
    assert a.payload.nonce != b.payload.nonce
    assert a.leaf_data != b.leaf_data  # same readings, unlinkable leaves


def test_datetimes_become_utc_rfc3339_with_milliseconds() -> None:
    cest = timezone(timedelta(hours=2))
    sealed = seal_batch(
        hub_id="h",
        batch_seq=0,
        start=datetime(2024, 5, 1, 14, 0, tzinfo=cest),  # 12:00 UTC
        end=datetime(2024, 5, 1, 12, 5, 30, 250000, tzinfo=UTC),
        readings=[],
        prev_jws=None,
        signing_key=KEY,
        kid="k",
    )
    assert sealed.payload.start == "2024-05-01T12:00:00.000Z"
    assert sealed.payload.end == "2024-05-01T12:05:30.250Z"


@pytest.mark.parametrize(
    "changes",
    [
        {"batch_seq": 0, "prev_jws": b"x"},
        {"batch_seq": 1, "prev_jws": None},
        {"batch_seq": -1, "prev_jws": b"x"},
        {"nonce": b"short"},
        {"hub_id": ""},
        {"readings": [["not", "an", "object"]]},
        {"start": datetime(2024, 5, 1)},  # naive
    ],
)
def test_bad_arguments_are_refused(changes: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {
        "hub_id": "h",
        "batch_seq": 0,
        "start": "s",
        "end": "e",
        "readings": [],
        "prev_jws": None,
        "signing_key": KEY,
        "kid": "k",
    }
    arguments.update(changes)
    with pytest.raises(ValueError):
        seal_batch(**arguments)


def test_chain_verifies() -> None:
    sealed = chain(5)
    summary = verify_batch_chain([s.jws for s in sealed], KEY.public_key(), hub_id="hub-a")
    assert summary.batches == 5
    assert summary.readings == 15
    assert summary.leaf_hashes == tuple(s.leaf_hash for s in sealed)
    assert summary.last_jws == sealed[-1].jws


def test_empty_chain() -> None:
    summary = verify_batch_chain([], KEY.public_key())
    assert (summary.batches, summary.readings, summary.leaf_hashes, summary.last_jws) == (
        0,
        0,
        (),
        None,
    )


def test_resume_mid_chain() -> None:
    jws = [s.jws for s in chain(5)]
    summary = verify_batch_chain(jws[3:], KEY.public_key(), first_seq=3, prev_jws=jws[2])
    assert summary.batches == 2
    with pytest.raises(BatchVerificationError) as info:
        verify_batch_chain(jws[3:], KEY.public_key(), first_seq=3, prev_jws=jws[1])
    assert info.value.batch_seq == 3


def _fails_at(jws: list[bytes], batch_seq: int, reason: str, **kwargs: Any) -> None:
    with pytest.raises(BatchVerificationError, match=reason) as info:
        verify_batch_chain(jws, KEY.public_key(), **kwargs)
    assert info.value.batch_seq == batch_seq
    assert f"batch {batch_seq}:" in str(info.value)


def test_changed_reading_fails_its_batch() -> None:
    jws = [s.jws for s in chain(5)]
    header, payload, signature = jws[2].split(b".")
    body = json.loads(b64url_decode(payload))
    body["readings"][1]["value"] = 300  # was 107.0
    forged = b64url_encode(json.dumps(body).encode()).encode()
    jws[2] = b".".join([header, forged, signature])
    _fails_at(jws, 2, "signature")


def test_swapped_batches_fail_where_the_order_breaks() -> None:
    jws = [s.jws for s in chain(5)]
    jws[1], jws[2] = jws[2], jws[1]
    _fails_at(jws, 1, "found batch_seq 2")


def test_missing_batch_fails_where_it_is_missing() -> None:
    jws = [s.jws for s in chain(5)]
    del jws[2]
    _fails_at(jws, 2, "found batch_seq 3")


def test_duplicated_batch_fails() -> None:
    jws = [s.jws for s in chain(3)]
    _fails_at([jws[0], jws[1], jws[1], jws[2]], 2, "found batch_seq 1")


def test_wrong_key_fails_the_first_batch() -> None:
    jws = [s.jws for s in chain(3)]
    with pytest.raises(BatchVerificationError, match="signature") as info:
        verify_batch_chain(jws, OTHER.public_key())
    assert info.value.batch_seq == 0
    with pytest.raises(BadSignature):
        open_batch(jws[0], OTHER.public_key())


def test_broken_prev_hash_fails_even_when_correctly_signed() -> None:
    sealed = chain(2)
    # The signer itself forks: batch 2 names batch 0 as its predecessor.
    fork = seal_batch(
        hub_id="hub-a",
        batch_seq=2,
        start="s",
        end="e",
        readings=[],
        prev_jws=sealed[0].jws,
        signing_key=KEY,
        kid="k1",
    )
    _fails_at([sealed[0].jws, sealed[1].jws, fork.jws], 2, "prev_batch_hash")


def test_hub_id_must_match() -> None:
    mine = chain(2)
    theirs = chain(2, hub_id="hub-b")
    _fails_at([s.jws for s in mine], 0, "hub_id", hub_id="hub-b")
    # A batch of another hub signed with the same key cannot be spliced in.
    _fails_at([mine[0].jws, theirs[1].jws], 1, "hub_id")


def test_malformed_jws_in_chain_names_its_position() -> None:
    jws = [s.jws for s in chain(3)]
    jws[1] = b"garbage"
    _fails_at(jws, 1, "malformed")


def _signed(body: object) -> bytes:
    return sign_compact(json.dumps(body).encode(), KEY, "k")


GOOD_BODY: dict[str, Any] = {
    "hub_id": "h",
    "batch_seq": 0,
    "start": "s",
    "end": "e",
    "readings": [],
    "events": [],
    "prev_batch_hash": "",
    "nonce": b64url_encode(NONCE),
}


@pytest.mark.parametrize(
    "body",
    [
        [1, 2],
        {k: v for k, v in GOOD_BODY.items() if k != "nonce"},
        {**GOOD_BODY, "extra": 1},
        {**GOOD_BODY, "batch_seq": True},
        {**GOOD_BODY, "batch_seq": -1},
        {**GOOD_BODY, "batch_seq": 1.5},
        {**GOOD_BODY, "readings": [1]},
        {**GOOD_BODY, "events": {}},
        {**GOOD_BODY, "hub_id": 7},
        {**GOOD_BODY, "nonce": "AAAA"},
        {**GOOD_BODY, "nonce": "!!"},
    ],
)
def test_signed_non_batches_are_malformed(body: object) -> None:
    with pytest.raises(MalformedBatch):
        open_batch(_signed(body), KEY.public_key())


def test_signed_non_json_is_malformed() -> None:
    with pytest.raises(MalformedBatch):
        open_batch(sign_compact(b"\xff not json", KEY, "k"), KEY.public_key())
    assert open_batch(_signed(GOOD_BODY), KEY.public_key()).hub_id == "h"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(sorted(GOOD_BODY)), json_values))
def test_random_signed_payloads_open_or_raise_malformed_batch(changes: dict[str, Any]) -> None:
    try:
        payload = open_batch(_signed({**GOOD_BODY, **changes}), KEY.public_key())
    except MalformedBatch:
        return
    assert payload.batch_seq >= 0
