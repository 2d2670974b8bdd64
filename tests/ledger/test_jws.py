"""JWS compact EdDSA: RFC 8037 known answer, tampering, malformed tokens, a JOSE cross-check."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger._b64 import b64url_decode, b64url_encode
from ledger.errors import BadSignature, MalformedJws
from ledger.jws import compact_header, sign_compact, verify_compact
from ledger.keys import generate_key, jwk_public_key, public_jwk

# RFC 8037 Appendix A.1 key; A.4 signs "Example of Ed25519 signing" under {"alg":"EdDSA"}.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_A4_TOKEN = (
    b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
    b"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
)
KEY = generate_key()
OTHER = generate_key()


def make(header: dict[str, object], payload: bytes, key: Ed25519PrivateKey = KEY) -> bytes:
    """Hand-build a token with any header, signed properly (to test header checks)."""
    signing_input = f"{b64url_encode(json.dumps(header).encode())}.{b64url_encode(payload)}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode()))}".encode()


def test_rfc8037_a4_signing_known_answer() -> None:
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))
    # Ed25519 is deterministic (RFC 8032 §5.1.6), so the token is reproduced exactly.
    assert sign_compact(b"Example of Ed25519 signing", key, None) == RFC8037_A4_TOKEN


def test_rfc8037_a5_verification() -> None:
    public = jwk_public_key({"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X})
    assert verify_compact(RFC8037_A4_TOKEN, public) == b"Example of Ed25519 signing"
    assert verify_compact(RFC8037_A4_TOKEN.decode(), public) == b"Example of Ed25519 signing"


def test_header_carries_kid_in_canonical_form() -> None:
    token = sign_compact(b"{}", KEY, "hub-key-1")
    assert b64url_decode(token.split(b".")[0]) == b'{"alg":"EdDSA","kid":"hub-key-1"}'
    assert compact_header(token) == {"alg": "EdDSA", "kid": "hub-key-1"}
    assert verify_compact(token, KEY.public_key()) == b"{}"


@given(st.binary(max_size=300), st.text(max_size=20))
def test_round_trip(payload: bytes, kid: str) -> None:
    assert verify_compact(sign_compact(payload, KEY, kid), KEY.public_key()) == payload


def _replace_part(token: bytes, index: int, new: bytes) -> bytes:
    parts = token.split(b".")
    parts[index] = new
    return b".".join(parts)


def test_changed_payload_fails() -> None:
    token = sign_compact(b'{"value":120}', KEY, "k")
    forged = _replace_part(token, 1, b64url_encode(b'{"value":320}').encode())
    with pytest.raises(BadSignature) as info:
        verify_compact(forged, KEY.public_key())
    assert info.value.key_name == "k"


def test_changed_header_fails() -> None:
    token = sign_compact(b"x", KEY, "k")
    forged = _replace_part(token, 0, b64url_encode(b'{"alg":"EdDSA","kid":"j"}').encode())
    with pytest.raises(BadSignature) as info:
        verify_compact(forged, KEY.public_key())
    assert info.value.key_name == "j"  # names the key the token claims


def test_changed_signature_fails() -> None:
    token = sign_compact(b"x", KEY, "k")
    signature = bytearray(b64url_decode(token.split(b".")[2]))
    signature[10] ^= 0x01
    forged = _replace_part(token, 2, b64url_encode(bytes(signature)).encode())
    with pytest.raises(BadSignature):
        verify_compact(forged, KEY.public_key())


def test_wrong_key_fails() -> None:
    with pytest.raises(BadSignature):
        verify_compact(sign_compact(b"x", KEY, "k"), OTHER.public_key())


def test_rfc9864_fully_specified_alg_is_accepted() -> None:
    assert verify_compact(make({"alg": "Ed25519"}, b"p"), KEY.public_key()) == b"p"


GOOD = sign_compact(b"payload", KEY, "k")


MALFORMED: list[tuple[str | bytes, str]] = [
    (b"abc.def", "3 parts"),
    (GOOD + b".x", "3 parts"),
    (b"", "3 parts"),
    ("é.b.c", "ASCII"),
    (make({"alg": "none"}, b"p"), "alg"),
    (make({"alg": "HS256"}, b"p"), "alg"),
    (make({"kid": "k"}, b"p"), "alg"),
    (make({"alg": "EdDSA", "crit": ["exp"]}, b"p"), "critical"),
    (make([1, 2], b"p"), "not a JSON object"),  # type: ignore[arg-type]
    (_replace_part(GOOD, 0, b64url_encode(b'{"alg":"EdDSA","alg":"EdDSA"}').encode()), "dup"),
    (_replace_part(GOOD, 0, b64url_encode(b"\xff\xfe").encode()), "UTF-8 JSON"),
    (_replace_part(GOOD, 0, b"e30="), "base64url"),  # padded "{}"
    (_replace_part(GOOD, 2, GOOD.split(b".")[2][:-2]), "64 bytes"),
    (_replace_part(GOOD, 2, b"/" + GOOD.split(b".")[2][1:]), "base64url"),
]


# Signed tokens differ on every import (a fresh key): cases are named by position and
# reason, the same in every pytest-xdist worker.
@pytest.mark.parametrize(
    ("token", "why"), MALFORMED, ids=[f"{n}-{why}" for n, (_, why) in enumerate(MALFORMED)]
)
def test_malformed_tokens(token: bytes | str, why: str) -> None:
    with pytest.raises(MalformedJws, match=why if why != "dup" else "duplicate"):
        verify_compact(token, KEY.public_key())


def test_non_canonical_base64_spelling_is_refused() -> None:
    # The signature is 64 bytes = 86 base64url chars; 86 % 4 == 2, so the last char carries
    # 2 data bits and 4 zero bits. Setting a zero bit spells the same bytes differently.
    sig = GOOD.split(b".")[2]
    last = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(sig[-1:])
    twin = sig[:-1] + bytes(
        [b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1]]
    )
    with pytest.raises(MalformedJws, match="padding bits"):
        verify_compact(_replace_part(GOOD, 2, twin), KEY.public_key())


@given(st.binary(max_size=200))
def test_random_bytes_never_raise_anything_else(data: bytes) -> None:
    with pytest.raises((MalformedJws, BadSignature)):
        verify_compact(data, KEY.public_key())


b64_chars = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/.", max_size=120
)


@given(st.lists(b64_chars, min_size=1, max_size=4), st.booleans())
def test_random_token_shapes_never_raise_anything_else(parts: list[str], real_header: bool) -> None:
    if real_header:
        parts[0] = GOOD.split(b".")[0].decode()
    with pytest.raises((MalformedJws, BadSignature)):
        verify_compact(".".join(parts), KEY.public_key())


def test_an_independent_jose_library_verifies_our_token() -> None:
    # joserfc is a dev dependency: a missing install fails here rather than skipping.
    from joserfc import jws
    from joserfc.errors import BadSignatureError, SecurityWarning
    from joserfc.jwk import OKPKey

    token = sign_compact(b'{"batch_seq":7}', KEY, "hub-key-1")
    jwk: dict[str, str | list[str]] = {**public_jwk(KEY.public_key())}
    key = OKPKey.import_key(jwk)
    # joserfc >= 1.x warns that RFC 9864 deprecates the name "EdDSA" (still valid JOSE).
    with pytest.warns(SecurityWarning):
        obj = jws.deserialize_compact(token, key, algorithms=["EdDSA"])
    assert obj.payload == b'{"batch_seq":7}'
    assert obj.headers() == {"alg": "EdDSA", "kid": "hub-key-1"}
    with pytest.warns(SecurityWarning), pytest.raises(BadSignatureError):
        jws.deserialize_compact(
            _replace_part(token, 1, b64url_encode(b'{"batch_seq":8}').encode()),
            key,
            algorithms=["EdDSA"],
        )
