"""The shared scan/pair functions (device_adapters/ble/pairing.py) through the CLI front end
with a passkey, and the plain words each Bluetooth failure becomes on the setup page."""

from __future__ import annotations

import asyncio
import json

import pytest

from device_adapters.ble import cli
from device_adapters.ble.errors import (
    AuthenticationRequired,
    BleError,
    BluetoothUnavailable,
    GattError,
    NotConnected,
)
from device_adapters.ble.pairing import FirstDownloadFailed, NoHealthService, advice
from gateway.model import Device, DeviceKind
from tests.device_adapters.ble import test_bleak_bluez
from tests.device_adapters.ble.test_bleak_bluez import (
    METER,
    BusFactory,
    meter,
    mock_of,
    one_adapter,
)

bluez = test_bleak_bluez.bluez  # the BlueZ mock fixture


async def test_ble_pair_asks_for_the_passkey_the_meter_shows(
    bluez: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = await asyncio.to_thread(mock_of, bluez, one_adapter(meter(passkey=7)))
    asked: list[str] = []
    registered: list[Device] = []

    async def ask(address: str) -> int | None:
        asked.append(address)
        return 7  # "000007" on the meter's screen

    assert await cli.pair(METER, "p1", "Contour", registered.append, ask) == 0
    assert asked == [METER]
    assert [(d.device_id, d.kind) for d in registered] == [("ble-f00000000001", DeviceKind.METER)]
    assert json.loads(capsys.readouterr().out)["device_id"] == "ble-f00000000001"
    seen = await mock.peripheral_state(METER)
    assert seen["bonded"] and seen["passkeys_entered"] == [7]


async def test_without_anyone_to_ask_a_passkey_meter_refuses_in_one_line(
    bluez: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    await asyncio.to_thread(mock_of, bluez, one_adapter(meter(passkey=7)))
    registered: list[Device] = []
    assert await cli.pair(METER, "p1", "Contour", registered.append) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "AuthenticationFailed" in err
    assert registered == []


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            BluetoothUnavailable("No Bluetooth adapters found."),
            "no Bluetooth adapter was found, or Bluetooth is switched off",
        ),
        (
            GattError(
                METER, "pair", "[org.bluez.Error.AuthenticationFailed] Authentication Failed"
            ),
            "If it showed a number (a passkey), check that it was typed exactly",
        ),
        (AuthenticationRequired(METER, "read", "Not paired"), "put the device in pairing mode"),
        (GattError(METER, "connect", "device not found while scanning"), "out of range"),
        (NotConnected(METER, "write", "not connected"), "out of range"),
        (
            FirstDownloadFailed("ble-x", "the link dropped", link_lost=True),
            "The connection to your device was lost before all its readings arrived",
        ),
        (NoHealthService(METER), "does not offer glucose or other health readings"),
    ],
)
def test_each_bluetooth_failure_reads_as_what_to_try(error: BleError, words: str) -> None:
    text = advice(error)
    assert words in text
    assert "org.bluez" not in text and METER not in text and "Traceback" not in text
