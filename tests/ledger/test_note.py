"""C2SP signed-note: the Go reference vectors byte for byte, round trips, and rejections."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import BadSignature, LedgerError, MalformedNote
from ledger.note import (
    MAX_SIGNATURES,
    NoteSigner,
    NoteVerifier,
    add_signatures,
    key_id,
    open_note,
    parse_verifier_key,
    sign_note,
    verifier_key,
)


def peter_signer(v: dict[str, Any]) -> NoteSigner:
    # Go's private key string is PRIVATE+KEY+name+keyid+base64(0x01 || 32-byte seed).
    material = base64.b64decode(v["peter"]["private_key_go"].split("+", 4)[4])
    assert material[0] == 0x01
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(material[1:]))


def test_go_reference_key_id_and_verifier_key(note_vectors: dict[str, Any]) -> None:
    signer = peter_signer(note_vectors)
    # key ID = SHA-256("PeterNeumann" || 0x0A || 0x01 || pub)[:4] = c74f20a3 per the vkey
    assert key_id("PeterNeumann", signer.public_key).hex() == "c74f20a3"
    pub = signer.public_key.public_bytes_raw()
    assert hashlib.sha256(b"PeterNeumann\n\x01" + pub).digest()[:4] == bytes.fromhex("c74f20a3")
    assert verifier_key("PeterNeumann", signer.public_key) == note_vectors["peter"]["verifier_key"]


def test_go_reference_note_signed_byte_for_byte(note_vectors: dict[str, Any]) -> None:
    # Ed25519 is deterministic (RFC 8032), so signing the same text reproduces the Go note.
    peter = note_vectors["peter"]
    assert sign_note(peter["text"], peter_signer(note_vectors)) == peter["note"]


def test_go_reference_note_opens(note_vectors: dict[str, Any]) -> None:
    peter = note_vectors["peter"]
    opened = open_note(peter["note"], NoteVerifier.parse(peter["verifier_key"]))
    assert opened.text == peter["text"]
    assert opened.verified_names == ("PeterNeumann",)
    assert opened.other_signature_lines == ()
    # bytes in, same answer
    assert open_note(peter["note"].encode(), NoteVerifier.parse(peter["verifier_key"])) == opened


def test_tampered_text_fails(note_vectors: dict[str, Any]) -> None:
    peter = note_vectors["peter"]
    v = NoteVerifier.parse(peter["verifier_key"])
    with pytest.raises(BadSignature) as exc:
        open_note(peter["note"].replace("cryptography", "cryptographY"), v)
    assert exc.value.key_name == "PeterNeumann"


def test_verifier_key_with_plus_in_base64_splits_on_first_two(note_vectors: dict[str, Any]) -> None:
    vkey = note_vectors["plus_verifier_key"]  # "TEST+7997405c+AQcC+FTVK..."
    assert vkey.count("+") == 3
    name, kid, sig_type, raw = parse_verifier_key(vkey)
    assert (name, kid.hex(), sig_type, len(raw)) == ("TEST", "7997405c", 0x01, 32)
    assert NoteVerifier.parse(vkey).verifier_key() == vkey


def test_other_published_keys_parse(note_vectors: dict[str, Any]) -> None:
    assert NoteVerifier.parse(note_vectors["enoch_verifier_key"]).key_id.hex() == "af0cfe78"
    with pytest.raises(MalformedNote):  # a type 0x04 cosignature key is not a note key
        NoteVerifier.parse(note_vectors["cosignature_verifier_key"])


def test_every_mangling_of_a_verifier_key_is_refused(note_vectors: dict[str, Any]) -> None:
    vkey = note_vectors["peter"]["verifier_key"]
    NoteVerifier.parse(vkey)
    # every proper substring, and every single-character bump (as Go's TestNewVerifier does)
    for i in range(len(vkey)):
        for j in range(i + 1, len(vkey) + 1):
            if (i, j) != (0, len(vkey)):
                with pytest.raises(MalformedNote):
                    NoteVerifier.parse(vkey[i:j])
    for i in range(len(vkey)):
        bumped = vkey[:i] + chr(ord(vkey[i]) + 1) + vkey[i + 1 :]
        with pytest.raises(MalformedNote):
            NoteVerifier.parse(bumped)


def test_round_trip_with_two_signers_and_unknown_lines(log_key: Ed25519PrivateKey) -> None:
    a = NoteSigner("a.example/log", log_key)
    b = NoteSigner("b.example/other", Ed25519PrivateKey.generate())
    text = "line one\n\nline three after an empty line\n"
    note = sign_note(text, [a, b])
    opened = open_note(note, [a.verifier()])
    assert opened.text == text  # the text may contain blank lines: the LAST one separates
    assert opened.verified_names == ("a.example/log",)
    assert len(opened.other_signature_lines) == 1
    assert opened.other_signature_lines[0].startswith("\u2014 b.example/other ")
    both = open_note(note, [a.verifier(), b.verifier()])
    assert both.verified_names == ("a.example/log", "b.example/other")


def test_unknown_signer_only_is_rejected(log_key: Ed25519PrivateKey) -> None:
    note = sign_note("hello\n", NoteSigner("a.example", log_key))
    stranger = NoteVerifier("b.example", Ed25519PrivateKey.generate().public_key())
    with pytest.raises(BadSignature, match="not signed by any known key"):
        open_note(note, stranger)


def test_same_name_other_key_is_ignored_not_trusted(log_key: Ed25519PrivateKey) -> None:
    # signed-note: signatures from unknown keys are ignored even if they share a name.
    impostor = NoteSigner("a.example", Ed25519PrivateKey.generate())
    note = sign_note("hello\n", impostor)
    with pytest.raises(BadSignature):
        open_note(note, NoteVerifier("a.example", log_key.public_key()))


def test_wrong_key_with_forged_key_id_fails(log_key: Ed25519PrivateKey) -> None:
    # A signature line claiming the real key's (name, key ID) must verify, or the note fails.
    real = NoteSigner("a.example", log_key)
    forger = Ed25519PrivateKey.generate()
    text = "hello\n"
    blob = real.key_id + forger.sign(text.encode())
    note = text + "\n\u2014 a.example " + base64.b64encode(blob).decode() + "\n"
    with pytest.raises(BadSignature) as exc:
        open_note(note, real.verifier())
    assert exc.value.key_name == "a.example"


@pytest.mark.parametrize(
    ("mangle", "why"),
    [
        (lambda n: n.replace("\n\n\u2014", "\n\u2014"), "no blank line"),
        (lambda n: n[:-1], "no final newline"),
        (lambda n: n.replace("\u2014", "-"), "hyphen instead of em dash"),
        (lambda n: n.replace("\u2014 ", "\u2014"), "no space after dash"),
        (lambda n: n[:-3] + "!" + n[-2:], "malformed base64"),
        (lambda n: n[:-2] + "\n", "base64 padding dropped"),
        (lambda n: n + n[n.index("\u2014") :], "duplicate signature line"),
        (lambda n: n.replace("hello", "hel\tlo"), "control character"),
        (lambda n: n.replace("hello", "hel\rlo"), "carriage return"),
        (lambda n: n + "\n", "blank line after signatures"),
        (lambda n: n.replace("hello\n\n", ""), "signatures only"),
    ],
)
def test_malformed_notes_are_rejected(log_key: Ed25519PrivateKey, mangle: Any, why: str) -> None:
    signer = NoteSigner("a.example", log_key)
    note = sign_note("hello\n", signer)
    open_note(note, signer.verifier())
    with pytest.raises((MalformedNote, BadSignature)):
        open_note(mangle(note), signer.verifier())


def test_invalid_utf8_is_malformed(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("a.example", log_key)
    note = sign_note("hello\n", signer).encode()
    with pytest.raises(MalformedNote):
        open_note(b"\xff" + note, signer.verifier())


def test_lone_surrogates_are_malformed_not_unicode_errors(
    note_vectors: dict[str, Any], log_key: Ed25519PrivateKey
) -> None:
    # JSON's "\ud800" decodes to a str no UTF-8 text can hold; found by tests/test_fuzz_parsers.
    signer = NoteSigner("a.example", log_key)
    note = sign_note("hello\n", signer)
    with pytest.raises(MalformedNote, match="lone surrogate"):
        open_note("\ud800" + note, signer.verifier())
    with pytest.raises(MalformedNote, match="lone surrogate"):
        open_note(note.replace("\u2014 a.example", "\u2014 \ud800"), signer.verifier())
    peter = note_vectors["peter"]["verifier_key"]  # PeterNeumann+c74f20a3+ARpc...
    with pytest.raises(MalformedNote, match="lone surrogate"):
        NoteVerifier.parse(peter.replace("PeterNeumann", "Peter\ud800"))


def test_too_many_signatures(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("a.example", log_key)
    note = sign_note("hello\n", signer)
    extra = [
        f"\u2014 w{i}.example " + base64.b64encode(b"\x00" * 68).decode()
        for i in range(MAX_SIGNATURES - 1)
    ]
    full = add_signatures(note, extra)  # exactly MAX_SIGNATURES: accepted (spec: >= 16)
    assert len(open_note(full, signer.verifier()).other_signature_lines) == MAX_SIGNATURES - 1
    with pytest.raises(MalformedNote):
        add_signatures(full, ["\u2014 one.more " + base64.b64encode(b"\x01" * 68).decode()])
    with pytest.raises(MalformedNote):
        open_note(
            full + "\u2014 one.more " + base64.b64encode(b"\x01" * 68).decode() + "\n",
            signer.verifier(),
        )


def test_add_signatures_is_idempotent_and_validates(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("a.example", log_key)
    other = NoteSigner("w.example", Ed25519PrivateKey.generate())
    note = sign_note("hello\n", signer)
    line = sign_note("hello\n", other).split("\n\n", 1)[1]
    once = add_signatures(note, [line])
    assert add_signatures(once, [line.rstrip("\n")]) == once
    assert open_note(once, [signer.verifier(), other.verifier()]).verified_names == (
        "a.example",
        "w.example",
    )
    with pytest.raises(MalformedNote):
        add_signatures(note, ["- not a signature line"])


def test_sign_note_refuses_bad_text_and_names(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("a.example", log_key)
    with pytest.raises(MalformedNote):
        sign_note("no newline", signer)
    with pytest.raises(MalformedNote):
        sign_note("tab\there\n", signer)
    for bad in ("", "has space", "has+plus", "nbsp\u00a0name"):
        with pytest.raises(MalformedNote):
            NoteSigner(bad, log_key)


def test_known_key_signing_twice_is_malformed(log_key: Ed25519PrivateKey) -> None:
    signer = NoteSigner("a.example", log_key)
    note = sign_note("hello\n", [signer, signer])  # Ed25519 deterministic: identical lines
    with pytest.raises(MalformedNote):
        open_note(note, signer.verifier())


@given(st.binary(max_size=300))
def test_open_note_on_random_bytes_raises_only_ledger_errors(blob: bytes) -> None:
    v = NoteVerifier("a.example", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32).public_key())
    with pytest.raises(LedgerError):
        open_note(blob, v)


@given(st.text(max_size=120))
def test_parse_verifier_key_on_random_text_raises_only_malformed(text: str) -> None:
    try:
        NoteVerifier.parse(text)
    except MalformedNote:
        return
    raise AssertionError(f"random text parsed as a verifier key: {text!r}")
