"""JWS compact serialisation (RFC 7515 §7.1) with alg EdDSA over Ed25519 (RFC 8037 §3.1).

A token is ASCII `BASE64URL(header) "." BASE64URL(payload) "." BASE64URL(signature)`; the
signature covers the first two parts as written. Any JOSE library verifies what `sign_compact`
writes; `verify_compact` accepts only EdDSA (or RFC 9864's "Ed25519"), refuses "crit"
(RFC 7515 §4.1.11: we understand no extensions) and accepts each token in exactly one spelling
(strict base64url).
"""

from __future__ import annotations

import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger._b64 import b64url_decode, b64url_encode
from ledger.errors import BadSignature, MalformedJws
from ledger.jcs import canonicalize

__all__ = ["compact_header", "sign_compact", "verify_compact"]

_MAX_HEADER_BYTES = 4096
_SIGNATURE_BYTES = 64  # RFC 8032 §5.1.6: R || S
# "EdDSA" is RFC 8037's name (what we write); RFC 9864 deprecates it for the fully specified
# "Ed25519", which means the same signature with an Ed25519 key, so a verifier accepts both.
_ACCEPTED_ALGS = frozenset({"EdDSA", "Ed25519"})


def sign_compact(payload: bytes, key: Ed25519PrivateKey, kid: str | None) -> bytes:
    """Sign `payload`; the protected header is the JCS of {"alg":"EdDSA","kid":kid}.

    With kid None the header is {"alg":"EdDSA"} (RFC 8037 Appendix A.4 has no kid).
    """
    header: dict[str, str] = {"alg": "EdDSA"}
    if kid is not None:
        header["kid"] = kid
    signing_input = (b64url_encode(canonicalize(header)) + "." + b64url_encode(payload)).encode(
        "ascii"
    )
    return signing_input + b"." + b64url_encode(key.sign(signing_input)).encode("ascii")


def verify_compact(token: bytes | str, public_key: Ed25519PublicKey) -> bytes:
    """Return the payload of `token` if `public_key` signed it.

    Raises MalformedJws when the token is not a well-formed EdDSA compact JWS and BadSignature
    (key_name = the header's kid, or "jws") when the signature does not verify.
    """
    header, signing_input, payload_b64, signature = _split(token)
    kid = header.get("kid")
    try:
        public_key.verify(signature, signing_input)
    except InvalidSignature:
        raise BadSignature(kid if isinstance(kid, str) else "jws") from None
    try:
        return b64url_decode(payload_b64)
    except ValueError as exc:
        raise MalformedJws(f"payload: {exc}") from None


def compact_header(token: bytes | str) -> dict[str, Any]:
    """The protected header of a well-formed token, NOT verified (to pick a key by kid)."""
    return _split(token)[0]


def _split(token: bytes | str) -> tuple[dict[str, Any], bytes, bytes, bytes]:
    if isinstance(token, str):
        try:
            token = token.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedJws("a compact JWS is ASCII") from None
    elif not isinstance(token, bytes | bytearray | memoryview):
        raise MalformedJws(f"a compact JWS is bytes or str, not {type(token).__name__}")
    token = bytes(token)
    parts = token.split(b".")
    if len(parts) != 3:
        raise MalformedJws(f"a compact JWS has 3 parts, this has {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    if len(header_b64) > _MAX_HEADER_BYTES:
        raise MalformedJws("header is implausibly long")
    try:
        header_bytes = b64url_decode(header_b64)
        signature = b64url_decode(signature_b64)
    except ValueError as exc:
        raise MalformedJws(f"header or signature: {exc}") from None
    header = _parse_header(header_bytes)
    if header.get("alg") not in _ACCEPTED_ALGS:
        raise MalformedJws(f"alg {header.get('alg')!r} is not 'EdDSA'")
    if "crit" in header:
        raise MalformedJws(f"unsupported critical header parameters {header['crit']!r}")
    if len(signature) != _SIGNATURE_BYTES:
        raise MalformedJws(f"an Ed25519 signature is 64 bytes, this is {len(signature)}")
    return header, header_b64 + b"." + payload_b64, payload_b64, signature


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            # RFC 7515 §4: header parameter names MUST be unique, else reject.
            raise MalformedJws(f"duplicate header parameter {name!r}")
        out[name] = value
    return out


def _parse_header(raw: bytes) -> dict[str, Any]:
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError, JSONDecodeError, digits
        raise MalformedJws(f"header is not UTF-8 JSON: {exc}") from None
    if not isinstance(header, dict):
        raise MalformedJws("header is not a JSON object")
    return header
