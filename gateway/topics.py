"""Topic layout of the Glucohub MQTT interface, version 1: the one place that spells it.

Uploaders publish to ``glucohub/v1/<patient>/<device>/readings``; the hub forwards to the
clinic on ``glucohub/v1/hubs/<hub>/batches`` and ``glucohub/v1/hubs/<hub>/checkpoints``.
Pure; `device_adapters.mqtt.topics` parses what arrives.
"""

from __future__ import annotations

PREFIX = "glucohub/v1"
READINGS_SUBSCRIPTION = f"{PREFIX}/+/+/readings"


def readings_topic(patient_id: str, device_id: str) -> str:
    return f"{PREFIX}/{_level('patient_id', patient_id)}/{_level('device_id', device_id)}/readings"


def hub_topic_prefix(hub_id: str) -> str:
    """Where a hub's upstream items go (what enrolment tells a hub)."""
    return f"{PREFIX}/hubs/{_level('hub_id', hub_id)}"


def batches_topic(hub_id: str) -> str:
    return f"{hub_topic_prefix(hub_id)}/batches"


def checkpoints_topic(hub_id: str) -> str:
    return f"{hub_topic_prefix(hub_id)}/checkpoints"


def _level(name: str, value: str) -> str:
    if not value or any(c in value for c in "/+#\x00"):
        raise ValueError(f"{name} {value!r} cannot be an MQTT topic level")
    return value


HUB_ITEM_KINDS = ("batches", "checkpoints")


def shared_hub_subscriptions(group: str) -> tuple[str, str]:
    """MQTT 5 shared subscriptions (§4.8.2) that split every hub's items among a group."""
    group = _level("group", group)
    return tuple(f"$share/{group}/{PREFIX}/hubs/+/{kind}" for kind in HUB_ITEM_KINDS)  # type: ignore[return-value]


def parse_hub_topic(topic: str) -> tuple[str, str] | None:
    """(hub_id, "batches" | "checkpoints") of a hub's upstream topic, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != f"{PREFIX}/hubs" or not parts[3]:
        return None
    if parts[4] not in HUB_ITEM_KINDS:
        return None
    return parts[3], parts[4]
