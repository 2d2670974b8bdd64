"""Key files (0600, atomic, no overwrite, passphrase) and JWK / RFC 7638 thumbprints."""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ledger._b64 import b64url_decode
from ledger.errors import KeyFileError, MalformedKey
from ledger.keys import (
    generate_key,
    jwk_public_key,
    jwk_thumbprint,
    load_private_key,
    public_jwk,
    save_private_key,
)

# RFC 8037 Appendix A.1 (private "d") and A.2 (public "x"); A.3 gives the thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def rfc8037_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))


def raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_rfc8037_public_jwk_and_thumbprint() -> None:
    jwk = public_jwk(rfc8037_key().public_key())
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X}
    assert jwk_thumbprint(jwk) == RFC8037_THUMBPRINT


def test_thumbprint_ignores_kid_and_private_members() -> None:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X, "kid": "k1", "d": RFC8037_D}
    assert jwk_thumbprint(jwk) == RFC8037_THUMBPRINT
    assert public_jwk(rfc8037_key().public_key(), kid="k1")["kid"] == "k1"


def test_jwk_round_trip() -> None:
    key = generate_key()
    parsed = jwk_public_key(public_jwk(key.public_key()))
    assert raw_public(key) == parsed.public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "EC", "crv": "Ed25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "X25519", "x": RFC8037_X},
        {"kty": "OKP", "crv": "Ed25519"},
        {"kty": "OKP", "crv": "Ed25519", "x": 5},
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X[:-2]},  # 31 bytes
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X + "="},  # padding is not base64url
        {"kty": "OKP", "crv": "Ed25519", "x": RFC8037_X[:-1] + "p"},  # non-zero spare bits
        ["not", "an", "object"],
    ],
)
def test_malformed_jwks_are_refused(jwk: object) -> None:
    with pytest.raises(MalformedKey):
        jwk_public_key(jwk)  # type: ignore[arg-type]
    with pytest.raises(MalformedKey):
        jwk_thumbprint(jwk)  # type: ignore[arg-type]


@given(
    st.fixed_dictionaries(
        {
            "kty": st.sampled_from(["OKP", "EC"]),
            "crv": st.sampled_from(["Ed25519", "X25519"]),
            "x": st.text(alphabet="ABCDabcd0189-_=+/ \u00e9", max_size=50),
        }
    )
)
def test_random_jwks_parse_or_raise_malformed_key(jwk: dict[str, str]) -> None:
    with contextlib.suppress(MalformedKey):
        jwk_public_key(jwk)


def test_key_file_is_0600_and_round_trips(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "hub.key"
    save_private_key(path, key, None)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert raw_public(load_private_key(path, None)) == raw_public(key)
    assert os.listdir(tmp_path) == ["hub.key"]  # no temporary file left behind


def test_key_file_is_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_private_key(tmp_path / "k", generate_key(), None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


def test_passphrase_round_trip_and_errors(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "hub.key"
    save_private_key(path, key, "correct horse")
    assert path.read_bytes().startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    assert raw_public(load_private_key(path, "correct horse")) == raw_public(key)
    with pytest.raises(KeyFileError, match="wrong passphrase") as info:
        load_private_key(path, "battery staple")
    assert info.value.path == str(path)
    with pytest.raises(KeyFileError, match="passphrase is required"):
        load_private_key(path, None)


def test_passphrase_given_for_a_plain_key(tmp_path: Path) -> None:
    save_private_key(tmp_path / "k", generate_key(), None)
    with pytest.raises(KeyFileError, match="not encrypted"):
        load_private_key(tmp_path / "k", "x")


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "hub.key"
    path.write_bytes(b"precious")
    with pytest.raises(KeyFileError, match="already exists"):
        save_private_key(path, generate_key(), None)
    assert path.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["hub.key"]


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="empty passphrase"):
        save_private_key(tmp_path / "k", generate_key(), "")
    assert not (tmp_path / "k").exists()


def test_missing_and_foreign_key_files(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "absent", None)
    (tmp_path / "junk").write_bytes(b"not a key")
    with pytest.raises(KeyFileError, match="not a PEM key"):
        load_private_key(tmp_path / "junk", None)
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "p256").write_bytes(other)
    with pytest.raises(KeyFileError, match="not an Ed25519 key"):
        load_private_key(tmp_path / "p256", None)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot create"):
        save_private_key(tmp_path / "no" / "such" / "k", generate_key(), None)
