"""The encrypted backup format: a passphrase-keyed, chunked AEAD stream. Sans-I/O.

    header (37 bytes) | key check (16 bytes) | chunk 0 | chunk 1 | ... | last chunk

The header holds the magic, the format version, the AEAD, the scrypt cost (log2 N, r, p),
the chunk size, a random 16-byte salt and a random 7-byte nonce prefix. The key is scrypt
(RFC 7914) of the passphrase and salt; the AEAD is AES-256-GCM. Each chunk is CHUNK_SIZE
bytes of plaintext (the last one 0 to CHUNK_SIZE) sealed with the nonce

    prefix (7) | chunk counter (4, big-endian) | last-chunk flag (1)

and the whole header as associated data: the STREAM construction (Hoang, Reyhanitabar,
Rogaway and Vizár, "Online Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance",
CRYPTO 2015). So every chunk authenticates the header, its own position and whether it ends
the stream: an altered header or byte, reordered or dropped chunks, a file cut at any point
(a chunk boundary included: the chunk before the cut was not sealed as the last) or bytes
appended after the last chunk all fail. The key check is the tag of an empty message under a
nonce no chunk uses, so a wrong passphrase is told apart from a damaged file before any
plaintext is released. Memory stays at about one chunk whatever the size of the backup.

`Encryptor.feed`/`finish` return ciphertext to write; `Decryptor.feed` returns plaintext that
is authentic but may not be all (the caller keeps it provisional until `finish` succeeds).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from gateway.errors import InputError

MAGIC = b"GHBACKUP"
VERSION = 1
AEAD_AES_256_GCM = 1
TAG_BYTES = 16
SALT_BYTES = 16
PREFIX_BYTES = 7
_HEADER = struct.Struct(f">8sBBBBBB{SALT_BYTES}s{PREFIX_BYTES}s")
HEADER_BYTES = _HEADER.size  # 37
# scrypt N=2^16, r=8, p=1: 64 MiB and well under a second on a Raspberry Pi 4, once per run.
SCRYPT_LOG2_N = 16
SCRYPT_R = 8
SCRYPT_P = 1
CHUNK_LOG2 = 16  # 64 KiB of plaintext per chunk
_MAX_COUNTER = 2**32 - 1
_KEY_CHECK_COUNTER = _MAX_COUNTER  # never a chunk's: encryption stops one short of it


class BackupFormatError(InputError):
    """The backup cannot be opened: not a backup, a wrong passphrase, or damaged."""


class WrongPassphrase(BackupFormatError):
    pass


class DamagedBackup(BackupFormatError):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    log2_n: int
    r: int
    p: int
    chunk_log2: int
    salt: bytes
    prefix: bytes

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_log2

    def to_bytes(self) -> bytes:
        return _HEADER.pack(
            MAGIC,
            VERSION,
            AEAD_AES_256_GCM,
            self.log2_n,
            self.r,
            self.p,
            self.chunk_log2,
            self.salt,
            self.prefix,
        )

    @classmethod
    def parse(cls, data: bytes) -> Header:
        magic, version, aead, log2_n, r, p, chunk_log2, salt, prefix = _HEADER.unpack(data)
        if magic != MAGIC:
            raise BackupFormatError("not a Glucohub backup (no GHBACKUP header)")
        if version != VERSION or aead != AEAD_AES_256_GCM:
            raise BackupFormatError(
                f"backup format {version} (cipher {aead}) is not one this Glucohub reads"
            )
        # Bounds, so that a crafted header cannot make scrypt take gigabytes or hours.
        if not (10 <= log2_n <= 22 and 1 <= r <= 32 and 1 <= p <= 16 and 10 <= chunk_log2 <= 24):
            raise BackupFormatError("the backup header has impossible scrypt or chunk parameters")
        return cls(log2_n=log2_n, r=r, p=p, chunk_log2=chunk_log2, salt=salt, prefix=prefix)


def new_header() -> Header:
    return Header(
        log2_n=SCRYPT_LOG2_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        chunk_log2=CHUNK_LOG2,
        salt=os.urandom(SALT_BYTES),
        prefix=os.urandom(PREFIX_BYTES),
    )


def derive_key(passphrase: str, header: Header) -> bytes:
    kdf = Scrypt(salt=header.salt, length=32, n=1 << header.log2_n, r=header.r, p=header.p)
    return kdf.derive(passphrase.encode("utf-8"))


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + counter.to_bytes(4, "big") + (b"\x01" if last else b"\x00")


class Encryptor:
    """Plaintext in, ciphertext out; `finish` seals the last chunk (possibly empty)."""

    def __init__(self, passphrase: str, header: Header | None = None) -> None:
        if not passphrase:
            raise BackupFormatError("the passphrase is empty")
        self._header = header or new_header()
        self._aad = self._header.to_bytes()
        self._aead = AESGCM(derive_key(passphrase, self._header))
        self._prefix = self._header.prefix
        self._size = self._header.chunk_size
        self._buffer = bytearray()
        self._counter = 0
        self._started = False
        self._finished = False

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        check = self._aead.encrypt(_nonce(self._prefix, _KEY_CHECK_COUNTER, True), b"", self._aad)
        return self._aad + check

    def _seal(self, chunk: bytes, last: bool) -> bytes:
        if self._counter >= _KEY_CHECK_COUNTER:
            raise BackupFormatError("the backup is too large for one file")
        sealed = self._aead.encrypt(_nonce(self._prefix, self._counter, last), chunk, self._aad)
        self._counter += 1
        return sealed

    def feed(self, data: bytes) -> bytes:
        if self._finished:
            raise ValueError("feed after finish")
        out = [self._start()]
        self._buffer += data
        # Keep at least one byte back: only `finish` knows which chunk is the last.
        while len(self._buffer) > self._size:
            out.append(self._seal(bytes(self._buffer[: self._size]), last=False))
            del self._buffer[: self._size]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("finish twice")
        out = self._start() + self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._finished = True
        return out


class Decryptor:
    """Ciphertext in, authentic plaintext out; `finish` raises unless the stream ended with
    its last chunk. Raises WrongPassphrase or DamagedBackup (one line each)."""

    def __init__(self, passphrase: str) -> None:
        self._passphrase = passphrase
        self._buffer = bytearray()
        self._aead: AESGCM | None = None
        self._aad = b""
        self._prefix = b""
        self._block = 0
        self._counter = 0
        self._finished = False

    def _open_header(self) -> bool:
        if self._aead is not None:
            return True
        if len(self._buffer) < HEADER_BYTES + TAG_BYTES:
            return False
        header = Header.parse(bytes(self._buffer[:HEADER_BYTES]))
        aead = AESGCM(derive_key(self._passphrase, header))
        self._aad = bytes(self._buffer[:HEADER_BYTES])
        self._prefix = header.prefix
        check = bytes(self._buffer[HEADER_BYTES : HEADER_BYTES + TAG_BYTES])
        try:
            aead.decrypt(_nonce(self._prefix, _KEY_CHECK_COUNTER, True), check, self._aad)
        except InvalidTag:
            raise WrongPassphrase(
                "wrong passphrase (or the backup's header was altered); nothing was restored"
            ) from None
        self._aead = aead
        self._block = header.chunk_size + TAG_BYTES
        del self._buffer[: HEADER_BYTES + TAG_BYTES]
        return True

    def _open(self, sealed: bytes, last: bool) -> bytes:
        assert self._aead is not None
        try:
            plain = self._aead.decrypt(_nonce(self._prefix, self._counter, last), sealed, self._aad)
        except InvalidTag:
            raise DamagedBackup(
                f"the backup is damaged, cut short or altered (chunk {self._counter} does not "
                "authenticate); nothing was restored"
            ) from None
        self._counter += 1
        return plain

    def feed(self, data: bytes) -> bytes:
        if self._finished:
            raise ValueError("feed after finish")
        self._buffer += data
        if not self._open_header():
            return b""
        out: list[bytes] = []
        # A full block followed by more bytes cannot be the last chunk.
        while len(self._buffer) > self._block:
            out.append(self._open(bytes(self._buffer[: self._block]), last=False))
            del self._buffer[: self._block]
        return b"".join(out)

    def finish(self) -> bytes:
        if self._finished:
            raise ValueError("finish twice")
        self._finished = True
        if not self._open_header():
            if len(self._buffer) >= len(MAGIC) and not self._buffer.startswith(MAGIC):
                raise BackupFormatError("not a Glucohub backup (no GHBACKUP header)")
            raise DamagedBackup("the backup is cut short (no complete header); nothing restored")
        if len(self._buffer) < TAG_BYTES:
            raise DamagedBackup(
                f"the backup is cut short after chunk {self._counter}; nothing was restored"
            )
        plain = self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        return plain
