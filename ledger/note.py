"""C2SP signed-note v1.0.0 with Ed25519 (signature type 0x01).

A note is UTF-8 text ending in a newline, a blank line, then one or more signature lines
"— <key name> <base64(4-byte key ID || signature)>" (U+2014 EM DASH, space). Verifier keys are
"<name>+<8 hex digits key ID>+<base64(type byte || public key)>"; the base64 part may itself
contain '+', so a key string is split on its first two '+' only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ledger.errors import BadSignature, MalformedNote

__all__ = [
    "ED25519",
    "MAX_SIGNATURES",
    "NoteSigner",
    "NoteVerifier",
    "OpenedNote",
    "Verifier",
    "add_signatures",
    "b64decode_strict",
    "check_key_name",
    "key_id",
    "open_note",
    "parse_signature_line",
    "parse_verifier_key",
    "raw_public_key",
    "sign_note",
    "verifier_key",
]

# signed-note §Signature types: 0x01 is plain Ed25519 over the note text.
ED25519 = 0x01
# signed-note: verifiers SHOULD cap the signature count and MUST accept at least 16.
MAX_SIGNATURES = 100

_DASH = "\u2014 "  # EM DASH, SPACE
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def raw_public_key(public_key: Ed25519PublicKey | bytes) -> bytes:
    if isinstance(public_key, bytes):
        if len(public_key) != 32:
            raise MalformedNote(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
        return public_key
    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def check_key_name(name: str) -> str:
    """signed-note: key names are non-empty UTF-8 with no Unicode space and no '+'."""
    if not name or any(c.isspace() or c == "+" for c in name) or _CONTROL.search(name):
        raise MalformedNote(f"invalid key name {name!r}")
    _check_utf8(name, "key name")
    return name


def _check_utf8(text: str, what: str) -> None:
    """A str from JSON may hold a lone surrogate ("\\ud800"), which no UTF-8 text has."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise MalformedNote(f"{what} is not valid UTF-8 text (lone surrogate)") from None


def key_id(
    name: str, public_key: Ed25519PublicKey | bytes, *, signature_type: int = ED25519
) -> bytes:
    """SHA-256(name || 0x0A || type || public key)[:4] (signed-note §Signatures)."""
    check_key_name(name)
    material = bytes([signature_type]) + raw_public_key(public_key)
    return hashlib.sha256(name.encode() + b"\n" + material).digest()[:4]


def verifier_key(
    name: str, public_key: Ed25519PublicKey | bytes, *, signature_type: int = ED25519
) -> str:
    """The vkey string "name+keyidhex+base64(type || public key)"."""
    kid = key_id(name, public_key, signature_type=signature_type)
    material = bytes([signature_type]) + raw_public_key(public_key)
    return f"{name}+{kid.hex()}+{base64.b64encode(material).decode()}"


def b64decode_strict(text: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 §4), padded and canonical, or MalformedNote."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
        raise MalformedNote(f"{what} is not valid base64") from exc
    if base64.b64encode(raw).decode() != text:
        raise MalformedNote(f"{what} is not canonical base64")
    return raw


def parse_verifier_key(vkey: str) -> tuple[str, bytes, int, bytes]:
    """Split a vkey into (name, key ID, signature type, public key bytes), checking the key ID."""
    parts = vkey.split("+", 2)  # the base64 part may contain '+': split on the first two only
    if len(parts) != 3:
        raise MalformedNote(f"verifier key {vkey!r} is not name+keyid+key")
    name, kid_hex, material_b64 = parts
    check_key_name(name)
    if not _HEX8.fullmatch(kid_hex):
        raise MalformedNote(f"verifier key {name!r}: key ID {kid_hex!r} is not 8 hex digits")
    material = b64decode_strict(material_b64, f"verifier key {name!r}")
    if not material:
        raise MalformedNote(f"verifier key {name!r} has no key material")
    sig_type, raw = material[0], material[1:]
    if len(raw) != 32:
        raise MalformedNote(f"verifier key {name!r}: Ed25519 key is 32 bytes, got {len(raw)}")
    kid = bytes.fromhex(kid_hex)
    if key_id(name, raw, signature_type=sig_type) != kid:
        raise MalformedNote(f"verifier key {name!r}: key ID {kid_hex} does not match the key")
    return name, kid, sig_type, raw


@runtime_checkable
class Verifier(Protocol):
    """What `open_note` needs of a verifier: the (name, key ID) it answers for and a check."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class NoteSigner:
    """Signs note text with an Ed25519 key under a key name (signature type 0x01)."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(name, self.public_key)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public_key)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, self.public_key)

    def __repr__(self) -> str:
        return f"NoteSigner({self.name!r}, key_id={self.key_id.hex()})"


class NoteVerifier:
    """Checks Ed25519 (type 0x01) signatures by one named key."""

    __slots__ = ("key_id", "name", "public_key")

    def __init__(self, name: str, public_key: Ed25519PublicKey | bytes) -> None:
        self.name = check_key_name(name)
        raw = raw_public_key(public_key)
        self.public_key = Ed25519PublicKey.from_public_bytes(raw)
        self.key_id = key_id(name, raw)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        name, _, sig_type, raw = parse_verifier_key(vkey)
        if sig_type != ED25519:
            raise MalformedNote(
                f"verifier key {name!r} has signature type {sig_type:#04x}, expected 0x01"
            )
        return cls(name, raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def verifier_key(self) -> str:
        return verifier_key(self.name, self.public_key)

    def __repr__(self) -> str:
        return f"NoteVerifier({self.name!r}, key_id={self.key_id.hex()})"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenedNote:
    """A note whose signature by at least one known key verified.

    `verified_names` lists the known keys whose signatures verified, in note order;
    `other_signature_lines` keeps the lines of unknown keys (e.g. witnesses), with newline.
    """

    text: str
    verified_names: tuple[str, ...]
    other_signature_lines: tuple[str, ...]


def _check_text(text: str) -> None:
    _check_utf8(text, "note text")
    if not text.endswith("\n"):
        raise MalformedNote("note text must end with a newline")
    if _CONTROL.search(text):
        raise MalformedNote("note text contains an ASCII control character other than newline")


def sign_note(text: str, signer: NoteSigner | Sequence[NoteSigner]) -> str:
    """Sign `text` (which must end in a newline) and return the whole note."""
    _check_text(text)
    signers = [signer] if isinstance(signer, NoteSigner) else list(signer)
    if not signers:
        raise MalformedNote("a note needs at least one signature")
    message = text.encode()
    lines = [
        f"{_DASH}{s.name} {base64.b64encode(s.key_id + s.sign(message)).decode()}\n"
        for s in signers
    ]
    return text + "\n" + "".join(lines)


def parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """Split "— name base64" (newline optional) into (name, key ID, signature bytes)."""
    body = line[:-1] if line.endswith("\n") else line
    if "\n" in body or not body.startswith(_DASH):
        raise MalformedNote(f"not a signature line: {line[:80]!r}")
    name, sep, sig_b64 = body[len(_DASH) :].partition(" ")
    if not sep:
        raise MalformedNote(f"signature line has no signature: {line[:80]!r}")
    check_key_name(name)
    blob = b64decode_strict(sig_b64, f"signature by {name!r}")
    if len(blob) < 5:
        raise MalformedNote(f"signature by {name!r} is shorter than a key ID and one byte")
    return name, blob[:4], blob[4:]


def _split(note: str | bytes) -> tuple[str, list[str]]:
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedNote("note is not valid UTF-8") from exc
    _check_utf8(note, "note")
    if _CONTROL.search(note):
        raise MalformedNote("note contains an ASCII control character other than newline")
    if not note.endswith("\n"):
        raise MalformedNote("note does not end with a newline")
    # The text is separated from the signatures by the last blank line (signed-note §Format).
    cut = note.rfind("\n\n")
    if cut < 0:
        raise MalformedNote("note has no blank line before its signatures")
    text, sig_block = note[: cut + 1], note[cut + 2 :]
    lines = sig_block.splitlines(keepends=True)
    if not lines:
        raise MalformedNote("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise MalformedNote(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    if len(set(lines)) != len(lines):
        raise MalformedNote("note repeats a signature line")
    return text, lines


def unverified_text(note: str | bytes) -> str:
    """The text of a well-formed note, its signatures NOT verified (`open_note` verifies).
    Raises MalformedNote as `open_note` does for a note that is not well formed."""
    return _split(note)[0]


def add_signatures(note: str, lines: Iterable[str]) -> str:
    """Append signature lines (e.g. witness cosignatures) to a signed note.

    Lines already present are skipped, so adding the same cosignature twice is harmless.
    Nothing is verified here: callers verify with `open_note`.
    """
    text, existing = _split(note)
    out = list(existing)
    for line in lines:
        parse_signature_line(line)
        full = line if line.endswith("\n") else line + "\n"
        if full not in out:
            out.append(full)
    if len(out) > MAX_SIGNATURES:
        raise MalformedNote(f"note would have {len(out)} signatures, more than {MAX_SIGNATURES}")
    return text + "\n" + "".join(out)


def open_note(note: str | bytes, verifiers: Verifier | Iterable[Verifier]) -> OpenedNote:
    """Verify a note against known keys (signed-note §Signatures).

    Signatures from unknown (name, key ID) pairs are kept but not checked. A known key whose
    signature fails, or signs twice, rejects the note; so does a note no known key signed.
    """
    text, lines = _split(note)
    known: dict[tuple[str, bytes], Verifier] = {}
    # The concrete class first (isinstance stops at the first match): a runtime Protocol
    # check alone costs tens of microseconds a call.
    single = (NoteVerifier, Verifier)
    for each in [verifiers] if isinstance(verifiers, single) else list(verifiers):
        known[(each.name, each.key_id)] = each
    message = text.encode()
    verified: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    others: list[str] = []
    for line in lines:
        name, kid, sig = parse_signature_line(line)
        v = known.get((name, kid))
        if v is None:
            others.append(line)
            continue
        if (name, kid) in seen:
            raise MalformedNote(f"key {name!r} signs the note twice")
        seen.add((name, kid))
        if not v.verify(message, sig):
            raise BadSignature(name)
        verified.append(name)
    if not verified:
        names = ", ".join(sorted({n for n, _ in known})) or "(none)"
        raise BadSignature(names, "note is not signed by any known key")
    return OpenedNote(
        text=text, verified_names=tuple(verified), other_signature_lines=tuple(others)
    )
