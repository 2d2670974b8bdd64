"""A BlueZ pairing agent (org.bluez.Agent1), the only module that speaks D-Bus itself.

bleak's `pair()` calls Device1.Pair and registers no agent; a meter that shows a passkey then
fails with AuthenticationFailed because bluetoothd has no one to ask for the number. While
`passkey_agent(ask)` is entered, this process is BlueZ's default agent and answers
RequestPasskey with what `ask(address)` returns (None, or no answer in time: cancelled).
Other requests (just-works confirmation, service authorisation) are accepted: the patient
started the pairing from the hub.
"""

# No `from __future__ import annotations`: dbus_fast reads the D-Bus signatures from the
# annotations, and would take a postponed "-> None" for a method returning the literal None.
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from dbus_fast import BusType, DBusError, Message, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.annotations import DBusObjectPath, DBusStr, DBusUInt16, DBusUInt32
from dbus_fast.service import ServiceInterface, dbus_method

from device_adapters.ble.errors import BluetoothUnavailable

AGENT_PATH = "/org/glucohub/pairing_agent"
CAPABILITY = "KeyboardDisplay"
PASSKEY_TIMEOUT_S = 120.0
MAX_PASSKEY = 999_999  # Core 5.3 Vol 3 Part H §2.3.5.3: six decimal digits

PasskeyPrompt = Callable[[str], Awaitable[int | None]]
"""Asked with the device's address; the passkey the patient typed, or None to cancel
(the same shape as `device_adapters.ble.pairing.PasskeyPrompt`)."""


def address_of(device_path: str) -> str:
    """BlueZ's object path /org/bluez/hci0/dev_F0_00_00_00_00_01 → F0:00:00:00:00:01."""
    return device_path.rsplit("/", 1)[-1].removeprefix("dev_").replace("_", ":")


class _Agent(ServiceInterface):
    def __init__(self, ask: PasskeyPrompt) -> None:
        super().__init__("org.bluez.Agent1")
        self._ask = ask

    async def _passkey(self, device: str) -> int:
        try:
            passkey = await asyncio.wait_for(self._ask(address_of(device)), PASSKEY_TIMEOUT_S)
        except TimeoutError:
            passkey = None
        if passkey is None or not 0 <= passkey <= MAX_PASSKEY:
            raise DBusError("org.bluez.Error.Canceled", "no passkey was entered")
        return passkey

    @dbus_method()
    async def RequestPasskey(self, device: DBusObjectPath) -> DBusUInt32:
        return await self._passkey(device)

    @dbus_method()
    async def RequestPinCode(self, device: DBusObjectPath) -> DBusStr:
        return str(await self._passkey(device))

    @dbus_method()
    def DisplayPasskey(
        self, device: DBusObjectPath, passkey: DBusUInt32, entered: DBusUInt16
    ) -> None:
        pass

    @dbus_method()
    def DisplayPinCode(self, device: DBusObjectPath, pincode: DBusStr) -> None:
        pass

    @dbus_method()
    def RequestConfirmation(self, device: DBusObjectPath, passkey: DBusUInt32) -> None:
        pass

    @dbus_method()
    def RequestAuthorization(self, device: DBusObjectPath) -> None:
        pass

    @dbus_method()
    def AuthorizeService(self, device: DBusObjectPath, uuid: DBusStr) -> None:
        pass

    @dbus_method()
    def Cancel(self) -> None:
        pass

    @dbus_method()
    def Release(self) -> None:
        pass


async def _manager(bus: MessageBus, member: str, signature: str, body: list[Any]) -> None:
    reply = await bus.call(
        Message(
            destination="org.bluez",
            path="/org/bluez",
            interface="org.bluez.AgentManager1",
            member=member,
            signature=signature,
            body=body,
        )
    )
    if reply is None or reply.message_type is MessageType.ERROR:
        detail = "" if reply is None else f"{reply.error_name}: {reply.body}"
        raise BluetoothUnavailable(f"BlueZ refused the pairing agent ({member}: {detail})")


@contextlib.asynccontextmanager
async def passkey_agent(ask: PasskeyPrompt) -> AsyncIterator[None]:
    """Be BlueZ's default pairing agent for the duration of the block."""
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, DBusError) as exc:
        raise BluetoothUnavailable(f"no D-Bus system bus for a pairing agent ({exc})") from exc
    try:
        bus.export(AGENT_PATH, _Agent(ask))
        await _manager(bus, "RegisterAgent", "os", [AGENT_PATH, CAPABILITY])
        try:
            await _manager(bus, "RequestDefaultAgent", "o", [AGENT_PATH])
            yield
        finally:
            with contextlib.suppress(BluetoothUnavailable, DBusError, OSError):
                await _manager(bus, "UnregisterAgent", "o", [AGENT_PATH])
    finally:
        bus.disconnect()
