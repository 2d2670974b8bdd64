"""HS256 JSON Web Tokens (RFC 7519 over RFC 7515), sans I/O: what Nightscout's
`/api/v2/authorization/request/<accessToken>` hands out and its API then accepts as
`Authorization: Bearer` (nightscout/cgm-remote-monitor lib/server/enclave.js signs with
jsonwebtoken, HS256, 8 hours). Only HS256 is accepted: a token naming another algorithm
("none", RS256) is refused rather than verified some other way (RFC 8725 §3.1)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from datetime import datetime, timedelta

LIFETIME = timedelta(hours=8)  # enclave.signJWT's default
_HEADER = {"alg": "HS256", "typ": "JWT"}


class JwtInvalid(ValueError):
    """Not a JWT this hub signed, or expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise JwtInvalid("not base64url") from None


def _part(value: Mapping[str, object]) -> str:
    return _b64(json.dumps(dict(value), separators=(",", ":")).encode())


def sign(claims: Mapping[str, object], key: bytes) -> str:
    signing_input = f"{_part(_HEADER)}.{_part(claims)}"
    mac = hmac.new(key, signing_input.encode("ascii"), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(mac)}"


def looks_like_jwt(text: str) -> bool:
    return text.count(".") == 2


def verify(token: str, key: bytes, *, now: datetime) -> dict[str, object]:
    """The claims of `token` when it is HS256-signed with `key` and its `exp` (seconds since
    the epoch) is after `now`; raise `JwtInvalid` otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtInvalid("a JWT has three parts")
    header_text, claims_text, mac_text = parts
    try:
        header = json.loads(_unb64(header_text))
        claims = json.loads(_unb64(claims_text))
    except (ValueError, RecursionError):
        raise JwtInvalid("not JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise JwtInvalid("only HS256 is accepted")
    expected = hmac.new(key, f"{header_text}.{claims_text}".encode("ascii"), hashlib.sha256)
    if not hmac.compare_digest(expected.digest(), _unb64(mac_text)):
        raise JwtInvalid("bad signature")
    if not isinstance(claims, dict):
        raise JwtInvalid("claims must be an object")
    exp = claims.get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise JwtInvalid("no exp")
    if now.timestamp() >= exp:
        raise JwtInvalid("expired")
    return claims
