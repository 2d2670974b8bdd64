"""The pure MQTT 5 framing and PUBLISH decoding the hub uses instead of paho's for the
common case: packets written out byte by byte from the specification (MQTT 5 §2.1, §3.3,
§3.4), fed whole, one byte at a time and with trailing bytes; random bytes give a value or
None, never an exception."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_adapters.mqtt.frames import Frame, PlainPublish, next_frame, plain_publish, puback

# PUBLISH, QoS 1, DUP and RETAIN clear: first byte 0b0011_0010. Variable header: topic "a/b"
# (length 0x0003), packet identifier 0x1234, Property Length 0; then the payload "hi".
QOS1 = bytes([0x32, 10, 0x00, 0x03, *b"a/b", 0x12, 0x34, 0x00, *b"hi"])
# QoS 0 with DUP clear and RETAIN set (0b0011_0001): no packet identifier (§3.3.2.2).
QOS0_RETAINED = bytes([0x31, 7, 0x00, 0x01, *b"t", 0x00, *b"xyz"])


def test_a_whole_qos1_publish_is_framed_and_decoded() -> None:
    assert next_frame(QOS1, 0) == Frame(header=0x32, start=2, end=12)
    assert plain_publish(0x32, QOS1[2:]) == PlainPublish(
        topic="a/b", payload=b"hi", qos=1, mid=0x1234, dup=False, retain=False
    )


def test_qos0_has_no_packet_identifier_and_keeps_retain_and_dup() -> None:
    assert plain_publish(0x31, QOS0_RETAINED[2:]) == PlainPublish(
        topic="t", payload=b"xyz", qos=0, mid=0, dup=False, retain=True
    )
    redelivered = plain_publish(0x3A, QOS1[2:])  # 0x32 | DUP (0x08)
    assert redelivered is not None and redelivered.dup and redelivered.qos == 1


def test_an_empty_payload_is_a_publish_too() -> None:
    packet = bytes([0x32, 6, 0x00, 0x01, *b"t", 0x00, 0x07, 0x00])
    assert plain_publish(0x32, packet[2:]) == PlainPublish(
        topic="t", payload=b"", qos=1, mid=7, dup=False, retain=False
    )


def test_a_packet_is_framed_only_once_every_byte_is_there() -> None:
    for cut in range(len(QOS1)):
        assert next_frame(QOS1[:cut], 0) is None, cut
    assert next_frame(QOS1, 0) is not None


def test_trailing_bytes_belong_to_the_next_packet() -> None:
    stream = QOS1 + QOS0_RETAINED + b"\x40"  # and the first byte of a third
    first = next_frame(stream, 0)
    assert first == Frame(header=0x32, start=2, end=len(QOS1))
    second = next_frame(stream, first.end)
    assert second == Frame(header=0x31, start=len(QOS1) + 2, end=len(QOS1) + len(QOS0_RETAINED))
    assert next_frame(stream, second.end) is None


def test_a_multi_byte_remaining_length_is_read_as_the_specification_says() -> None:
    # §1.5.5: 321 = 0b1_0100_0001 -> 0xC1 (low 7 bits 0x41, continuation), 0x02.
    body = bytes([0x00, 0x01, *b"t", 0x00, 0x01, 0x00]) + b"p" * 315
    assert len(body) == 321
    packet = bytes([0x32, 0xC1, 0x02]) + body
    assert next_frame(packet, 0) == Frame(header=0x32, start=3, end=324)
    publish = plain_publish(0x32, body)
    assert publish is not None and publish.payload == b"p" * 315


def test_a_remaining_length_of_five_bytes_is_left_to_paho() -> None:
    assert next_frame(bytes([0x32, 0x80, 0x80, 0x80, 0x80, 0x01]) + b"\x00" * 64, 0) is None


@pytest.mark.parametrize(
    ("header", "body", "why"),
    [
        (0x34, bytes([0x00, 0x01, *b"t", 0x00, 0x01, 0x00]), "QoS 2"),
        (0x36, bytes([0x00, 0x01, *b"t", 0x00, 0x01, 0x00]), "QoS 3 (malformed)"),
        (0x40, bytes([0x00, 0x01]), "a PUBACK, not a PUBLISH"),
        # Property Length 2, a Message Expiry Interval would follow: paho reads properties.
        (0x32, bytes([0x00, 0x01, *b"t", 0x00, 0x01, 0x02, 0x01, 0x01]), "properties"),
        (0x30, bytes([0x00, 0x00, 0x00]), "an empty topic (a topic alias)"),
        (0x32, bytes([0x00, 0x01, *b"t", 0x00, 0x00, 0x00]), "packet identifier 0"),
        (0x32, bytes([0x00, 0x02, 0xFF, 0xFE, 0x00, 0x01, 0x00]), "a topic not UTF-8"),
        (0x32, bytes([0x00, 0x02, *b"t\x00", 0x00, 0x01, 0x00]), "U+0000 in the topic"),
        (0x32, bytes([0x00, 0x09, *b"t"]), "the topic runs past the packet"),
        (0x32, bytes([0x00, 0x01, *b"t", 0x00]), "the packet identifier is cut"),
        (0x32, bytes([0x00, 0x01, *b"t", 0x00, 0x01]), "no Property Length"),
        (0x30, bytes([0x00]), "one byte"),
    ],
)
def test_anything_but_the_plain_case_is_declined(header: int, body: bytes, why: str) -> None:
    assert plain_publish(header, body) is None, why


def test_puback_is_the_packet_identifier_alone() -> None:
    # §3.4.2.1: Reason Code 0x00 and no properties may be omitted: Remaining Length 2.
    assert puback(0x1234) == bytes([0x40, 0x02, 0x12, 0x34])
    assert puback(1) == b"\x40\x02\x00\x01"
    assert puback(65_535) == b"\x40\x02\xff\xff"
    for bad in (0, 65_536, -1):
        with pytest.raises(ValueError):
            puback(bad)


@given(st.binary(max_size=80), st.integers(min_value=0, max_value=80))
def test_random_bytes_frame_within_the_buffer_or_not_at_all(data: bytes, pos: int) -> None:
    frame = next_frame(data, pos)
    if frame is not None:
        assert pos < frame.start <= frame.end <= len(data)
        assert frame.header == data[pos]


@given(st.integers(min_value=0, max_value=255), st.binary(max_size=80))
def test_random_publish_bodies_decode_or_are_declined(header: int, body: bytes) -> None:
    publish = plain_publish(header, body)
    if publish is not None:
        assert publish.topic and publish.qos in (0, 1)
        assert body.endswith(publish.payload)


@given(
    topic=st.text(min_size=1, max_size=30).filter(lambda t: "\x00" not in t),
    payload=st.binary(max_size=300),
    mid=st.integers(min_value=1, max_value=65_535),
    qos=st.sampled_from([0, 1]),
    dup=st.booleans(),
    retain=st.booleans(),
)
def test_what_is_encoded_by_the_specification_decodes_to_itself(
    topic: str, payload: bytes, mid: int, qos: int, dup: bool, retain: bool
) -> None:
    name = topic.encode()
    body = len(name).to_bytes(2, "big") + name
    body += mid.to_bytes(2, "big") if qos else b""
    body += b"\x00" + payload
    header = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    length, remaining = b"", len(body)
    while True:  # §1.5.5, the encoding algorithm
        byte, remaining = remaining % 128, remaining // 128
        length += bytes([byte | (0x80 if remaining else 0)])
        if not remaining:
            break
    stream = bytes([header]) + length + body
    frame = next_frame(stream + b"\x30", 0)  # and the start of the next packet
    assert frame == Frame(header=header, start=1 + len(length), end=len(stream))
    assert plain_publish(header, stream[frame.start : frame.end]) == PlainPublish(
        topic=topic, payload=payload, qos=qos, mid=mid if qos else 0, dup=dup, retain=retain
    )
