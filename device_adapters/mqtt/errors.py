"""The MQTT adapter's exception tree, saying whose fault each failure is.

`PayloadRejected` is the sender's fault (bad bytes or topic) and carries the `RejectReason`
that becomes a dead letter; `MqttConnectionError` and friends are the network's or the
broker's, raised by `client.py` in place of paho-mqtt's return codes and exceptions.
"""

from __future__ import annotations

from gateway.errors import GlucohubError, InputError
from gateway.protocols import RejectReason


class MqttAdapterError(GlucohubError):
    """Base of every error this package raises on purpose."""


class PayloadRejected(MqttAdapterError, InputError):
    """An uploader's message cannot become readings; `reason` names the dead-letter reason.

    `index` is the position of the offending reading when the payload is an array.
    """

    def __init__(
        self, reason: RejectReason, detail: str, *, topic: str = "", index: int | None = None
    ) -> None:
        where = f" (reading {index})" if index is not None else ""
        super().__init__(f"{reason}: {detail}{where}")
        self.reason = reason
        self.detail = detail
        self.topic = topic
        self.index = index


class MqttConnectionError(MqttAdapterError):
    """The broker could not be reached or the connection dropped; `broker` is host:port."""

    def __init__(self, broker: str, reason: str) -> None:
        super().__init__(f"MQTT broker {broker}: {reason}")
        self.broker = broker
        self.reason = reason


class ConnectRefused(MqttConnectionError):
    """The broker answered CONNECT with a failure reason code (MQTT 5 §3.2.2.2)."""

    def __init__(self, broker: str, reason_code: int, reason_name: str) -> None:
        super().__init__(broker, f"CONNACK refused: {reason_name} (0x{reason_code:02x})")
        self.reason_code = reason_code


class NotConnected(MqttConnectionError):
    """An operation needed a live connection and there was none (or it dropped meanwhile)."""


class MqttOperationRefused(MqttAdapterError):
    """The broker refused a SUBSCRIBE or PUBLISH with a reason code >= 0x80 (MQTT 5 §2.4)."""

    def __init__(self, operation: str, target: str, reason_code: int, reason_name: str) -> None:
        super().__init__(f"{operation} {target!r} refused: {reason_name} (0x{reason_code:02x})")
        self.operation = operation
        self.target = target
        self.reason_code = reason_code
