from hypothesis import given
from hypothesis import strategies as st

from device_adapters.ble.crc import crc16_mcrf4xx


def _bitwise_reference(data: bytes) -> int:
    """CRC-16/MCRF4XX the slow way: reflected poly 0x1021 = 0x8408, init 0xFFFF, no xorout."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def test_catalogue_check_value() -> None:
    # The CRC catalogue's check value for CRC-16/MCRF4XX over ASCII "123456789".
    assert crc16_mcrf4xx(b"123456789") == 0x6F91


def test_empty_input_is_the_initial_value() -> None:
    assert crc16_mcrf4xx(b"") == 0xFFFF


@given(st.binary(max_size=64))
def test_table_matches_bitwise_reference(data: bytes) -> None:
    assert crc16_mcrf4xx(data) == _bitwise_reference(data)
