"""The inbound MQTT 5 packets the hub reads most, framed and decoded without paho (pure).

paho decodes every PUBLISH into an `MQTTMessage` with a `Properties` object, matches its
topic against per-topic callbacks and logs it: several times the work of the hub's own
decoding of the payload. `client._BufferedClient` asks `next_frame` for whole packets in
the bytes it has read and `plain_publish` for the common PUBLISH; whatever these decline
goes to paho's own code, as before, so they only need to be right for what they accept.
`puback` is the one packet the hub sends per message.
"""

from __future__ import annotations

from typing import NamedTuple

PUBLISH = 0x30  # MQTT 5 §2.1.2: packet type 3 in the high nibble
PUBACK = 0x40  # packet type 4, no flags
_MAX_LENGTH_BYTES = 4  # MQTT 5 §1.5.5: a Variable Byte Integer has at most four bytes


# NamedTuples, not dataclasses: one of each is made per message, and a tuple is built
# several times faster than a frozen dataclass.
class Frame(NamedTuple):
    """One whole packet found in a buffer: its first byte, and where its body lies."""

    header: int  # packet type and flags (MQTT 5 §2.1.1)
    start: int  # the body (variable header and payload) is buffer[start:end]
    end: int


class PlainPublish(NamedTuple):
    """A PUBLISH at QoS 0 or 1 that carries no properties."""

    topic: str
    payload: bytes
    qos: int
    mid: int  # 0 at QoS 0 (MQTT 5 §2.2.1: no packet identifier)
    dup: bool
    retain: bool


def next_frame(buffer: bytes, pos: int) -> Frame | None:
    """The packet starting at `pos` if `buffer` holds all of it; None when it does not
    (more bytes are needed) or when its Remaining Length is malformed (MQTT 5 §1.5.5: more
    than four bytes), which paho's byte-by-byte reader then reports."""
    size = len(buffer)
    at = pos + 1
    length = 0
    shift = 0
    for _ in range(_MAX_LENGTH_BYTES):
        if at >= size:
            return None
        byte = buffer[at]
        at += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            end = at + length
            if end > size:
                return None
            return Frame(header=buffer[pos], start=at, end=end)
        shift += 7
    return None


def plain_publish(header: int, body: bytes) -> PlainPublish | None:
    """Decode a PUBLISH body (MQTT 5 §3.3) when it is the plain case: QoS 0 or 1, a
    non-empty UTF-8 topic without U+0000, a packet identifier above 0 at QoS 1, and a
    Property Length of 0. None for anything else (properties, QoS 2, a topic alias, a
    malformed packet): paho's decoder handles those."""
    if header & 0xF0 != PUBLISH:
        return None
    qos = (header >> 1) & 0x03
    if qos > 1:
        return None
    size = len(body)
    if size < 2:
        return None
    topic_end = 2 + ((body[0] << 8) | body[1])
    if topic_end == 2 or topic_end > size:
        return None
    at = topic_end
    mid = 0
    if qos:
        if at + 2 > size:
            return None
        mid = (body[at] << 8) | body[at + 1]
        if mid == 0:  # MQTT 5 §2.2.1: a packet identifier is non-zero
            return None
        at += 2
    if at >= size or body[at] != 0:  # Property Length (a one-byte 0 when there are none)
        return None
    try:
        topic = body[2:topic_end].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if "\x00" in topic:  # MQTT 5 §1.5.4: U+0000 is not allowed in a UTF-8 string
        return None
    return PlainPublish(
        topic=topic,
        payload=bytes(body[at + 1 :]),
        qos=qos,
        mid=mid,
        dup=bool(header & 0x08),
        retain=bool(header & 0x01),
    )


def puback(mid: int) -> bytes:
    """A PUBACK with reason Success and no properties: MQTT 5 §3.4.2.1 lets the Reason Code
    and Property Length be left out then, so the packet is the packet identifier alone."""
    if not 0 < mid <= 0xFFFF:
        raise ValueError(f"packet identifier {mid} is not 1..65535")
    return bytes((PUBACK, 2, mid >> 8, mid & 0xFF))
