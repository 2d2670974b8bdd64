"""C2SP tlog-cosignature v1 (Ed25519, type 0x04): published vectors, round trips, rejections."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.checkpoint import Checkpoint, parse_checkpoint, sign_checkpoint
from ledger.cosignature import (
    CosignatureVerifier,
    WitnessSigner,
    cosign,
    cosignature_message,
    cosignature_verifier_key,
    parse_cosignature_line,
    verify_cosignature,
)
from ledger.errors import BadSignature, MalformedNote
from ledger.note import NoteSigner, NoteVerifier, add_signatures, open_note, parse_verifier_key

CP = Checkpoint(origin="hub.example/log", size=20852163, root_hash=bytes(range(32)))


def test_message_layout_matches_spec_example(note_vectors: dict[str, Any]) -> None:
    body = note_vectors["c2sp_checkpoint"]["body"]
    # tlog-cosignature §Ed25519 signed message, example verbatim:
    expected = (
        "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n"
        "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    )
    assert cosignature_message(body, 1679315147) == expected.encode()


def test_spec_example_cosignature_line_timestamp(note_vectors: dict[str, Any]) -> None:
    ex = note_vectors["c2sp_checkpoint"]
    line = parse_cosignature_line(ex["witness_line"])
    # bytes 4..12 of the blob are 0x00000000641850CB = 1679315147, the example's "time" line
    assert line.timestamp == ex["witness_timestamp"] == 0x641850CB
    assert line.name == "witness.example.com/w1"
    assert len(line.signature) == 64


def test_published_timestamp_vector(note_vectors: dict[str, Any]) -> None:
    v = note_vectors["cosignature_timestamp"]
    line = parse_cosignature_line("\u2014 w " + v["signature_b64"])
    assert line.timestamp == v["timestamp"]  # 0x66FEA4CF
    with pytest.raises(MalformedNote):  # a plain 64-byte Ed25519 signature is not a cosignature
        parse_cosignature_line("\u2014 w " + v["plain_ed25519_signature_b64"])
    with pytest.raises(MalformedNote):
        parse_cosignature_line("\u2014 w 5%/$! 2")


def test_published_cosignature_verifier_key(note_vectors: dict[str, Any]) -> None:
    vkey = note_vectors["cosignature_verifier_key"]
    name, kid, sig_type, raw = parse_verifier_key(vkey)
    assert sig_type == 0x04
    # key ID = SHA-256(name || 0x0A || 0x04 || pub)[:4]
    assert hashlib.sha256(name.encode() + b"\n\x04" + raw).digest()[:4] == kid
    assert kid.hex() == "da77ade7"
    v = CosignatureVerifier.parse(vkey)
    assert v.verifier_key() == vkey
    assert cosignature_verifier_key(name, raw) == vkey


def test_round_trip_and_key_id_differs_from_note_key(witness_key: Ed25519PrivateKey) -> None:
    w = WitnessSigner("w.example/1", witness_key)
    line = cosign(CP, w, 1700000000)
    assert line.startswith("\u2014 w.example/1 ") and line.endswith("\n")
    blob = base64.b64decode(line.split(" ")[2])
    assert len(blob) == 4 + 8 + 64
    assert blob[4:12] == (1700000000).to_bytes(8, "big")
    assert verify_cosignature(CP, line, w.verifier()) == 1700000000
    note_kid = NoteSigner("w.example/1", witness_key).key_id
    assert w.key_id != note_kid  # type byte 0x04 vs 0x01
    # A NoteSigner is accepted and cosigns with the 0x04 key ID
    assert cosign(CP, NoteSigner("w.example/1", witness_key), 1700000000) == line


def test_cosignature_covers_body_and_time(witness_key: Ed25519PrivateKey) -> None:
    w = WitnessSigner("w", witness_key)
    line = cosign(CP, w, 1700000000)
    other = Checkpoint(origin=CP.origin, size=CP.size + 1, root_hash=CP.root_hash)
    with pytest.raises(BadSignature):
        verify_cosignature(other, line, w.verifier())
    # change the timestamp bytes: the signature covers the "time" line
    name, b64 = line.rstrip("\n").split(" ")[1:]
    blob = bytearray(base64.b64decode(b64))
    blob[11] ^= 1
    forged = f"\u2014 {name} {base64.b64encode(bytes(blob)).decode()}\n"
    with pytest.raises(BadSignature):
        verify_cosignature(CP, forged, w.verifier())
    with pytest.raises(BadSignature):  # another witness's verifier
        verify_cosignature(CP, line, WitnessSigner("w", Ed25519PrivateKey.generate()).verifier())


def test_plain_note_signature_is_not_a_cosignature(witness_key: Ed25519PrivateKey) -> None:
    # The same key's type-0x01 signature has a different key ID, so a cosignature verifier
    # treats it as unknown; and a note verifier ignores a cosignature.
    log = NoteSigner("hub.example/log", Ed25519PrivateKey.generate())
    note = sign_checkpoint(CP, log)
    cos = cosign(CP, WitnessSigner("w", witness_key), 5)
    cosigned = add_signatures(note, [cos])
    opened = open_note(
        cosigned, [log.verifier(), CosignatureVerifier("w", witness_key.public_key())]
    )
    assert opened.verified_names == ("hub.example/log", "w")
    assert open_note(cosigned, log.verifier()).other_signature_lines == (cos,)
    with pytest.raises(BadSignature):
        open_note(cosigned, NoteVerifier("w", witness_key.public_key()))


def test_timestamp_range() -> None:
    with pytest.raises(MalformedNote):
        cosignature_message(CP.body(), -1)
    with pytest.raises(MalformedNote):
        cosignature_message(CP.body(), 2**63)


def test_spec_example_checkpoint_with_cosignature_parses(note_vectors: dict[str, Any]) -> None:
    ex = note_vectors["c2sp_checkpoint"]
    note = ex["body"] + "\n" + ex["log_line"] + ex["witness_line"]
    # We hold neither public key: the note must be refused, and the body still parses.
    with pytest.raises(BadSignature):
        open_note(note, NoteVerifier("x", Ed25519PrivateKey.generate().public_key()))
    assert parse_checkpoint(ex["body"]).size == 20852163
