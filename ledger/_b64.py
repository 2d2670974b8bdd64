"""Strict unpadded base64url (RFC 7515 §2, RFC 4648 §5): one encoding per byte string."""

from __future__ import annotations

import base64
import binascii

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
# url-safe -> standard alphabet; '+', '/' and '=' become '*', which strict decoding refuses.
_TO_STANDARD = bytes.maketrans(b"-_+/=", b"+/***")


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str | bytes) -> bytes:
    """Decode unpadded base64url; ValueError unless `text` is the one canonical encoding."""
    raw = text.encode("ascii") if isinstance(text, str) else bytes(text)
    remainder = len(raw) % 4
    if remainder == 1:
        raise ValueError("base64url length leaves a dangling character")
    if remainder:
        # RFC 4648 §3.5: the unused low bits of the last character must be zero, or two
        # texts would decode to the same bytes.
        last = _INDEX.get(raw[-1])
        if last is None or last & (0x0F if remainder == 2 else 0x03):
            raise ValueError("base64url has non-zero padding bits")
    try:
        return binascii.a2b_base64(
            raw.translate(_TO_STANDARD) + b"=" * (-len(raw) % 4), strict_mode=True
        )
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from None
