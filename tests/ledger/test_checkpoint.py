"""C2SP tlog-checkpoint: the spec's example body, round trips and rejections."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from ledger.errors import BadSignature, MalformedNote
from ledger.note import NoteSigner, NoteVerifier, add_signatures
from ledger.rfc6962 import EMPTY_ROOT

ROOT = bytes(range(32))


def test_spec_example_parses(note_vectors: dict[str, Any]) -> None:
    body = note_vectors["c2sp_checkpoint"]["body"]
    cp = parse_checkpoint(body)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.extensions == ()
    assert cp.body() == body


def test_body_layout() -> None:
    cp = Checkpoint(origin="hub.example/log", size=0, root_hash=EMPTY_ROOT)
    # origin, "0" for the empty tree, then base64 of SHA-256("") (e3b0c442...b855)
    assert cp.body() == "hub.example/log\n0\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
    ext = Checkpoint(origin="o", size=7, root_hash=ROOT, extensions=("ext one", "ext two"))
    assert ext.body().endswith("\next one\next two\n")
    assert parse_checkpoint(ext.body()) == ext


def test_sign_and_open_round_trip(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("hub.example/log", log_key)
    cp = Checkpoint(origin="hub.example/log", size=12345, root_hash=ROOT)
    note = sign_checkpoint(cp, signer)
    assert note.startswith(cp.body() + "\n\u2014 hub.example/log ")
    assert open_checkpoint(note, signer.verifier()) == cp
    assert open_checkpoint(note, signer.verifier(), origin="hub.example/log") == cp
    with pytest.raises(MalformedNote):
        open_checkpoint(note, signer.verifier(), origin="other.example/log")


def test_cosignatures_do_not_disturb_opening(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("hub.example/log", log_key)
    cp = Checkpoint(origin="hub.example/log", size=3, root_hash=ROOT)
    witness = NoteSigner("w.example", Ed25519PrivateKey.generate())
    line = sign_checkpoint(cp, witness).split("\n\n")[1]
    note = add_signatures(sign_checkpoint(cp, signer), [line])
    assert open_checkpoint(note, signer.verifier()) == cp


def test_wrong_log_key_fails(log_key: Ed25519PrivateKey) -> None:
    note = sign_checkpoint(Checkpoint(origin="o", size=1, root_hash=ROOT), NoteSigner("o", log_key))
    with pytest.raises(BadSignature):
        open_checkpoint(note, NoteVerifier("o", Ed25519PrivateKey.generate().public_key()))


def test_editing_the_size_breaks_the_signature(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("o", log_key)
    note = sign_checkpoint(Checkpoint(origin="o", size=10, root_hash=ROOT), signer)
    with pytest.raises(BadSignature):
        open_checkpoint(note.replace("\n10\n", "\n11\n", 1), signer.verifier())


@pytest.mark.parametrize(
    "body",
    [
        "o\n1\n",  # two lines
        "o\n1\nAAEC\n",  # root is 3 bytes
        "\n1\n" + base64.b64encode(ROOT).decode() + "\n",  # empty origin
        "o\n01\n" + base64.b64encode(ROOT).decode() + "\n",  # leading zero
        "o\n-1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n+1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n 1\n" + base64.b64encode(ROOT).decode() + "\n",
        "o\n\u0661\n" + base64.b64encode(ROOT).decode() + "\n",  # ARABIC-INDIC DIGIT ONE
        "o\n99999999999999999999\n" + base64.b64encode(ROOT).decode() + "\n",  # > 2^63-1
        "o\n1\n" + base64.b64encode(ROOT).decode(),  # no final newline
        "o\n1\n" + base64.b64encode(ROOT).decode() + "\n\n",  # empty extension line
        "o\n1\n" + base64.urlsafe_b64encode(ROOT).decode().replace("A", "-") + "\n",
    ],
)
def test_malformed_bodies(body: str) -> None:
    with pytest.raises(MalformedNote):
        parse_checkpoint(body)


def test_constructor_validates() -> None:
    with pytest.raises(MalformedNote):
        Checkpoint(origin="o", size=-1, root_hash=ROOT)
    with pytest.raises(MalformedNote):
        Checkpoint(origin="o\nx", size=1, root_hash=ROOT)
    with pytest.raises(MalformedNote):
        Checkpoint(origin="o", size=1, root_hash=ROOT[:31])
    with pytest.raises(MalformedNote):
        Checkpoint(origin="o", size=1, root_hash=ROOT, extensions=("",))


@given(st.text(max_size=200))
def test_parse_random_text_raises_only_malformed(text: str) -> None:
    try:
        cp = parse_checkpoint(text)
    except MalformedNote:
        return
    assert cp.body() == text  # anything accepted is canonical


@given(
    origin=st.text(
        st.characters(min_codepoint=0x21, max_codepoint=0x2FFF), min_size=1, max_size=40
    ),
    size=st.integers(0, 2**63 - 1),
    root=st.binary(min_size=32, max_size=32),
)
def test_round_trip_property(origin: str, size: int, root: bytes) -> None:
    cp = Checkpoint(origin=origin, size=size, root_hash=root)
    assert parse_checkpoint(cp.body()) == cp


def test_lone_surrogate_in_a_checkpoint_body_is_malformed() -> None:
    # JSON's "\ud800" gives a str no signed bytes can hold; parse_checkpoint accepted it and a
    # cosignature check on the result crashed (found by tests/test_fuzz_parsers.py).
    body = Checkpoint(origin="o", size=1, root_hash=ROOT).body()
    with pytest.raises(MalformedNote, match="lone surrogate"):
        parse_checkpoint(body.replace("o\n", "o\ud800\n", 1))
    with pytest.raises(MalformedNote, match="lone surrogate"):
        parse_checkpoint(body + "ext \ud800\n")
