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
from device_adapters.ble.pairing import NoHealthService, PasskeyPrompt, pair_device, scan_nearby
from device_adapters.ble.registry import decode
from gateway.model import Device


def _err(message: str) -> None:
    print(f"glucohub: {message}", file=sys.stderr)


async def scan(timeout_s: float) -> int:
    """Print one JSON line per health-profile peripheral advertising nearby."""
    try:
        found = await scan_nearby(timeout_s)
    except BluetoothUnavailable as exc:
        _err(f"Bluetooth is not available: {exc}")
        return 2
    except BleError as exc:
        _err(f"scan failed: {exc}")
        return 1
    for r in found:
        print(
            json.dumps(
                {
                    "address": r.address,
                    "name": r.name,
                    "rssi": r.rssi,
                    "services": list(r.service_uuids),
                    "label": r.label,
                }
            )
        )
    return 0


async def pair(
    address: str,
    patient_id: str,
    name: str,
    register: Callable[[Device], None],
    ask_passkey: PasskeyPrompt | None = None,
) -> int:
    """Connect, bond (asking `ask_passkey` for the number a device shows, when given), find
    the health service, and register the device for `patient_id`."""
    try:
        device = await pair_device(address, patient_id, name, ask_passkey=ask_passkey)
    except BluetoothUnavailable as exc:
        _err(f"Bluetooth is not available: {exc}")
        return 2
    except NoHealthService as exc:
        _err(str(exc))
        return 1
    except BleError as exc:
        _err(f"pairing {address} failed: {exc}")
        return 1
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
