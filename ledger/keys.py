"""Ed25519 signing keys: 0600 PEM files, public JWKs (RFC 8037) and thumbprints (RFC 7638)."""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ledger._b64 import b64url_decode, b64url_encode
from ledger.errors import KeyFileError, MalformedKey
from ledger.jcs import canonicalize

__all__ = [
    "generate_key",
    "jwk_public_key",
    "jwk_thumbprint",
    "load_private_key",
    "public_jwk",
    "save_private_key",
]

_KEY_FILE_MODE = 0o600


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def save_private_key(
    path: str | os.PathLike[str], key: Ed25519PrivateKey, passphrase: str | None = None
) -> None:
    """Write `key` as PKCS#8 PEM (encrypted when a passphrase is given) to a new 0600 file.

    Refuses to overwrite (KeyFileError). The file appears complete or not at all: the PEM is
    written and fsynced to a temporary file opened O_CREAT|O_EXCL with mode 0600 in the same
    directory, then hard-linked to `path` (link(2) fails if `path` exists) and unlinked.
    """
    target = Path(path)
    if passphrase == "":
        raise KeyFileError(str(target), "empty passphrase; pass None for an unencrypted key")
    encryption: serialization.KeySerializationEncryption = (
        serialization.NoEncryption()
        if passphrase is None
        else serialization.BestAvailableEncryption(passphrase.encode("utf-8"))
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    if target.exists():
        raise KeyFileError(str(target), "already exists; refusing to overwrite a key")
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _KEY_FILE_MODE)
    except OSError as exc:
        raise KeyFileError(str(target), f"cannot create: {exc.strerror}") from None
    try:
        try:
            os.fchmod(fd, _KEY_FILE_MODE)  # whatever the umask did, exactly 0600
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise KeyFileError(str(target), "already exists; refusing to overwrite a key") from None
        except OSError as exc:
            raise KeyFileError(str(target), f"cannot create: {exc.strerror}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_private_key(
    path: str | os.PathLike[str], passphrase: str | None = None
) -> Ed25519PrivateKey:
    """Read a PEM key written by save_private_key; KeyFileError on any problem."""
    where = str(path)
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(where, f"cannot read: {exc.strerror}") from None
    password = None if passphrase is None else passphrase.encode("utf-8")
    try:
        key = serialization.load_pem_private_key(pem, password=password)
    except TypeError as exc:
        # cryptography: TypeError when a password is missing or given for a plain key.
        reason = (
            "key is encrypted; a passphrase is required"
            if password is None
            else "key is not encrypted; no passphrase expected"
        )
        raise KeyFileError(where, reason) from exc
    except ValueError as exc:
        reason = "wrong passphrase or corrupt key" if password is not None else "not a PEM key"
        raise KeyFileError(where, reason) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(where, f"not an Ed25519 key ({type(key).__name__})")
    return key


def public_jwk(public_key: Ed25519PublicKey, kid: str | None = None) -> dict[str, str]:
    """The RFC 8037 §2 public JWK {"kty":"OKP","crv":"Ed25519","x":...} (plus "kid" if given)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(raw)}
    if kid is not None:
        jwk["kid"] = kid
    return jwk


def jwk_public_key(jwk: Mapping[str, object]) -> Ed25519PublicKey:
    """Parse an Ed25519 public JWK (RFC 8037 §2); MalformedKey if it is anything else."""
    try:
        return Ed25519PublicKey.from_public_bytes(_okp_x(jwk))
    except ValueError as exc:
        raise MalformedKey(f"JWK x is not an Ed25519 public key: {exc}") from None


def jwk_thumbprint(jwk: Mapping[str, object]) -> str:
    """RFC 7638 SHA-256 thumbprint: base64url(SHA-256(JCS of the required members)).

    For an OKP key the required members are crv, kty and x (RFC 8037 §2); "kid", "d" and any
    other members do not change the thumbprint.
    """
    x = _okp_x(jwk)
    required = {"crv": "Ed25519", "kty": "OKP", "x": b64url_encode(x)}
    return b64url_encode(hashlib.sha256(canonicalize(required)).digest())


def _okp_x(jwk: Mapping[str, object]) -> bytes:
    if not isinstance(jwk, Mapping):
        raise MalformedKey(f"a JWK is a JSON object, not {type(jwk).__name__}")
    if jwk.get("kty") != "OKP":
        raise MalformedKey(f"JWK kty {jwk.get('kty')!r} is not 'OKP'")
    if jwk.get("crv") != "Ed25519":
        raise MalformedKey(f"JWK crv {jwk.get('crv')!r} is not 'Ed25519'")
    x = jwk.get("x")
    if not isinstance(x, str):
        raise MalformedKey("JWK has no string member 'x'")
    try:
        raw = b64url_decode(x)
    except ValueError as exc:
        raise MalformedKey(f"JWK x is not base64url: {exc}") from None
    if len(raw) != 32:
        raise MalformedKey(f"JWK x is {len(raw)} bytes; an Ed25519 public key is 32")
    return raw
