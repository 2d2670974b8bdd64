"""CLI verbs for BLE (the lead wires them into argparse): scan, pair, gatt decode.

Each returns an exit code: 0 ok, 1 device/operation failure, 2 bad input or no Bluetooth.
Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable

from device_adapters.ble.errors import (
    BleError,
    BluetoothUnavailable,
    MalformedPayload,
    UnknownCharacteristic,
)
from device_adapters.ble.registry import decode
from device_adapters.ble.uuids import Service
from gateway.model import Device, DeviceKind, Transport

_KIND_BY_SERVICE: tuple[tuple[str, DeviceKind], ...] = (
    (Service.CONTINUOUS_GLUCOSE_MONITORING, DeviceKind.CGM),
    (Service.GLUCOSE, DeviceKind.METER),
    (Service.HEART_RATE, DeviceKind.HEART_RATE),
    (Service.BLOOD_PRESSURE, DeviceKind.BLOOD_PRESSURE),
    (Service.WEIGHT_SCALE, DeviceKind.SCALE),
    (Service.HEALTH_THERMOMETER, DeviceKind.THERMOMETER),
)


def _err(message: str) -> None:
    print(f"glucohub: {message}", file=sys.stderr)


def kind_from_services(services: frozenset[str]) -> DeviceKind | None:
    for uuid, kind in _KIND_BY_SERVICE:
        if uuid in services:
            return kind
    return None


def device_id_for(address: str) -> str:
    return "ble-" + address.lower().replace(":", "").replace("-", "")


async def scan(timeout_s: float) -> int:
    """Print one JSON line per health-profile peripheral advertising nearby."""
    from device_adapters.ble import bleak_transport  # the bleak edge, loaded only when used

    try:
        found = await bleak_transport.scan(timeout_s)
    except BluetoothUnavailable as exc:
        _err(f"Bluetooth is not available: {exc}")
        return 2
    except BleError as exc:
        _err(f"scan failed: {exc}")
        return 1
    for r in found:
        print(
            json.dumps(
                {"address": r.address, "name": r.name, "rssi": r.rssi, "services": r.service_uuids}
            )
        )
    return 0


async def pair(address: str, patient_id: str, name: str, register: Callable[[Device], None]) -> int:
    """Connect, bond, find the health service, and register the device for `patient_id`."""
    from device_adapters.ble.bleak_transport import BleakTransport

    transport = BleakTransport(address, name=name)
    try:
        await transport.connect()
        await transport.pair()
        services = await transport.services()
    except BluetoothUnavailable as exc:
        _err(f"Bluetooth is not available: {exc}")
        return 2
    except BleError as exc:
        _err(f"pairing {address} failed: {exc}")
        return 1
    finally:
        if transport.is_connected:
            try:
                await transport.disconnect()
            except BleError as exc:
                _err(f"disconnect after pairing failed: {exc}")
    kind = kind_from_services(services)
    if kind is None:
        _err(f"{address} offers no supported health service")
        return 1
    device = Device(
        device_id=device_id_for(address),
        patient_id=patient_id,
        kind=kind,
        transport=Transport.BLE,
        name=name,
        address=address,
    )
    register(device)
    print(json.dumps({"device_id": device.device_id, "kind": device.kind, "address": address}))
    return 0


def gatt_decode(uuid: str, hex_text: str) -> int:
    """`glucohub gatt decode UUID HEX`: print the characteristic value as JSON."""
    cleaned = "".join(hex_text.split()).replace(":", "").replace("-", "")
    if cleaned.lower().startswith("0x"):
        cleaned = cleaned[2:]
    try:
        data = bytes.fromhex(cleaned)
    except ValueError:
        _err(f"not hexadecimal bytes: {hex_text!r}")
        return 2
    try:
        result = decode(uuid, data)
    except (MalformedPayload, UnknownCharacteristic) as exc:
        _err(str(exc))
        return 2
    print(json.dumps(result, sort_keys=True))
    return 0
