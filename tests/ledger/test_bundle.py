"""Offline bundle export: round trip, and every kind of tampering named by batch."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pytest

from ledger._b64 import b64url_decode, b64url_encode
from ledger.batch import seal_batch
from ledger.bundle import BUNDLE_FORMAT, bundle_lines, verify_bundle, write_bundle
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.cosignature import WitnessSigner, cosign
from ledger.errors import BundleError
from ledger.keys import generate_key, jwk_thumbprint, public_jwk
from ledger.note import NoteSigner, add_signatures

BATCH_KEY = generate_key()
BATCH_JWK = public_jwk(
    BATCH_KEY.public_key(), kid=jwk_thumbprint(public_jwk(BATCH_KEY.public_key()))
)
LOG = NoteSigner("glucohub.local/hub-a", generate_key())
WITNESS = WitnessSigner("witness.example/w1", generate_key())


def naive_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 §2.1 MTH written out independently: split at the largest power of 2 < n."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


@dataclass
class Log:
    jws: list[bytes]
    note: str


def make_log(n: int, log: NoteSigner = LOG, hub_id: str = "hub-a", size: int | None = None) -> Log:
    jws: list[bytes] = []
    for seq in range(n):
        jws.append(
            seal_batch(
                hub_id=hub_id,
                batch_seq=seq,
                start="2024-05-01T12:00:00.000Z",
                end="2024-05-01T12:05:00.000Z",
                readings=[{"value": 100.0 + seq, "seq": seq * 2 + k} for k in range(2)],
                prev_jws=jws[-1] if jws else None,
                signing_key=BATCH_KEY,
                kid=BATCH_JWK["kid"],
            ).jws
        )
    size = n if size is None else size
    root = naive_root([hashlib.sha256(j).digest() for j in jws[:size]])
    cp = Checkpoint(origin=log.name, size=size, root_hash=root)
    note = sign_checkpoint(cp, log)
    note = add_signatures(note, [cosign(cp, WITNESS, 1_714_564_800)])
    return Log(jws=jws, note=note)


def lines_of(log: Log) -> list[str]:
    return list(
        bundle_lines(
            log_vkey=LOG.verifier_key(),
            batch_jwk=BATCH_JWK,
            jws_list=log.jws,
            checkpoint_note=log.note,
        )
    )


def verify(lines: list[str]) -> Any:
    return verify_bundle(
        lines,
        log_vkey=LOG.verifier_key(),
        batch_jwk=BATCH_JWK,
        witness_vkeys=[WITNESS.verifier_key()],
    )


def fails(lines: list[str], batch_seq: int | None, match: str) -> None:
    with pytest.raises(BundleError, match=match) as info:
        verify(lines)
    assert info.value.batch_seq == batch_seq
    if batch_seq is not None:
        assert str(info.value).startswith(f"batch {batch_seq}:")


LOG5 = make_log(5)


def test_round_trip_through_a_file(tmp_path: Any) -> None:
    path = tmp_path / "export.jsonl"
    with path.open("w", encoding="utf-8") as f:
        count = write_bundle(
            f.write,
            log_vkey=LOG.verifier_key(),
            batch_jwk=BATCH_JWK,
            jws_list=LOG5.jws,
            checkpoint_note=LOG5.note,
        )
    assert count == 1 + 5 + 1  # key line, one per batch, checkpoint
    with path.open(encoding="utf-8") as f:
        report = verify(list(f))
    assert (report.hub_id, report.batches, report.readings, report.tree_size) == ("hub-a", 5, 10, 5)
    assert report.root_hash == naive_root([hashlib.sha256(j).digest() for j in LOG5.jws])
    assert report.witnessed_by == ("witness.example/w1",)


def test_layout() -> None:
    records = [json.loads(line) for line in lines_of(LOG5)]
    assert records[0] == {
        "type": "keys",
        "format": BUNDLE_FORMAT,
        "log_vkey": LOG.verifier_key(),
        "batch_jwk": BATCH_JWK,
    }
    assert [r["batch_seq"] for r in records[1:6]] == [0, 1, 2, 3, 4]
    assert records[6] == {"type": "checkpoint", "note": LOG5.note}


def test_empty_log() -> None:
    report = verify(lines_of(make_log(0)))
    assert (report.batches, report.hub_id, report.tree_size) == (0, None, 0)


def test_unknown_witness_is_not_reported() -> None:
    other = WitnessSigner("witness.example/w2", generate_key())
    report = verify_bundle(
        lines_of(LOG5),
        log_vkey=LOG.verifier_key(),
        batch_jwk=BATCH_JWK,
        witness_vkeys=[other.verifier_key()],
    )
    assert report.witnessed_by == ()


def _edit_reading(line: str) -> str:
    record = json.loads(line)
    header, payload, signature = record["jws"].split(".")
    body = json.loads(b64url_decode(payload))
    body["readings"][0]["value"] = 250
    record["jws"] = ".".join([header, b64url_encode(json.dumps(body).encode()), signature])
    return json.dumps(record) + "\n"


def test_edited_reading_names_its_batch() -> None:
    lines = lines_of(LOG5)
    lines[3] = _edit_reading(lines[3])  # line 3 is batch 2
    fails(lines, 2, "signature")


def test_deleted_batch_line_names_the_missing_batch() -> None:
    lines = lines_of(LOG5)
    del lines[2]  # batch 1
    fails(lines, 1, "holds batch 2 where batch 1 belongs")


def test_deleted_last_batch_line_names_it() -> None:
    lines = lines_of(LOG5)
    del lines[5]  # batch 4: the chain is intact but the checkpoint covers 5
    fails(lines, 4, "batches missing")


def test_duplicated_line_names_the_batch() -> None:
    lines = lines_of(LOG5)
    lines.insert(3, lines[2])  # batch 1 twice
    fails(lines, 2, "holds batch 1 where batch 2 belongs")


def test_reordered_lines_name_the_batch() -> None:
    lines = lines_of(LOG5)
    lines[2], lines[3] = lines[3], lines[2]
    fails(lines, 1, "holds batch 2 where batch 1 belongs")


def test_renumbered_reordered_lines_still_fail_on_the_jws() -> None:
    # Swap the JWS but keep the batch_seq fields in order: the signed batch_seq catches it.
    lines = lines_of(LOG5)
    a, b = json.loads(lines[2]), json.loads(lines[3])
    a["jws"], b["jws"] = b["jws"], a["jws"]
    lines[2], lines[3] = json.dumps(a) + "\n", json.dumps(b) + "\n"
    fails(lines, 1, "found batch_seq 2")


def test_older_checkpoint_swapped_in_names_the_first_uncovered_batch() -> None:
    lines = lines_of(LOG5)
    cp = Checkpoint(
        origin=LOG.name,
        size=3,
        root_hash=naive_root([hashlib.sha256(j).digest() for j in LOG5.jws[:3]]),
    )
    lines[-1] = json.dumps({"type": "checkpoint", "note": sign_checkpoint(cp, LOG)}) + "\n"
    fails(lines, 3, "covers 3 batches but the bundle holds 5")


def test_checkpoint_of_another_log_fails() -> None:
    lines = lines_of(LOG5)
    lines[-1] = lines_of(make_log(5))[-1]  # same size, same key, different batches
    fails(lines, None, "hash to root")


def test_checkpoint_signed_by_another_key_fails() -> None:
    impostor = NoteSigner(LOG.name, generate_key())
    lines = lines_of(LOG5)
    lines[-1] = lines_of(make_log(5, log=impostor))[-1]
    fails(lines, None, "not signed by the trusted log key")


def test_missing_checkpoint_and_trailing_lines() -> None:
    lines = lines_of(LOG5)
    fails(lines[:-1], None, "no checkpoint")
    fails([*lines, lines[1]], None, "after the checkpoint")


def test_key_line_must_match_the_trusted_keys() -> None:
    lines = lines_of(LOG5)
    fails(lines[1:], None, "first line")
    other = public_jwk(generate_key().public_key())
    record = json.loads(lines[0])
    fails([json.dumps({**record, "batch_jwk": other}) + "\n", *lines[1:]], None, "batch key")
    fails([json.dumps({**record, "log_vkey": "x+1+2"}) + "\n", *lines[1:]], None, "log key")
    fails([json.dumps({**record, "format": "v9"}) + "\n", *lines[1:]], None, "format")


@pytest.mark.parametrize("junk", ["not json\n", "[1]\n", '{"type": 3}\n', '{"type":"x"}\n'])
def test_junk_lines(junk: str) -> None:
    lines = lines_of(LOG5)
    lines.insert(2, junk)
    with pytest.raises(BundleError):
        verify(lines)


def test_blank_lines_and_bytes_are_tolerated() -> None:
    lines = lines_of(LOG5)
    report = verify_bundle(
        [line.encode() for line in lines] + [b"\n"],
        log_vkey=LOG.verifier_key(),
        batch_jwk=BATCH_JWK,
    )
    assert report.batches == 5
    assert report.witnessed_by == ()
