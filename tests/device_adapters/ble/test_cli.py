import json
import os

import pytest

from device_adapters.ble import bleak_transport, cli
from device_adapters.ble.errors import BluetoothUnavailable
from gateway.model import Device


@pytest.fixture
def no_system_bus(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> None:
    """A machine without BlueZ: point D-Bus at a socket that does not exist."""
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-such-bus")


def test_gatt_decode_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    # 72 bpm with RR 820/1024 s and 1024/1024 s (see gatt_vectors.json)
    assert cli.gatt_decode("2A37", "16 48 34 03 00 04") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["heart_rate_bpm"] == 72
    assert out["rr_intervals_s"] == [0.80078125, 1.0]
    assert out["characteristic"] == "heart_rate_measurement"


@pytest.mark.parametrize(
    ("uuid", "hex_text", "says"),
    [
        ("2A18", "0B0201", "truncated"),
        ("2A18", "zz", "not hexadecimal"),
        ("2BFF", "00", "no decoder"),
    ],
)
def test_gatt_decode_malformed_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], uuid: str, hex_text: str, says: str
) -> None:
    assert cli.gatt_decode(uuid, hex_text) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


@pytest.mark.usefixtures("no_system_bus")
async def test_scan_without_bluetooth_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert await cli.scan(0.5) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Bluetooth is not available" in err


@pytest.mark.usefixtures("no_system_bus")
async def test_pair_without_bluetooth_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    registered: list[Device] = []
    code = await cli.pair("AA:BB:CC:DD:EE:FF", "p1", "meter", registered.append)
    assert code == 2 and registered == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Bluetooth is not available" in err


async def test_scan_unavailable_anywhere(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def unavailable(timeout_s: float) -> list[bleak_transport.ScanResult]:
        raise BluetoothUnavailable("no adapter")

    monkeypatch.setattr(bleak_transport, "scan", unavailable)
    assert await cli.scan(1.0) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_translate_maps_missing_dbus_socket_to_unavailable() -> None:
    exc = bleak_transport.translate(FileNotFoundError(2, "No such file"), "-", "scan")
    assert isinstance(exc, BluetoothUnavailable)


def test_device_kind_from_services() -> None:
    from device_adapters.ble import pairing
    from device_adapters.ble.uuids import Service
    from gateway.model import DeviceKind

    assert pairing.kind_from_services(frozenset({str(Service.GLUCOSE)})) is DeviceKind.METER
    assert pairing.kind_from_services(frozenset()) is None
    assert pairing.device_id_for("AA:BB:CC:DD:EE:FF") == "ble-aabbccddeeff"


def test_friendly_names_say_what_the_device_is() -> None:
    from device_adapters.ble.pairing import friendly_name
    from gateway.model import DeviceKind

    assert friendly_name("Contour Next One", DeviceKind.METER) == "Contour Next One glucose meter"
    assert friendly_name("", DeviceKind.CGM) == "Glucose sensor"
    assert friendly_name("Acme Glucose Meter", DeviceKind.METER) == "Acme Glucose Meter"
