"""The bleak edge: the only module that imports bleak and bleak-retry-connector.

Foreign exceptions are translated here (to BluetoothUnavailable, AuthenticationRequired,
NotConnected, GattError). Connections go through bleak-retry-connector's
`establish_connection` (a fresh client per attempt, its own backoff by error type: out of
connection slots, D-Bus errors, device not found), and only one connection attempt runs at a
time per Bluetooth adapter (BlueZ handles concurrent connects badly).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass

from bleak import BleakClient, BleakScanner
from bleak.exc import (
    BleakBluetoothNotAvailableError,
    BleakDBusError,
    BleakError,
    BleakGATTProtocolError,
    BleakGATTProtocolErrorCode,
)
from bleak_retry_connector import BleakClientWithServiceCache, establish_connection

from device_adapters.ble.errors import (
    AuthenticationRequired,
    BleError,
    BluetoothUnavailable,
    GattError,
    NotConnected,
)
from device_adapters.ble.transport import DisconnectCallback, NotifyCallback
from device_adapters.ble.uuids import Service

HEALTH_SERVICES: tuple[str, ...] = tuple(str(s) for s in Service)

_ADAPTER_LOCKS: dict[str, asyncio.Lock] = {}

_AUTH_CODES = {
    BleakGATTProtocolErrorCode.INSUFFICIENT_AUTHENTICATION,
    BleakGATTProtocolErrorCode.INSUFFICIENT_ENCRYPTION,
}


def _adapter_lock(adapter: str) -> asyncio.Lock:
    lock = _ADAPTER_LOCKS.get(adapter)
    if lock is None:
        lock = _ADAPTER_LOCKS[adapter] = asyncio.Lock()
    return lock


def _bluez_not_paired(exc: BleakDBusError) -> bool:
    """BlueZ reports ATT "insufficient authentication/encryption" as NotPermitted "Not paired"
    (src/gatt-client.c), which bleak passes on as a plain D-Bus error."""
    return exc.dbus_error == "org.bluez.Error.NotPermitted" and exc.dbus_error_details == (
        "Not paired"
    )


def translate(exc: BaseException, address: str, operation: str) -> BleError:
    """Map bleak/D-Bus/OS failures to our tree (the edge's one job besides I/O)."""
    text = str(exc) or type(exc).__name__
    if isinstance(
        exc, BleakBluetoothNotAvailableError | FileNotFoundError | ConnectionRefusedError
    ):
        return BluetoothUnavailable(f"no Bluetooth adapter or BlueZ/D-Bus on this machine ({text})")
    if isinstance(exc, BleakDBusError) and "ServiceUnknown" in exc.dbus_error:
        return BluetoothUnavailable(f"BlueZ is not running ({exc.dbus_error})")
    if isinstance(exc, BleakGATTProtocolError) and exc.code in _AUTH_CODES:
        return AuthenticationRequired(address, operation, text)
    if isinstance(exc, BleakDBusError) and _bluez_not_paired(exc):
        return AuthenticationRequired(address, operation, text)
    if isinstance(exc, BleakError) and "adapter" in text.lower() and "not" in text.lower():
        return BluetoothUnavailable(text)
    return GattError(address, operation, text)


@dataclass(frozen=True, slots=True, kw_only=True)
class ScanResult:
    address: str
    name: str
    rssi: int
    service_uuids: tuple[str, ...]


async def scan(
    timeout_s: float, service_uuids: Iterable[str] = HEALTH_SERVICES
) -> list[ScanResult]:
    """Peripherals advertising one of `service_uuids` (health services by default)."""
    try:
        found = await BleakScanner.discover(
            timeout=timeout_s, service_uuids=list(service_uuids), return_adv=True
        )
    except (BleakError, OSError) as exc:
        raise translate(exc, "-", "scan") from exc
    return [
        ScanResult(
            address=device.address,
            name=adv.local_name or device.name or "",
            rssi=adv.rssi,
            service_uuids=tuple(adv.service_uuids),
        )
        for device, adv in found.values()
    ]


class BleakTransport:
    """`GattTransport` over bleak. `adapter` names the local radio (e.g. "hci0")."""

    def __init__(
        self,
        address: str,
        *,
        name: str = "",
        adapter: str = "default",
        find_timeout_s: float = 10.0,
        max_attempts: int = 4,
    ) -> None:
        self._address = address
        self.name = name or address
        self.adapter = adapter
        self.find_timeout_s = find_timeout_s
        self.max_attempts = max_attempts
        self._client: BleakClient | None = None
        self._on_disconnect: DisconnectCallback | None = None
        self._closing = False

    @property
    def address(self) -> str:
        return self._address

    @property
    def is_connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    def set_disconnected_callback(self, callback: DisconnectCallback | None) -> None:
        self._on_disconnect = callback

    def _bleak_disconnected(self, _client: BleakClient) -> None:
        if not self._closing and self._on_disconnect is not None:
            self._on_disconnect()

    async def _release(self) -> None:
        """Close the previous client's own D-Bus connection. bleak closes it only in
        `disconnect()`, not when the link drops, so without this every link drop would leave
        one system-bus connection open (dbus-daemon allows a user 256)."""
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.disconnect()
            except (BleakError, OSError, TimeoutError) as exc:
                raise translate(exc, self._address, "disconnect") from exc

    async def connect(self) -> None:
        self._closing = False
        await self._release()
        async with _adapter_lock(self.adapter):  # one connection attempt at a time per radio
            try:
                device = await BleakScanner.find_device_by_address(
                    self._address, timeout=self.find_timeout_s
                )
                if device is None:
                    raise GattError(self._address, "connect", "device not found while scanning")
                self._client = await establish_connection(
                    BleakClientWithServiceCache,
                    device,
                    self.name,
                    disconnected_callback=self._bleak_disconnected,
                    max_attempts=self.max_attempts,
                )
            except BleError:
                raise
            except (BleakError, OSError, TimeoutError) as exc:
                raise translate(exc, self._address, "connect") from exc

    def _require(self, operation: str) -> BleakClient:
        if self._client is None or not self._client.is_connected:
            raise NotConnected(self._address, operation, "not connected")
        return self._client

    async def disconnect(self) -> None:
        self._closing = True
        if self._client is not None:
            try:
                await self._client.disconnect()
            except (BleakError, OSError) as exc:
                raise translate(exc, self._address, "disconnect") from exc
            finally:
                self._client = None

    async def pair(self) -> None:
        client = self._require("pair")
        try:
            await client.pair()
        except (BleakError, OSError) as exc:
            raise translate(exc, self._address, "pair") from exc

    async def services(self) -> frozenset[str]:
        client = self._require("services")
        return frozenset(str(s.uuid).lower() for s in client.services)

    async def read(self, uuid: str) -> bytes:
        client = self._require(f"read {uuid}")
        try:
            return bytes(await client.read_gatt_char(uuid))
        except (BleakError, OSError) as exc:
            raise translate(exc, self._address, f"read {uuid}") from exc

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None:
        client = self._require(f"write {uuid}")
        try:
            await client.write_gatt_char(uuid, data, response=response)
        except (BleakError, OSError) as exc:
            raise translate(exc, self._address, f"write {uuid}") from exc

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None:
        client = self._require(f"subscribe {uuid}")

        def forward(_char: object, data: bytearray) -> None:
            callback(uuid, bytes(data))

        try:
            await client.start_notify(uuid, forward)
        except (BleakError, OSError) as exc:
            raise translate(exc, self._address, f"subscribe {uuid}") from exc

    async def stop_notify(self, uuid: str) -> None:
        client = self._require(f"unsubscribe {uuid}")
        try:
            await client.stop_notify(uuid)
        except (BleakError, OSError) as exc:
            raise translate(exc, self._address, f"unsubscribe {uuid}") from exc
