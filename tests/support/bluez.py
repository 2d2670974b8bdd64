"""A BlueZ mock on a private system bus, for driving bleak without a Bluetooth adapter.

`PrivateSystemBus` runs its own `dbus-daemon` (system-bus configuration, socket in a temporary
directory); point bleak at it with DBUS_SYSTEM_BUS_ADDRESS. `BluezMock` runs python-dbusmock
with `bluez_template.py` (dbusmock's bluez5 template plus GATT objects whose behaviour is the
project's virtual peripherals) on that bus. The mock runs under the system Python with Debian's
python3-dbusmock (dbus-python and PyGObject come from Debian, not from a compiler); the test
process only speaks D-Bus to it, through bleak and dbus-fast.

If dbus-daemon or python3-dbusmock is missing this FAILS with the install command — Bluetooth
tests must not quietly skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from dbus_fast import BusType, Message, MessageType
from dbus_fast.aio import MessageBus

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = Path(__file__).with_name("bluez_template.py")
DBUS_HINT = "install dbus: apt-get install dbus"
DBUSMOCK_HINT = "install python3-dbusmock: apt-get install python3-dbusmock"
SYSTEM_PYTHON = "/usr/bin/python3"

_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_type="method_return"/>
    <allow send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="signal"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow send_destination="*"/>
  </policy>
</busconfig>
"""


class ServiceMissing(RuntimeError):
    pass


def find_dbus_daemon() -> str:
    found = shutil.which("dbus-daemon")
    if found is None and os.access("/usr/bin/dbus-daemon", os.X_OK):
        found = "/usr/bin/dbus-daemon"
    if found is None:
        raise ServiceMissing(DBUS_HINT)
    return found


def find_dbusmock_python() -> str:
    probe = [SYSTEM_PYTHON, "-c", "import dbusmock, dbus, gi"]
    try:
        ok = subprocess.run(probe, capture_output=True, timeout=30).returncode == 0
    except OSError:
        ok = False
    if not ok:
        raise ServiceMissing(DBUSMOCK_HINT)
    return SYSTEM_PYTHON


def _end(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PrivateSystemBus:
    """A `dbus-daemon` with a system-bus configuration listening in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.binary = find_dbus_daemon()
        self.directory = directory
        self.socket = directory / "system_bus_socket"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"unix:path={self.socket}"

    def start(self, timeout_s: float = 10.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "system.conf"
        config.write_text(_CONFIG.format(socket=self.socket))
        self._process = subprocess.Popen(
            [self.binary, f"--config-file={config}", "--nofork", "--nopidfile"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while not self.socket.exists():
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                raise RuntimeError(f"dbus-daemon exited with {self._process.returncode}: {err}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dbus-daemon did not listen in {timeout_s}s")
            time.sleep(0.01)

    def stop(self) -> None:
        _end(self._process)
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def __enter__(self) -> PrivateSystemBus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class BluezMock:
    """bluetoothd's D-Bus API (org.bluez on `bus`) with the adapters and peripherals in
    `parameters` (see bluez_template.py)."""

    def __init__(self, bus: PrivateSystemBus, parameters: dict[str, Any]) -> None:
        self.python = find_dbusmock_python()
        self.bus = bus
        self.parameters = parameters
        self.log_path = bus.directory / "bluez-mock.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 20.0) -> None:
        env = {
            **os.environ,
            "DBUS_SYSTEM_BUS_ADDRESS": self.bus.address,
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    self.python,
                    "-m",
                    "dbusmock",
                    "--system",
                    "--template",
                    str(TEMPLATE),
                    "--parameters",
                    json.dumps(self.parameters),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while not _name_has_owner(self.bus.address, "org.bluez"):
            if self._process.poll() is not None:
                raise RuntimeError(f"the BlueZ mock exited: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the BlueZ mock did not start in {timeout_s}s: {self.log()}")
            time.sleep(0.05)
        # Its objects are added before its main loop runs: once it answers, it is ready.
        _call_sync(self.bus.address, "org.freedesktop.DBus.Peer", "Ping", "/", "", [])

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        _end(self._process)
        self._process = None

    async def peripheral_state(self, address: str) -> dict[str, Any]:
        """What the peripheral saw: connects, bonded, records_sent, transfers (RACP requests
        as [op code, operator, operand])."""
        body = await _call(
            self.bus.address, "org.bluez.Mock", "PeripheralState", "/", "s", [address]
        )
        state: dict[str, Any] = json.loads(body[0])
        return state

    def __enter__(self) -> BluezMock:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def connections_of(address: str, pid: int) -> int:
    """How many connections process `pid` holds on the bus (this query's own not counted)."""
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    try:

        async def ask(member: str, signature: str = "", body: list[Any] | None = None) -> Any:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member=member,
                    signature=signature,
                    body=body or [],
                )
            )
            assert reply is not None and reply.message_type is MessageType.METHOD_RETURN, reply
            return reply.body[0]

        count = 0
        for name in await ask("ListNames"):
            if name.startswith(":") and name != bus.unique_name:
                count += await ask("GetConnectionUnixProcessID", "s", [name]) == pid
        return count
    finally:
        bus.disconnect()


def release_bleak() -> None:
    """Close the D-Bus connections bleak keeps for the process's life.

    bleak holds one BlueZ manager, with its own connection, per event loop and frees those of
    closed loops only when another loop asks for one; each test ends its loops, so close them
    the way bleak does (its `get_global_bluez_manager`) instead of leaking the sockets."""
    from bleak.backends.bluezdbus import manager as bluez_manager

    instances = bluez_manager._global_instances
    for loop in list(instances):
        bus = instances.pop(loop)._bus
        if bus is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to wake
                bus._finalize(None)


async def _call(
    address: str, interface: str, member: str, path: str, signature: str, body: list[Any]
) -> list[Any]:
    bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    try:
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path=path,
                interface=interface,
                member=member,
                signature=signature,
                body=body,
            )
        )
    finally:
        bus.disconnect()
    assert reply is not None
    if reply.message_type is MessageType.ERROR:
        raise RuntimeError(f"{member}: {reply.error_name}: {reply.body}")
    return list(reply.body)


def _call_sync(
    address: str, interface: str, member: str, path: str, signature: str, body: list[Any]
) -> list[Any]:
    import asyncio

    return asyncio.run(_call(address, interface, member, path, signature, body))


def _name_has_owner(address: str, name: str) -> bool:
    import asyncio

    async def ask() -> bool:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
        try:
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="NameHasOwner",
                    signature="s",
                    body=[name],
                )
            )
        finally:
            bus.disconnect()
        return (
            reply is not None
            and reply.message_type is MessageType.METHOD_RETURN
            and bool(reply.body[0])
        )

    return asyncio.run(ask())
