"""The encrypted backup format (gateway/backup_format.py): round trips at every chunk edge,
fed whole and in small pieces, and every way a file goes wrong refused before it counts."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.backup_format import (
    BackupFormatError,
    DamagedBackup,
    Decryptor,
    Encryptor,
    Header,
    WrongPassphrase,
)

PASS = "correct horse battery staple"
CHUNK = 1024  # small chunks (2^10) and cheap scrypt (2^10) keep these tests fast


def header() -> Header:
    return Header(log2_n=10, r=8, p=1, chunk_log2=10, salt=os.urandom(16), prefix=os.urandom(7))


def encrypt(plain: bytes, passphrase: str = PASS, piece: int | None = None) -> bytes:
    enc = Encryptor(passphrase, header())
    step = piece or max(1, len(plain))
    out = [enc.feed(plain[i : i + step]) for i in range(0, len(plain), step)]
    return b"".join(out) + enc.finish()


def decrypt(data: bytes, passphrase: str = PASS, piece: int | None = None) -> bytes:
    dec = Decryptor(passphrase)
    step = piece or max(1, len(data))
    out = [dec.feed(data[i : i + step]) for i in range(0, len(data), step)]
    return b"".join(out) + dec.finish()


def chunks_of(n: int) -> int:
    """Chunks a plaintext of n bytes makes: ceil(n / CHUNK), and one (empty) for nothing."""
    return max(1, -(-n // CHUNK))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 7])
def test_round_trip_at_every_chunk_edge(size: int) -> None:
    plain = os.urandom(size)
    sealed = encrypt(plain)
    # 37-byte header, 16-byte key check, and a 16-byte tag per chunk
    assert len(sealed) == 37 + 16 + size + 16 * chunks_of(size)
    assert decrypt(sealed) == plain
    assert decrypt(encrypt(plain, piece=97), piece=13) == plain


def test_the_layout_is_the_documented_one() -> None:
    """Chunk 0 opens with plain AES-GCM under scrypt(passphrase, salt) and the nonce
    prefix | counter 0 | not-last, with the header as associated data."""
    plain = os.urandom(2 * CHUNK + 5)
    sealed = encrypt(plain)
    head = sealed[:37]
    assert head[:8] == b"GHBACKUP" and head[8] == 1
    salt, prefix = head[14:30], head[30:37]
    key = Scrypt(salt=salt, length=32, n=2**10, r=8, p=1).derive(PASS.encode())
    chunk0 = sealed[53 : 53 + CHUNK + 16]
    assert AESGCM(key).decrypt(prefix + b"\0\0\0\0" + b"\0", chunk0, head) == plain[:CHUNK]
    last = sealed[53 + 2 * (CHUNK + 16) :]
    assert AESGCM(key).decrypt(prefix + b"\0\0\0\2" + b"\1", last, head) == plain[2 * CHUNK :]


def test_a_wrong_passphrase_is_named_and_releases_nothing() -> None:
    sealed = encrypt(os.urandom(3 * CHUNK))
    dec = Decryptor("Correct horse battery staple")
    with pytest.raises(WrongPassphrase, match="wrong passphrase"):
        dec.feed(sealed)


@pytest.mark.parametrize(
    "position",
    [0, 9, 20, 36, 40, 53, 53 + CHUNK // 2, 53 + CHUNK + 15, 53 + CHUNK + 16, -17, -1],
    ids=lambda p: f"byte {p}",
)
def test_any_flipped_byte_is_refused(position: int) -> None:
    plain = os.urandom(3 * CHUNK + 100)
    sealed = bytearray(encrypt(plain))
    sealed[position] ^= 0x01
    with pytest.raises(BackupFormatError):
        decrypt(bytes(sealed))


@pytest.mark.parametrize(
    "keep",
    [0, 20, 52, 53, 60, 53 + CHUNK + 16, 53 + 2 * (CHUNK + 16), 53 + 2 * (CHUNK + 16) + 1],
)
def test_a_cut_anywhere_is_refused(keep: int) -> None:
    """Including exactly at a chunk boundary: the chunk before the cut was not the last."""
    sealed = encrypt(os.urandom(3 * CHUNK + 100))
    with pytest.raises(DamagedBackup):
        decrypt(sealed[:keep])


def test_reordered_dropped_and_appended_chunks_are_refused() -> None:
    plain = os.urandom(4 * CHUNK + 1)
    sealed = encrypt(plain)
    head, body = sealed[:53], sealed[53:]
    block = CHUNK + 16
    blocks = [body[i : i + block] for i in range(0, len(body), block)]
    assert len(blocks) == 5
    swapped = head + blocks[1] + blocks[0] + b"".join(blocks[2:])
    dropped = head + blocks[0] + b"".join(blocks[2:])
    appended = sealed + blocks[2]
    for bad in (swapped, dropped, appended):
        with pytest.raises(DamagedBackup):
            decrypt(bad)


def test_a_header_from_another_backup_is_refused() -> None:
    """The header is authenticated with every chunk: the right passphrase with another
    file's salt fails the key check."""
    one, two = encrypt(b"one" * 500), encrypt(b"two" * 500)
    with pytest.raises(WrongPassphrase):
        decrypt(two[:37] + one[37:])


def test_not_a_backup() -> None:
    with pytest.raises(BackupFormatError, match="not a Glucohub backup"):
        decrypt(b"SQLite format 3\0" + bytes(100))
    with pytest.raises(BackupFormatError, match="not a Glucohub backup"):
        decrypt(b"hello world")


def test_a_header_asking_for_a_huge_scrypt_is_refused() -> None:
    sealed = bytearray(encrypt(b"x"))
    sealed[10] = 40  # log2 N = 40: a terabyte of scrypt memory
    with pytest.raises(BackupFormatError, match="impossible"):
        decrypt(bytes(sealed))


def test_empty_passphrase_is_refused() -> None:
    with pytest.raises(BackupFormatError, match="empty"):
        Encryptor("", header())
