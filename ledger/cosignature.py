"""C2SP tlog-cosignature v1.0.0, Ed25519 "cosignature/v1" (signature type 0x04).

A cosignature is a note signature line on a checkpoint whose signature bytes are
`u64 timestamp (big-endian) || Ed25519 signature` over the message
"cosignature/v1\\ntime <timestamp>\\n" + the checkpoint body. The key ID is
SHA-256(name || 0x0A || 0x04 || public key)[:4].
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.checkpoint import Checkpoint
from ledger.errors import BadSignature, MalformedNote
from ledger.note import (
    ED25519,
    NoteSigner,
    check_key_name,
    key_id,
    parse_signature_line,
    parse_verifier_key,
    raw_public_key,
    verifier_key,
)

__all__ = [
    "COSIGNATURE_V1",
    "CosignatureLine",
    "CosignatureVerifier",
    "WitnessSigner",
    "cosign",
    "cosignature_message",
    "cosignature_verifier_key",
    "parse_cosignature_line",
    "verify_cosignature",
]

COSIGNATURE_V1 = 0x04  # signed-note signature type for timestamped Ed25519 cosignatures
_MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1


def cosignature_message(body: str, timestamp: int) -> bytes:
    """The signed message: header line, time line, then the whole checkpoint body."""
    _check_timestamp(timestamp)
    return f"cosignature/v1\ntime {timestamp}\n".encode() + body.encode()


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        raise MalformedNote(f"cosignature timestamp {timestamp!r} is not an integer")
    if not 0 <= timestamp <= _MAX_TIMESTAMP:
        raise MalformedNote(f"cosignature timestamp {timestamp} out of range")


def cosignature_verifier_key(name: str, public_key: Ed25519PublicKey | bytes) -> str:
    """A vkey with signature type 0x04 for a witness key."""
    return verifier_key(name, public_key, signature_type=COSIGNATURE_V1)


class WitnessSigner:
    """A witness's cosigning key under its name (key ID computed with type 0x04)."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        self.name = check_key_name(name)
        self._key = private_key
        self.public_key = private_key.public_key()
        self.key_id = key_id(name, self.public_key, signature_type=COSIGNATURE_V1)

    def verifier_key(self) -> str:
        return cosignature_verifier_key(self.name, self.public_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)


def cosign(
    checkpoint: Checkpoint, witness_signer: WitnessSigner | NoteSigner, timestamp: int
) -> str:
    """A cosignature line ("— name base64\\n") on `checkpoint` at POSIX time `timestamp`.

    A NoteSigner is accepted too: its key and name are used with the type 0x04 key ID.
    """
    signer = (
        witness_signer
        if isinstance(witness_signer, WitnessSigner)
        else WitnessSigner(witness_signer.name, witness_signer.private_key)
    )
    sig = signer.sign(cosignature_message(checkpoint.body(), timestamp))
    blob = signer.key_id + timestamp.to_bytes(8, "big") + sig
    return f"\u2014 {signer.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True, slots=True, kw_only=True)
class CosignatureLine:
    name: str
    key_id: bytes
    timestamp: int
    signature: bytes


def parse_cosignature_line(line: str) -> CosignatureLine:
    """Split a cosignature line into its parts (no verification)."""
    name, kid, blob = parse_signature_line(line)
    if len(blob) != 8 + 64:
        raise MalformedNote(f"cosignature by {name!r} is {len(blob)} bytes, expected 8 + 64")
    timestamp = int.from_bytes(blob[:8], "big")
    _check_timestamp(timestamp)
    return CosignatureLine(name=name, key_id=kid, timestamp=timestamp, signature=blob[8:])


class CosignatureVerifier:
    """Checks cosignature/v1 signatures by one witness; usable with `note.open_note`."""

    __slots__ = ("key_id", "name", "public_key")

    def __init__(self, name: str, public_key: Ed25519PublicKey | bytes) -> None:
        self.name = check_key_name(name)
        raw = raw_public_key(public_key)
        self.public_key = Ed25519PublicKey.from_public_bytes(raw)
        self.key_id = key_id(name, raw, signature_type=COSIGNATURE_V1)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """From a type 0x04 vkey (a type 0x01 vkey of the same key is accepted too)."""
        name, _, sig_type, raw = parse_verifier_key(vkey)
        if sig_type not in (COSIGNATURE_V1, ED25519):
            raise MalformedNote(f"verifier key {name!r}: type {sig_type:#04x} is not Ed25519")
        return cls(name, raw)

    def verifier_key(self) -> str:
        return cosignature_verifier_key(self.name, self.public_key)

    def verify(self, message: bytes, signature: bytes) -> bool:
        """`message` is the note text; `signature` is timestamp || Ed25519 signature."""
        if len(signature) != 8 + 64:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > _MAX_TIMESTAMP:
            return False
        signed = f"cosignature/v1\ntime {timestamp}\n".encode() + message
        try:
            self.public_key.verify(signature[8:], signed)
        except InvalidSignature:
            return False
        return True


def verify_cosignature(checkpoint: Checkpoint, line: str, verifier: CosignatureVerifier) -> int:
    """Check one cosignature line on `checkpoint`; return its timestamp.

    Raises BadSignature when the line is not by this witness or does not verify,
    MalformedNote when the line is not a well-formed cosignature.
    """
    cos = parse_cosignature_line(line)
    if cos.name != verifier.name or cos.key_id != verifier.key_id:
        raise BadSignature(
            verifier.name, f"line is by {cos.name!r} key ID {cos.key_id.hex()}, not this witness"
        )
    blob = cos.timestamp.to_bytes(8, "big") + cos.signature
    if not verifier.verify(checkpoint.body().encode(), blob):
        raise BadSignature(verifier.name, "cosignature does not verify")
    return cos.timestamp
