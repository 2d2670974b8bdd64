"""Enrolment tokens and their messages, pure (`gateway.clinic.enrolment`), and the
endpoint's throttle (`glucohub.enrolment_http.FailureThrottle`)."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.clinic.enrolment import (
    EnrolmentGrant,
    EnrolmentRefused,
    EnrolmentRequest,
    Refused,
    enrolment_link,
    is_token,
    mosquitto_hash,
    new_token,
    parse_expiry,
    parse_grant,
    parse_request,
    refusal_line,
    split_link,
    token_digest,
)
from gateway.errors import TransientStorageError
from gateway.settings import Settings
from gateway.storage.postgres_enrolment import Redeemed
from glucohub.enrolment_http import FailureThrottle, enrolment_app


def test_a_token_is_256_random_bits_and_only_its_sha256_is_kept() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    for token in tokens:
        assert token.startswith("ghe1_") and len(token) == 48 and is_token(token)
        assert len(base64.urlsafe_b64decode(token[5:] + "=")) == 32
    # FIPS 180-2 appendix B.1: SHA-256("abc")
    assert token_digest("abc").hex() == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


@pytest.mark.parametrize(
    ("text", "lifetime"),
    [("30m", timedelta(minutes=30)), ("24h", timedelta(days=1)), ("30d", timedelta(days=30))],
)
def test_expiry_is_a_number_and_a_unit(text: str, lifetime: timedelta) -> None:
    assert parse_expiry(text) == lifetime


@pytest.mark.parametrize("text", ["", "24", "0h", "-1h", "1w", "31d", "1.5h", "721h", "1m", "29m"])
def test_other_expiries_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expiry"):
        parse_expiry(text)


def test_the_link_carries_the_token_in_its_fragment() -> None:
    token = "ghe1_" + "x" * 43
    link = enrolment_link("https://clinic.example/v1/enrol", token)
    assert link == f"https://clinic.example/v1/enrol#{token}"
    assert split_link(link, None) == ("https://clinic.example/v1/enrol", token)
    assert split_link("https://c/v1/enrol", f" {token}\n") == ("https://c/v1/enrol", token)


def _body(**changes: object) -> bytes:
    body: dict[str, object] = {
        "token": "ghe1_" + "y" * 43,
        "hub_id": "home-1",
        "batch_jwk": {"kty": "OKP", "crv": "Ed25519", "x": "abc"},
        "log_key": "glucohub.local/home-1+00000000+AQ== \n",
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_a_request_is_read_with_its_keys_in_one_spelling() -> None:
    request = parse_request(_body())
    assert request.hub_id == "home-1"
    assert request.batch_jwk == '{"crv":"Ed25519","kty":"OKP","x":"abc"}'
    assert request.log_key == "glucohub.local/home-1+00000000+AQ=="


@pytest.mark.parametrize(
    ("body", "refused"),
    [
        (b"", Refused.MALFORMED),
        (b"[1]", Refused.MALFORMED),
        (b"\xff", Refused.MALFORMED),
        (_body(token="guess"), Refused.UNKNOWN),
        (_body(token=None), Refused.UNKNOWN),
        (_body(hub_id="a/b"), Refused.MALFORMED),
        (_body(hub_id=""), Refused.MALFORMED),
        (_body(batch_jwk="{}"), Refused.MALFORMED),
        (_body(log_key=7), Refused.MALFORMED),
    ],
)
def test_a_request_that_is_not_one_is_refused(body: bytes, refused: Refused) -> None:
    with pytest.raises(EnrolmentRefused) as info:
        parse_request(body)
    assert info.value.refused is refused


def test_the_grant_travels_and_a_non_grant_is_refused() -> None:
    grant = EnrolmentGrant(
        clinic_name="C",
        hub_id="h",
        broker_url="mqtts://c:8883",
        topic_prefix="glucohub/v1/hubs/h",
    )
    assert parse_grant(grant.to_json()) == grant
    for body in (b"<html>", b"{}", json.dumps({**json.loads(grant.to_json()), "broker_url": "x"})):
        with pytest.raises(ValueError):
            parse_grant(body if isinstance(body, bytes) else body.encode())
    assert refusal_line(b'{"message": "no\\nway"}', 410) == "no way"
    assert refusal_line(b"<html>bad gateway</html>", 502) == "the clinic answered HTTP 502"
    assert refusal_line(b'{"message": "\\ud800"}', 403) == "the clinic answered HTTP 403"
    with pytest.raises(ValueError, match="not UTF-8"):
        parse_grant(grant.to_json().replace(b'"C"', b'"\\udc00"'))
    with pytest.raises(EnrolmentRefused, match="not UTF-8"):
        parse_request(_body(hub_id="\ud800"))


def test_the_broker_password_hash_is_the_one_mosquitto_passwd_makes(tmp_path: Path) -> None:
    path = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(path), "hub", "s3cret"],
        check=True,
        capture_output=True,
    )
    user, hashed = path.read_text().strip().split(":", 1)
    _, kind, iterations, salt, digest = hashed.split("$")
    assert (user, kind, iterations) == ("hub", "7", "101")
    assert mosquitto_hash("s3cret", base64.b64decode(salt)) == hashed
    # and independently: PBKDF2-HMAC-SHA512 of the password with that salt
    expected = hashlib.pbkdf2_hmac("sha512", b"s3cret", base64.b64decode(salt), 101)
    assert base64.b64decode(digest) == expected


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)

    def monotonic(self) -> float:
        return self.t


def test_a_source_that_keeps_failing_waits_longer_each_time_then_is_forgotten() -> None:
    clock = _Clock()
    throttle = FailureThrottle(clock)
    for _ in range(5):  # five free failures
        assert throttle.wait_s("10.0.0.1") == 0
        throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 1.0
    assert throttle.wait_s("10.0.0.2") == 0  # another address is not held off
    clock.t += 1.0
    assert throttle.wait_s("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.wait_s("10.0.0.1") == 2.0
    clock.t += 24 * 3600 + 1
    assert throttle.wait_s("10.0.0.1") == 0
    throttle.failed("10.0.0.1")  # counted from zero again
    assert throttle.wait_s("10.0.0.1") == 0


async def test_a_database_outage_is_a_503_to_try_again_and_no_guess() -> None:
    clock = _Clock()

    def redeem(_request: EnrolmentRequest, _hash: str | None) -> Redeemed:
        raise TransientStorageError("PostgreSQL: connection refused")

    async def run(call: Callable[[], Redeemed]) -> Redeemed:
        return call()

    app = enrolment_app(Settings(), redeem, run, clock=clock)
    async with TestClient(TestServer(app)) as client:
        for _ in range(6):  # not counted as guesses: never held off
            response = await client.post("/v1/enrol", data=_body())
            assert response.status == 503
            assert response.headers["Retry-After"] == "30"
            assert await response.json() == {
                "error": "unavailable",
                "message": "the clinic cannot enrol hubs just now; try again later",
            }
