"""The whole BLE path through bleak and bleak-retry-connector, against BlueZ's D-Bus API.

No radio here: a private dbus-daemon carries a BlueZ mock (python-dbusmock's bluez5 template
with GATT objects, tests/support/bluez_template.py) whose peripherals are the project's
virtual meter and CGM. `glucohub ble scan`, `glucohub ble pair` and the hub's BLE adapter run
unchanged: bleak's BlueZ backend is the code under test, not something we stand in for.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.bleak_transport import BleakTransport
from device_adapters.ble.uuids import Service
from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.settings import load_settings
from gateway.store import DB_FILENAME, Store
from glucohub.cli import main
from glucohub.runtime import run_hub
from tests.device_adapters.ble.fakes import FakeSink
from tests.support.bluez import BluezMock, PrivateSystemBus, connections_of, release_bleak

METER = "F0:00:00:00:00:01"
CGM = "F0:00:00:00:00:02"
HEADPHONES = "F0:00:00:00:00:09"
STUBBORN = "F0:00:00:00:00:0A"
REPORT_STORED_RECORDS, ALL, GREATER_OR_EQUAL = 1, 1, 3

NOW = datetime.now(UTC).replace(second=0, microsecond=0)


def meter_records(n: int) -> list[list[Any]]:
    """[seq, UTC time, mg/dL]: one fingerstick an hour, whole mg/dL (exact in an SFLOAT)."""
    return [
        [seq, (NOW - timedelta(hours=n - seq + 1)).replace(tzinfo=None).isoformat(), 80 + 7 * seq]
        for seq in range(1, n + 1)
    ]


def cgm_readings(n: int) -> list[list[Any]]:
    """[UTC time, mg/dL] every 5 minutes up to now."""
    return [
        [(NOW - timedelta(minutes=5 * (n - i))).isoformat(), 100 + 3 * i] for i in range(1, n + 1)
    ]


BusFactory = Callable[[dict[str, Any] | None], BluezMock | PrivateSystemBus]


@pytest.fixture
def bluez(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[BusFactory]:
    """bluez(parameters): a private system bus with the BlueZ mock on it (None: a bus with no
    BlueZ at all), and DBUS_SYSTEM_BUS_ADDRESS pointing this process's bleak at it."""
    started: list[BluezMock | PrivateSystemBus] = []

    def start(parameters: dict[str, Any] | None) -> BluezMock | PrivateSystemBus:
        bus = PrivateSystemBus(tmp_path / "dbus")
        bus.start()
        started.append(bus)
        monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", bus.address)
        if parameters is None:
            return bus
        mock = BluezMock(bus, parameters)
        started.append(mock)
        mock.start()
        return mock

    try:
        yield start
    finally:
        release_bleak()
        for service in reversed(started):
            service.stop()


def mock_of(bluez: BusFactory, parameters: dict[str, Any]) -> BluezMock:
    mock = bluez(parameters)
    assert isinstance(mock, BluezMock)
    return mock


def one_adapter(*devices: dict[str, Any]) -> dict[str, Any]:
    return {"adapters": ["hci0"], "devices": list(devices)}


def meter(**extra: Any) -> dict[str, Any]:
    spec = {"kind": "meter", "address": METER, "name": "Contour", "records": meter_records(3)}
    return {**spec, **extra}


def cgm(**extra: Any) -> dict[str, Any]:
    spec = {
        "kind": "cgm",
        "address": CGM,
        "name": "Sensor",
        "session_start": (NOW - timedelta(hours=6)).isoformat(),
        "readings": cgm_readings(4),
    }
    return {**spec, **extra}


def headphones() -> dict[str, Any]:
    return {"kind": "other", "address": HEADPHONES, "name": "Headphones"}


def state(mock: BluezMock, address: str) -> dict[str, Any]:
    return asyncio.run(mock.peripheral_state(address))


def add_patient(data_dir: Path) -> None:
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.close()


def stored(data_dir: Path, device_id: str) -> list[tuple[int | None, float, int]]:
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT seq, value, time_ms FROM readings WHERE device_id = ? ORDER BY time_ms",
            (device_id,),
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()
    return [(seq, value, ms) for seq, value, ms in rows]


def epoch_ms(iso: str) -> int:
    t = datetime.fromisoformat(iso)
    return int((t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp() * 1000)


# -- glucohub ble scan / pair -------------------------------------------------------------


def test_ble_scan_lists_the_health_devices_advertising(
    bluez: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    mock_of(bluez, one_adapter(meter(), cgm(), headphones()))
    assert main(["ble", "scan", "--timeout", "1"]) == 0
    found = {
        line["address"]: line for line in map(json.loads, capsys.readouterr().out.splitlines())
    }
    assert set(found) == {METER, CGM}, "the headphones offer no health service"
    assert found[METER]["name"] == "Contour"
    assert found[METER]["services"] == [str(Service.GLUCOSE)]
    assert found[CGM]["services"] == [str(Service.CONTINUOUS_GLUCOSE_MONITORING)]


def test_ble_pair_bonds_and_registers_the_meter(
    bluez: BusFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = mock_of(bluez, one_adapter(meter()))
    data_dir = tmp_path / "hub"
    add_patient(data_dir)
    argv = ["ble", "pair", METER, "--patient", "p1", "--name", "Contour"]
    assert main([*argv, "--data-dir", str(data_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {"device_id": "ble-f00000000001", "kind": "meter", "address": METER}
    store = Store(data_dir)
    try:
        device = store.get_device("ble-f00000000001")
    finally:
        store.close()
    assert device is not None
    assert (device.patient_id, device.kind, device.transport) == ("p1", "meter", "ble")
    assert (device.address, device.name) == (METER, "Contour")
    seen = state(mock, METER)
    assert seen["bonded"] and seen["connects"] == 1
    assert not seen["connected"], "pair leaves the meter disconnected for the hub"


def test_a_device_that_refuses_pairing_is_one_line_and_not_registered(
    bluez: BusFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mock = mock_of(bluez, one_adapter(meter(refuse_pairing=True)))
    data_dir = tmp_path / "hub"
    add_patient(data_dir)
    assert main(["ble", "pair", METER, "--patient", "p1", "--data-dir", str(data_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"pairing {METER} failed" in err and "AuthenticationFailed" in err
    store = Store(data_dir)
    try:
        assert store.list_devices() == []
    finally:
        store.close()
    assert not state(mock, METER)["bonded"]


@pytest.mark.parametrize("command", ["scan", "pair"])
def test_no_bluetooth_adapter_is_one_line_exit_2(
    bluez: BusFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    mock_of(bluez, {"adapters": [], "devices": []})
    data_dir = tmp_path / "hub"
    add_patient(data_dir)
    argv = {
        "scan": ["ble", "scan", "--timeout", "1"],
        "pair": ["ble", "pair", METER, "--patient", "p1", "--data-dir", str(data_dir)],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "Bluetooth is not available" in err and "No Bluetooth adapters found" in err


def test_bluez_not_running_is_one_line_exit_2(
    bluez: BusFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    bluez(None)
    assert main(["ble", "scan", "--timeout", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "BlueZ is not running" in err


# -- the adapter through bleak --------------------------------------------------------------


async def test_meter_that_wants_bonding_gets_it_when_the_racp_write_is_refused(
    bluez: BusFactory,
) -> None:
    """BlueZ reports an ATT "insufficient authentication" as NotPermitted "Not paired": the
    adapter must recognise it, bond, and repeat the request."""
    mock = await asyncio.to_thread(mock_of, bluez, one_adapter(meter()))
    device = Device(
        device_id="ble-meter",
        patient_id="p1",
        kind=DeviceKind.METER,
        transport=Transport.BLE,
        address=METER,
    )
    sink = FakeSink()
    adapter = BleAdapter(
        device=device,
        transport=BleakTransport(METER, find_timeout_s=5),
        sink=sink,
        resume=sink,
        bond=False,
        reconnect_delays_s=(0.1,),
    )
    stats = await asyncio.wait_for(adapter.run(until_synced=True, max_attempts=2), 30)
    assert stats.errors == [] and stats.connects == 1
    assert [r.seq for r in sink.readings] == [1, 2, 3]
    seen = await mock.peripheral_state(METER)
    assert seen["bonded"]


async def _run_hub_until(data_dir: Path, wanted: dict[str, int], timeout_s: float = 40) -> None:
    """Run the hub (BLE on, the registered devices) until `wanted` readings are stored."""
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_BLE__ENABLED": "true",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    stop = asyncio.Event()
    hub = asyncio.create_task(run_hub(settings, stop=stop))
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not hub.done():
            counts = {d: len(stored(data_dir, d)) for d in wanted}
            if all(counts[d] >= n for d, n in wanted.items()):
                await asyncio.sleep(0.5)  # a repeat would show up now
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(hub, 30)


async def test_hub_resumes_a_transfer_cut_mid_racp_with_nothing_lost_or_doubled(
    bluez: BusFactory, tmp_path: Path
) -> None:
    """`ble pair` registers a meter and a CGM; under the running hub each sends its stored
    records through the RACP and drops the link after k of n. After reconnecting the hub asks
    for "records >= last stored + 1" and every record is stored exactly once."""
    records = meter_records(10)
    readings = cgm_readings(12)
    parameters = one_adapter(
        meter(records=records, drop_after_records=4), cgm(readings=readings, drop_after_records=5)
    )
    mock = await asyncio.to_thread(mock_of, bluez, parameters)
    data_dir = tmp_path / "hub"
    add_patient(data_dir)
    for address in (METER, CGM):
        argv = ["ble", "pair", address, "--patient", "p1", "--data-dir", str(data_dir)]
        assert await asyncio.to_thread(main, argv) == 0

    meter_id, cgm_id = "ble-f00000000001", "ble-f00000000002"
    await _run_hub_until(data_dir, {meter_id: 10, cgm_id: 12})

    assert stored(data_dir, meter_id) == [(seq, mg, epoch_ms(t)) for seq, t, mg in records]
    assert [(v, ms) for _, v, ms in stored(data_dir, cgm_id)] == [
        (mg, epoch_ms(t)) for t, mg in readings
    ]
    seen_meter = await mock.peripheral_state(METER)
    assert seen_meter["transfers"] == [
        [REPORT_STORED_RECORDS, ALL, None],
        [REPORT_STORED_RECORDS, GREATER_OR_EQUAL, 5],
    ]
    assert seen_meter["records_sent"] == 10, "no record was sent twice"
    assert seen_meter["connects"] == 3  # pair, the transfer cut after 4, the resumed one
    seen_cgm = await mock.peripheral_state(CGM)
    fifth = datetime.fromisoformat(readings[4][0])
    session_start = NOW - timedelta(hours=6)
    next_offset = int((fifth - session_start) / timedelta(minutes=1)) + 1
    assert seen_cgm["transfers"] == [
        [REPORT_STORED_RECORDS, ALL, None],
        [REPORT_STORED_RECORDS, GREATER_OR_EQUAL, next_offset],
    ]
    assert seen_cgm["records_sent"] == 12
    assert not seen_meter["connected"] and not seen_cgm["connected"], "released on stop"
    # Each connection had its own D-Bus connection; a dropped link's must be closed too, or a
    # hub that lives for years runs out of them. Left: bleak's one shared manager connection.
    assert await connections_of(mock.bus.address, os.getpid()) == 1
