"""Finding, pairing and first reading of a health device: one implementation behind both front
ends, `glucohub ble scan/pair` (device_adapters.ble.cli) and the hub's first-run setup page.

Every function raises our `BleError` tree (never bleak's); `advice` turns one into the words a
patient reads, with what to try.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import tzinfo

from device_adapters.ble.adapter import BleAdapter, ResumeSource
from device_adapters.ble.errors import (
    AuthenticationRequired,
    BleError,
    BluetoothUnavailable,
    GattError,
    NotConnected,
)
from device_adapters.ble.uuids import Service
from gateway.clock import Clock
from gateway.model import Device, DeviceKind, Transport
from gateway.protocols import ReadingSink

PasskeyPrompt = Callable[[str], Awaitable[int | None]]
"""Asked with the device's address when it wants a passkey; the number, or None to cancel."""

_KIND_BY_SERVICE: tuple[tuple[str, DeviceKind], ...] = (
    (Service.CONTINUOUS_GLUCOSE_MONITORING, DeviceKind.CGM),
    (Service.GLUCOSE, DeviceKind.METER),
    (Service.HEART_RATE, DeviceKind.HEART_RATE),
    (Service.BLOOD_PRESSURE, DeviceKind.BLOOD_PRESSURE),
    (Service.WEIGHT_SCALE, DeviceKind.SCALE),
    (Service.HEALTH_THERMOMETER, DeviceKind.THERMOMETER),
)

KIND_WORDS: dict[DeviceKind, str] = {
    DeviceKind.CGM: "glucose sensor",
    DeviceKind.METER: "glucose meter",
    DeviceKind.HEART_RATE: "heart rate monitor",
    DeviceKind.BLOOD_PRESSURE: "blood pressure monitor",
    DeviceKind.SCALE: "scale",
    DeviceKind.THERMOMETER: "thermometer",
}


class NoHealthService(BleError):
    """The device connected but offers none of the health services the hub reads."""

    def __init__(self, address: str) -> None:
        super().__init__(f"{address} offers no supported health service")
        self.address = address


class FirstDownloadFailed(BleError):
    """Paired, but the stored records did not all arrive (the link dropped, or an error)."""

    def __init__(self, device_id: str, reason: str, *, link_lost: bool) -> None:
        super().__init__(f"{device_id}: first download failed: {reason}")
        self.device_id = device_id
        self.reason = reason
        self.link_lost = link_lost


@dataclass(frozen=True, slots=True, kw_only=True)
class Nearby:
    """A health device advertising nearby, as scanning saw it."""

    address: str
    name: str
    rssi: int
    service_uuids: tuple[str, ...]
    kind: DeviceKind

    @property
    def label(self) -> str:
        """ "Contour Next One glucose meter": the advertised name, then what the device is."""
        return friendly_name(self.name, self.kind)


def kind_from_services(services: frozenset[str] | tuple[str, ...]) -> DeviceKind | None:
    lowered = {s.lower() for s in services}
    for uuid, kind in _KIND_BY_SERVICE:
        if uuid in lowered:
            return kind
    return None


def friendly_name(name: str, kind: DeviceKind) -> str:
    words = KIND_WORDS.get(kind, "health device")
    name = " ".join(name.split())
    if not name:
        return words[0].upper() + words[1:]
    if words.lower() in name.lower():  # "Acme Glucose Meter" is not "… glucose meter" twice
        return name
    return f"{name} {words}"


def device_id_for(address: str) -> str:
    return "ble-" + address.lower().replace(":", "").replace("-", "")


async def scan_nearby(timeout_s: float) -> list[Nearby]:
    """Health devices advertising nearby, strongest signal first."""
    from device_adapters.ble import bleak_transport  # the bleak edge, loaded only when used

    found = await bleak_transport.scan(timeout_s)
    nearby = []
    for r in found:
        kind = kind_from_services(r.service_uuids)
        if kind is not None:
            nearby.append(
                Nearby(
                    address=r.address,
                    name=r.name,
                    rssi=r.rssi,
                    service_uuids=r.service_uuids,
                    kind=kind,
                )
            )
    return sorted(nearby, key=lambda n: -n.rssi)


async def pair_device(
    address: str,
    patient_id: str,
    name: str,
    *,
    adapter: str = "",
    ask_passkey: PasskeyPrompt | None = None,
) -> Device:
    """Connect, bond, find the health service; the `Device` to register for `patient_id`.
    With `ask_passkey`, a device that wants a passkey gets the one it returns (the hub is
    BlueZ's pairing agent meanwhile). The link is released again for the hub's own adapter."""
    from device_adapters.ble.bleak_transport import BleakTransport

    transport = BleakTransport(address, name=name, adapter=adapter or "default")
    async with contextlib.AsyncExitStack() as stack:
        if ask_passkey is not None:
            from device_adapters.ble.bluez_agent import passkey_agent  # D-Bus: Linux only

            await stack.enter_async_context(passkey_agent(ask_passkey))
        try:
            await transport.connect()
            await transport.pair()
            services = await transport.services()
        finally:
            if transport.is_connected:
                await transport.disconnect()
    kind = kind_from_services(services)
    if kind is None:
        raise NoHealthService(address)
    return Device(
        device_id=device_id_for(address),
        patient_id=patient_id,
        kind=kind,
        transport=Transport.BLE,
        name=name,
        address=address,
    )


async def first_download(
    device: Device,
    *,
    sink: ReadingSink,
    resume: ResumeSource,
    clock: Clock,
    tz: tzinfo,
    adapter: str = "",
) -> int:
    """Connect once and fetch every stored record into `sink`; the number of readings.
    Raises FirstDownloadFailed when the link drops or the transfer fails part way."""
    from device_adapters.ble.bleak_transport import BleakTransport

    transport = BleakTransport(device.address, name=device.name, adapter=adapter or "default")
    ble = BleAdapter(
        device=device, transport=transport, sink=sink, resume=resume, clock=clock, tz=tz
    )
    try:
        stats = await ble.run(until_synced=True, max_attempts=1)
    finally:
        # After a dropped link the client still holds its own D-Bus connection: close it
        # (the hub's adapter does so on its next connect; this transport has none).
        await transport.disconnect()
    if stats.link_drops or stats.errors or not ble.session.synced:
        reason = stats.errors[-1] if stats.errors else "the link dropped"
        raise FirstDownloadFailed(
            device.device_id, reason, link_lost=bool(stats.link_drops) and not stats.errors
        )
    return stats.readings


def advice(exc: BleError) -> str:
    """What a patient reads when Bluetooth goes wrong: what happened and what to try."""
    text = str(exc)
    if isinstance(exc, BluetoothUnavailable):
        return (
            "The hub cannot use Bluetooth: no Bluetooth adapter was found, or Bluetooth is "
            "switched off. Check that the hub's Bluetooth is on (plug a USB Bluetooth "
            "adapter in if it has none) and restart the hub."
        )
    if isinstance(exc, NoHealthService):
        return (
            "That device connected but does not offer glucose or other health readings the hub "
            "understands. Choose another device from the list."
        )
    if isinstance(exc, FirstDownloadFailed):
        if exc.link_lost or "disconnect" in exc.reason.lower() or "not connected" in exc.reason:
            return (
                "The connection to your device was lost before all its readings arrived. "
                "Keep the device close to the hub (within a few metres), make sure it stays "
                "switched on, and press Try again. Nothing already received is lost."
            )
        return (
            "Your device paired, but sending its readings did not finish. Switch the device "
            "off and on again, keep it close to the hub and press Try again."
        )
    if isinstance(exc, GattError) and (
        isinstance(exc, AuthenticationRequired)
        or "Authentication" in text
        or "AuthenticationFailed" in text
    ):
        return (
            "The device refused to pair. If it showed a number (a passkey), check that it was "
            "typed exactly. Otherwise put the device in pairing mode (see its manual: often a "
            "long press of its Bluetooth button) and press Try again. If it was paired with "
            "another phone or hub before, remove that pairing on the device first."
        )
    if isinstance(exc, NotConnected) or (isinstance(exc, GattError) and exc.operation == "connect"):
        return (
            "The hub could not reach the device. It may be out of range or asleep: bring it "
            "within a few metres of the hub, wake it up or put it in pairing mode, and press "
            "Try again."
        )
    return (
        "Talking to the device over Bluetooth failed. Bring it closer to the hub, switch it "
        "off and on again, and press Try again."
    )
