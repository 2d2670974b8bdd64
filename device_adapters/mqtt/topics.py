"""Parsing the readings topics that arrive (pure); `gateway.topics` spells the layout."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from device_adapters.mqtt.errors import PayloadRejected
from gateway.protocols import RejectReason
from gateway.topics import PREFIX


@dataclass(frozen=True, slots=True, kw_only=True)
class ReadingsTopic:
    patient_id: str
    device_id: str


@functools.lru_cache(maxsize=4096)  # a hub sees the same few topics over and over
def parse_readings_topic(topic: str) -> ReadingsTopic:
    """Split a readings topic into its patient and device; raise `PayloadRejected(SCHEMA)`."""
    parts = topic.split("/")
    if (
        len(parts) != 5
        or f"{parts[0]}/{parts[1]}" != PREFIX
        or parts[4] != "readings"
        or not parts[2]
        or not parts[3]
    ):
        raise PayloadRejected(
            RejectReason.SCHEMA,
            f"topic {topic!r} is not {PREFIX}/<patient>/<device>/readings",
            topic=topic,
        )
    return ReadingsTopic(patient_id=parts[2], device_id=parts[3])
