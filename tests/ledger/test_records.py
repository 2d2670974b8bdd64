"""Format-2 batches: salted record commitments, disclosure of some records, verification."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger._b64 import b64url_decode
from ledger.batch import open_batch, seal_records, verify_batch_chain
from ledger.errors import BatchVerificationError, LedgerError, MalformedBatch, RecordError
from ledger.jcs import canonicalize
from ledger.jws import sign_compact
from ledger.records import (
    Disclosed,
    batch_view_json,
    disclose,
    disclose_salted,
    disclosed_from_json,
    disclosed_to_json,
    open_batch_view,
    read_batch_view,
    record_leaf_hashes,
    record_salt,
    records_root,
    verify_disclosed,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
SEED = bytes(range(100, 132))
READING_A = {"patient_id": "pat-a", "kind": "cgm_glucose", "value": 61, "time": "t1"}
READING_B = {"patient_id": "pat-b", "kind": "cgm_glucose", "value": 277, "time": "t1"}
ALERT_B = {"type": "alert", "patient_id": "pat-b", "kind": "urgent_low", "glucose_mg_dl": 40}
RECORDS = [READING_A, READING_B, ALERT_B]


def _canon(records: list[dict[str, Any]]) -> list[bytes]:
    return [canonicalize(r) for r in records]


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def test_leaf_and_root_follow_the_documented_definition() -> None:
    # Worked from the module's definition with hashlib alone:
    #   salt_i = bytes [16i, 16i+16) of SHAKE-256(seed)
    #   leaf_i = SHA-256(0x00 || salt_i || JCS(record_i))
    #   root   = RFC 6962 MTH: 3 leaves split at 2 -> node(node(l0, l1), l2)
    stream = hashlib.shake_256(SEED).digest(48)
    salts = [stream[0:16], stream[16:32], stream[32:48]]
    texts = [
        b'{"kind":"cgm_glucose","patient_id":"pat-a","time":"t1","value":61}',
        b'{"kind":"cgm_glucose","patient_id":"pat-b","time":"t1","value":277}',
        b'{"glucose_mg_dl":40,"kind":"urgent_low","patient_id":"pat-b","type":"alert"}',
    ]
    leaves = [_sha(b"\x00" + s + t) for s, t in zip(salts, texts, strict=True)]
    root = _sha(b"\x01" + _sha(b"\x01" + leaves[0] + leaves[1]) + leaves[2])
    assert [record_salt(SEED, i) for i in range(3)] == salts
    assert record_leaf_hashes(SEED, _canon(RECORDS)) == leaves
    assert records_root(leaves) == root


def _sealed(records: list[dict[str, Any]], seq: int = 0, prev: bytes | None = None) -> bytes:
    return seal_records(
        hub_id="hub",
        batch_seq=seq,
        start="2026-01-01T00:00:00.000Z",
        end="2026-01-01T00:05:00.000Z",
        record_leaf_hashes=record_leaf_hashes(SEED, _canon(records)),
        prev_jws=prev,
        signing_key=KEY,
        kid="k",
    ).jws


def test_the_signed_payload_holds_no_record() -> None:
    jws = _sealed(RECORDS)
    body = b64url_decode(jws.split(b".")[1])
    for marker in (b"pat-a", b"pat-b", b"277", b"urgent_low", b"cgm_glucose"):
        assert marker not in body
    payload = open_batch(jws, KEY.public_key())
    assert (payload.format, payload.record_count, payload.readings) == (2, 3, ())
    assert payload.records_root == records_root(record_leaf_hashes(SEED, _canon(RECORDS)))


def test_one_patients_records_verify_without_the_others() -> None:
    payload = open_batch(_sealed(RECORDS), KEY.public_key())
    assert payload.records_root is not None
    shown = disclose(SEED, _canon(RECORDS), [0])
    assert [d.record for d in shown] == [READING_A]
    verify_disclosed(payload.records_root, payload.record_count, shown)
    wire = json.loads(json.dumps([disclosed_to_json(d) for d in shown]))
    assert "pat-b" not in json.dumps(wire)
    verify_disclosed(
        payload.records_root, payload.record_count, [disclosed_from_json(o) for o in wire]
    )


def test_a_holder_of_the_salts_alone_discloses_what_the_seed_holder_does() -> None:
    """A clinic receives every record with its salt, never the seed: disclosing one
    patient's records on gives the same records, salts and audit paths, verifying against
    the signed root."""
    payload = open_batch(_sealed(RECORDS), KEY.public_key())
    assert payload.records_root is not None
    # salt_i is bytes [16i, 16i+16) of SHAKE-256(seed), as the module defines it
    stream = hashlib.shake_256(SEED).digest(48)
    salts = [stream[0:16], stream[16:32], stream[32:48]]
    for indices in ([0], [1, 2], [0, 1, 2]):
        shown = disclose_salted(salts, _canon(RECORDS), indices)
        assert shown == disclose(SEED, _canon(RECORDS), indices)
        verify_disclosed(payload.records_root, 3, shown)
    with pytest.raises(ValueError, match="one salt per record"):
        disclose_salted(salts[:2], _canon(RECORDS), [0])
    wrong = disclose_salted([bytes(16), *salts[1:]], _canon(RECORDS), [0])
    with pytest.raises(RecordError):
        verify_disclosed(payload.records_root, 3, wrong)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda d: Disclosed(
            index=d.index, salt=d.salt, record={**d.record, "value": 62}, audit_path=d.audit_path
        ),
        lambda d: Disclosed(index=1, salt=d.salt, record=d.record, audit_path=d.audit_path),
        lambda d: Disclosed(
            index=d.index, salt=bytes(16), record=d.record, audit_path=d.audit_path
        ),
        lambda d: Disclosed(index=d.index, salt=d.salt, record=d.record, audit_path=()),
    ],
    ids=["edited-value", "moved-index", "other-salt", "no-path"],
)
def test_a_changed_disclosed_record_fails(tamper: Any) -> None:
    payload = open_batch(_sealed(RECORDS), KEY.public_key())
    assert payload.records_root is not None
    (shown,) = disclose(SEED, _canon(RECORDS), [0])
    with pytest.raises(RecordError):
        verify_disclosed(payload.records_root, 3, [tamper(shown)])


def test_full_disclosure_recomputes_the_root_and_needs_every_record_in_order() -> None:
    payload = open_batch(_sealed(RECORDS), KEY.public_key())
    assert payload.records_root is not None
    whole = disclose(SEED, _canon(RECORDS), range(3), with_paths=False)
    verify_disclosed(payload.records_root, 3, whole)
    with pytest.raises(RecordError, match="batch order"):
        verify_disclosed(payload.records_root, 3, [whole[0], whole[2], whole[1]])
    with pytest.raises(RecordError):
        verify_disclosed(payload.records_root, 3, whole[:2])  # one missing, no paths
    edited = Disclosed(index=2, salt=whole[2].salt, record={**ALERT_B, "glucose_mg_dl": 90})
    with pytest.raises(RecordError, match="do not hash"):
        verify_disclosed(payload.records_root, 3, [whole[0], whole[1], edited])


def test_one_salt_does_not_give_another() -> None:
    salts = {record_salt(SEED, i) for i in range(1000)}
    assert len(salts) == 1000
    assert record_salt(SEED, 0) != record_salt(bytes(32), 0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(["patient_id", "value", "kind", "status"]),
            st.one_of(st.integers(-(2**53), 2**53), st.text(max_size=6), st.none()),
            min_size=1,
        ),
        min_size=1,
        max_size=20,
    ),
    st.data(),
)
def test_any_subset_disclosed_verifies_and_a_wrong_record_never_does(
    records: list[dict[str, Any]], data: st.DataObject
) -> None:
    canon = _canon(records)
    root = records_root(record_leaf_hashes(SEED, canon))
    chosen = data.draw(st.sets(st.integers(0, len(records) - 1), min_size=1))
    shown = disclose(SEED, canon, chosen)
    verify_disclosed(root, len(records), shown)
    victim = shown[0]
    forged = Disclosed(
        index=victim.index,
        salt=victim.salt,
        record={**victim.record, "forged": True},
        audit_path=victim.audit_path,
    )
    with pytest.raises(RecordError):
        verify_disclosed(root, len(records), [forged, *shown[1:]])


def test_format_2_chains_like_format_1() -> None:
    first = _sealed(RECORDS, 0)
    second = _sealed([READING_A], 1, first)
    summary = verify_batch_chain([first, second], KEY.public_key())
    assert (summary.batches, summary.records) == (2, 4)
    with pytest.raises(BatchVerificationError, match="batch 1"):
        verify_batch_chain([first, _sealed([READING_A], 1, second)], KEY.public_key())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "glucohub-batch/3"}, "unknown batch format"),
        ({"record_count": -1}, "record_count"),
        ({"records_root": "AAAA"}, "records_root"),
        ({"readings": []}, "unexpected"),
    ],
)
def test_a_malformed_format_2_payload_is_refused(change: dict[str, Any], message: str) -> None:
    payload = json.loads(b64url_decode(_sealed(RECORDS).split(b".")[1]))
    payload.update(change)
    jws = sign_compact(canonicalize(payload), KEY, "k")
    with pytest.raises(MalformedBatch, match=message):
        open_batch(jws, KEY.public_key())


# -- the archive's reading of a whole view (read_batch_view) against open_batch_view ------


def _view(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A hub's upstream view of a sealed batch: every record, in order, no audit paths."""
    jws = _sealed(records)
    shown = disclose(SEED, _canon(records), range(len(records)), with_paths=False)
    return json.loads(batch_view_json(0, jws, shown))  # type: ignore[no-any-return]


def _read_both(view: dict[str, Any]) -> list[bytes] | str:
    """The canonical records both readers find, or the error both raise (they must agree)."""
    text = json.dumps(view)
    try:
        opened = read_batch_view(text, KEY.public_key())
    except LedgerError as exc:
        with pytest.raises(type(exc)) as general:
            open_batch_view(text, KEY.public_key())
        assert str(general.value) == str(exc)
        return str(exc)
    _payload, shown = open_batch_view(text, KEY.public_key())
    assert opened.canonical == [canonicalize(d.record) for d in shown]
    assert opened.values == [json.loads(c) for c in opened.canonical]
    return opened.canonical


def test_a_view_as_the_hub_sends_it_gives_each_records_canonical_bytes() -> None:
    assert _read_both(_view(RECORDS)) == _canon(RECORDS)


def _reordered_keys(view: dict[str, Any]) -> None:
    record = view["records"][1]["record"]
    view["records"][1]["record"] = dict(reversed(record.items()))


def _integral_float(view: dict[str, Any]) -> None:
    view["records"][0]["record"]["value"] = 61.0  # spelled 61.0: JCS writes 61


def _audit_path_empty(view: dict[str, Any]) -> None:
    view["records"][2]["audit_path"] = []


def _extra_member(view: dict[str, Any]) -> None:
    view["records"][0]["note"] = "ignored by readers"


@pytest.mark.parametrize(
    "respell", [_reordered_keys, _integral_float, _audit_path_empty, _extra_member]
)
def test_a_view_spelled_otherwise_is_accepted_as_the_records_the_hub_signed(respell: Any) -> None:
    # JCS is the commitment, not the view's spelling: what is stored is the canonical text.
    view = _view(RECORDS)
    respell(view)
    assert _read_both(view) == _canon(RECORDS)


def _changed_value(view: dict[str, Any]) -> None:
    view["records"][0]["record"]["value"] = 62


def _float_value(view: dict[str, Any]) -> None:
    view["records"][0]["record"]["value"] = 61.5


def _swapped(view: dict[str, Any]) -> None:
    records = view["records"]
    records[0]["record"], records[1]["record"] = records[1]["record"], records[0]["record"]


def _out_of_order(view: dict[str, Any]) -> None:
    view["records"].reverse()


def _missing(view: dict[str, Any]) -> None:
    view["records"].pop()


def _wrong_salt(view: dict[str, Any]) -> None:
    view["records"][1]["salt"] = view["records"][0]["salt"]


def _padded_salt(view: dict[str, Any]) -> None:
    view["records"][1]["salt"] += "=="


def _index_true(view: dict[str, Any]) -> None:
    view["records"][1]["index"] = True


def _duplicate(view: dict[str, Any]) -> None:
    view["records"][2] = view["records"][1]


def _no_canonical_form(view: dict[str, Any]) -> None:
    view["records"][0]["record"]["value"] = 2**60


@pytest.mark.parametrize(
    "tamper",
    [
        _changed_value,
        _float_value,
        _swapped,
        _out_of_order,
        _missing,
        _wrong_salt,
        _padded_salt,
        _index_true,
        _duplicate,
        _no_canonical_form,
    ],
)
def test_a_view_of_records_other_than_the_signed_ones_is_refused(tamper: Any) -> None:
    view = _view(RECORDS)
    tamper(view)
    assert isinstance(_read_both(view), str)
