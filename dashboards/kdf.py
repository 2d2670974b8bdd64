"""scrypt alone, importable by a process that loads nothing else: the hub computes password
hashes in such a process so that scrypt's 32 MiB (128·N·r bytes) is never the hub's own."""

from __future__ import annotations

import hashlib


def scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # maxmem must exceed 128·N·r bytes (RFC 7914 §2) or OpenSSL refuses.
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 1024 * 1024, dklen=dklen
    )
