"""One-time enrolment tokens: what a clinic hands a hub so that the hub can enrol itself
(pure: no database, no HTTP).

A token is `ghe1_` and 32 random bytes in unpadded base64url (256 bits). The clinic keeps
only its SHA-256: a token is never guessed (2^256), so a fast hash loses nothing against a
stolen table, and it is looked up by that digest, so no comparison of secret bytes runs in
time that depends on them. The hub redeems a token once, sending its public keys; the
clinic answers with what the hub's `[upstream]` section needs.

The link form `https://clinic.example/v1/enrol#ghe1_…` carries both in one string (QR code,
copy and paste); the token rides in the fragment, which an HTTP client never sends, so it
stays out of proxies' and servers' request logs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

TOKEN_PREFIX = "ghe1_"
_TOKEN_BYTES = 32
_TOKEN_RE = re.compile(r"ghe1_[A-Za-z0-9_-]{43}")
ENROL_PATH = "/v1/enrol"
MIN_EXPIRY = timedelta(minutes=30)  # time to carry the token to the hub
MAX_EXPIRY = timedelta(days=30)
MAX_REQUEST_BYTES = 16 * 1024  # two public keys and an id: far below this
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def new_token() -> str:
    raw = secrets.token_bytes(_TOKEN_BYTES)
    return TOKEN_PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_digest(token: str) -> bytes:
    """What the clinic stores of a token (SHA-256 of its text)."""
    return hashlib.sha256(token.encode()).digest()


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def parse_expiry(text: str) -> timedelta:
    """`30m`, `24h`, `7d`: a token's lifetime, 30 minutes to 30 days."""
    match = re.fullmatch(r"([1-9][0-9]{0,5})([mhd])", text.strip())
    if match is None:
        raise ValueError(f"expiry {text!r} is not a number and a unit, e.g. 30m, 24h or 7d")
    lifetime = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if lifetime > MAX_EXPIRY:
        raise ValueError(f"expiry {text!r} is longer than the longest allowed, 30d")
    if lifetime < MIN_EXPIRY:
        raise ValueError(f"expiry {text!r} is shorter than the shortest allowed, 30m")
    return lifetime


def enrolment_link(public_url: str, token: str) -> str:
    """The one-string form of an endpoint and a token (for a QR code)."""
    return f"{public_url.split('#', 1)[0]}#{token}"


def split_link(url: str, token: str | None) -> tuple[str, str]:
    """(endpoint URL, token) from `URL TOKEN` or from one link `URL#TOKEN`."""
    base, _, fragment = url.partition("#")
    if token is None:
        if not fragment:
            raise ValueError("no token: give it after the URL, or the link ending in #ghe1_…")
        token = fragment
    token = token.strip()
    if not is_token(token):
        raise ValueError("that is not an enrolment token (it starts with ghe1_, 48 characters)")
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"the clinic's URL must be http:// or https://, got {base!r}")
    return base, token


class Refused(Enum):
    """Why a redemption was refused: the HTTP status and the one line the hub shows."""

    MALFORMED = (400, "the request is not an enrolment request")
    BAD_KEYS = (400, "the hub's public keys are not usable")
    UNKNOWN = (403, "this enrolment token is not known to the clinic")
    WRONG_HUB = (403, "this enrolment token was made for another hub")
    USED = (410, "this enrolment token has already been used")
    EXPIRED = (410, "this enrolment token has expired; ask the clinic for a new one")
    REVOKED = (410, "this enrolment token was revoked by the clinic")
    KEYS_DIFFER = (409, "this hub id is already enrolled at the clinic with other keys")
    TOO_MANY = (429, "too many failed attempts from this address; try again later")
    UNAVAILABLE = (503, "the clinic cannot enrol hubs just now; try again later")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def message(self) -> str:
        return self.value[1]

    @property
    def code(self) -> str:
        return self.name.lower()


class EnrolmentRefused(Exception):
    def __init__(self, refused: Refused, detail: str = "") -> None:
        super().__init__(f"{refused.message}{': ' + detail if detail else ''}")
        self.refused = refused
        self.detail = detail


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentRequest:
    token: str = ""
    hub_id: str
    batch_jwk: str
    log_key: str

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "token": self.token,
                "hub_id": self.hub_id,
                "batch_jwk": json.loads(self.batch_jwk),
                "log_key": self.log_key,
            }
        ).encode()


def parse_request(body: bytes) -> EnrolmentRequest:
    """The hub's POST body, or `EnrolmentRefused` (MALFORMED, or UNKNOWN for a string that
    cannot be a token)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise EnrolmentRefused(Refused.MALFORMED, "not JSON") from None
    if not isinstance(data, dict):
        raise EnrolmentRefused(Refused.MALFORMED, "not a JSON object")
    if not _encodable(data):
        raise EnrolmentRefused(Refused.MALFORMED, "not UTF-8")
    token, hub_id, jwk, log_key = (data.get(k) for k in ("token", "hub_id", "batch_jwk", "log_key"))
    if not isinstance(token, str) or not is_token(token):
        raise EnrolmentRefused(Refused.UNKNOWN)
    if not isinstance(hub_id, str) or not 0 < len(hub_id) <= 200 or set(hub_id) & set("/+#\0"):
        raise EnrolmentRefused(Refused.MALFORMED, "hub_id must be a hub id")
    if not isinstance(jwk, dict) or not isinstance(log_key, str):
        raise EnrolmentRefused(Refused.MALFORMED, "batch_jwk must be a JWK, log_key a string")
    return EnrolmentRequest(
        token=token,
        hub_id=hub_id,
        batch_jwk=json.dumps(jwk, sort_keys=True, separators=(",", ":")),
        log_key=log_key.strip(),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentGrant:
    """The clinic's answer: the hub's `[upstream]` settings and who it is talking to."""

    clinic_name: str
    hub_id: str
    broker_url: str
    topic_prefix: str
    username: str = ""
    password: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "clinic_name": self.clinic_name,
                "hub_id": self.hub_id,
                "broker_url": self.broker_url,
                "topic_prefix": self.topic_prefix,
                "username": self.username,
                "password": self.password,
            }
        ).encode()


def parse_grant(body: bytes) -> EnrolmentGrant:
    """The clinic's 200 answer, or ValueError."""
    try:
        data: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("the clinic's answer is not JSON") from None
    fields = ("clinic_name", "hub_id", "broker_url", "topic_prefix", "username", "password")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        raise ValueError("the clinic's answer is not an enrolment grant")
    if not _encodable(data):
        raise ValueError("the clinic's answer is not UTF-8")
    if not data["broker_url"].startswith(("mqtt://", "mqtts://")):
        raise ValueError(f"the clinic's broker URL {data['broker_url']!r} is not mqtt(s)://")
    return EnrolmentGrant(**{f: data[f] for f in fields})


def _encodable(data: object) -> bool:
    """JSON's `\\ud800` escapes decode to lone surrogates, which no UTF-8 file, database or
    log line can hold."""
    try:
        json.dumps(data, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return False
    return True


def refusal_line(body: bytes, status: int) -> str:
    """The one-line reason in a clinic's 4xx answer (or the status alone)."""
    try:
        data = json.loads(body)
        message = data["message"] if isinstance(data, dict) else None
    except (ValueError, UnicodeDecodeError, KeyError):
        message = None
    if isinstance(message, str) and message.strip() and _encodable(message):
        return " ".join(message.split())[:300]
    return f"the clinic answered HTTP {status}"


# Mosquitto 2.0's password file: `user:$7$ITERATIONS$SALT$HASH`, PBKDF2-HMAC-SHA512 with a
# 12-byte salt, both base64 (mosquitto_passwd's default, 101 iterations). The password is
# 256 random bits, so the iteration count is not what protects it.
MOSQUITTO_ITERATIONS = 101


def new_broker_password() -> str:
    return secrets.token_urlsafe(32)


def mosquitto_hash(password: str, salt: bytes | None = None) -> str:
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, MOSQUITTO_ITERATIONS)
    encode = base64.b64encode
    return f"$7${MOSQUITTO_ITERATIONS}${encode(salt).decode()}${encode(digest).decode()}"
