"""CGMS 1.0.1 §3.11 (E2E-CRC): CRC-16/MCRF4XX — poly 0x1021 reflected (0x8408), init 0xFFFF,
no final XOR, little-endian on the air. Check value: b"123456789" -> 0x6F91."""

from __future__ import annotations


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc16_mcrf4xx(data: bytes, initial: int = 0xFFFF) -> int:
    crc = initial
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc
