"""Topic layout of the Glucohub MQTT interface, version 1 (pure).

Uploaders publish to ``glucohub/v1/<patient>/<device>/readings``; the hub forwards to the
clinic on ``glucohub/v1/hubs/<hub>/batches`` and ``glucohub/v1/hubs/<hub>/checkpoints``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from device_adapters.mqtt.errors import PayloadRejected
from gateway.protocols import RejectReason

PREFIX = "glucohub/v1"
READINGS_SUBSCRIPTION = f"{PREFIX}/+/+/readings"


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


def readings_topic(patient_id: str, device_id: str) -> str:
    for name, part in (("patient_id", patient_id), ("device_id", device_id)):
        if not part or any(c in part for c in "/+#\x00"):
            raise ValueError(f"{name} {part!r} cannot be an MQTT topic level")
    return f"{PREFIX}/{patient_id}/{device_id}/readings"


def batches_topic(hub_id: str) -> str:
    return f"{PREFIX}/hubs/{_level(hub_id)}/batches"


def checkpoints_topic(hub_id: str) -> str:
    return f"{PREFIX}/hubs/{_level(hub_id)}/checkpoints"


def _level(hub_id: str) -> str:
    if not hub_id or any(c in hub_id for c in "/+#\x00"):
        raise ValueError(f"hub_id {hub_id!r} cannot be an MQTT topic level")
    return hub_id
