"""The BLE adapters' exception tree; each class says whose fault it is and where."""

from __future__ import annotations

from gateway.errors import GlucohubError, InputError


class BleError(GlucohubError):
    """Base of every error raised on purpose by `device_adapters.ble`."""


class MalformedPayload(BleError, InputError):
    """The device's bytes do not follow the specification (the device's fault).

    `uuid` names the characteristic, `offset` the byte where decoding failed.
    """

    def __init__(self, uuid: str, offset: int, reason: str) -> None:
        super().__init__(f"{uuid} at byte {offset}: {reason}")
        self.uuid = uuid
        self.offset = offset
        self.reason = reason


class CrcMismatch(MalformedPayload):
    """The E2E-CRC of a record does not match its bytes (corrupted on the way)."""

    def __init__(self, uuid: str, offset: int, expected: int, actual: int) -> None:
        super().__init__(
            uuid, offset, f"E2E-CRC mismatch: computed 0x{expected:04X}, received 0x{actual:04X}"
        )
        self.expected = expected
        self.actual = actual


class TimeOutOfRange(MalformedPayload):
    """A date-time the device sent lies, once its time offset or time zone is applied,
    outside the years 1-9999 an instant can have here (a clock set near 9999, say)."""


class UnknownCharacteristic(BleError, InputError):
    """`decode` was asked about a characteristic it has no parser for (the user's input)."""

    def __init__(self, uuid: str) -> None:
        super().__init__(f"no decoder for characteristic {uuid!r}")
        self.uuid = uuid


class BluetoothUnavailable(BleError):
    """No Bluetooth adapter, no BlueZ/D-Bus, or Bluetooth switched off (the machine's state)."""


class GattError(BleError):
    """A GATT operation failed on the link (the radio's or the device's fault)."""

    def __init__(self, address: str, operation: str, reason: str) -> None:
        super().__init__(f"{address}: {operation} failed: {reason}")
        self.address = address
        self.operation = operation
        self.reason = reason


class NotConnected(GattError):
    """The operation needs a connection and the link is down."""


class AuthenticationRequired(GattError):
    """The device refuses until the link is bonded (ATT: insufficient authentication)."""


class ProcedureFailed(BleError):
    """A control point answered with a failure response code (the device refused)."""

    def __init__(self, device_id: str, request: str, response: str) -> None:
        super().__init__(f"{device_id}: {request} answered {response}")
        self.device_id = device_id
        self.request = request
        self.response = response
