"""python-dbusmock template: BlueZ 5 with GATT servers for the Glucose and CGM services.

Loaded by `python3 -m dbusmock --template THIS_FILE -p JSON` under the system Python (Debian's
python3-dbusmock), never imported by the test process: the tests talk to it only over D-Bus,
through bleak, as the hub talks to bluetoothd. It extends dbusmock's `bluez5` template (adapter,
devices, agent manager) with what bluetoothd shows a central once a link is up: GattService1,
GattCharacteristic1 (ReadValue, WriteValue, StartNotify, StopNotify; notifications and
indications as PropertiesChanged on Value) and GattDescriptor1 objects, ServicesResolved,
Connect/Disconnect/Pair, and RSSI updates while discovering (how bleak sees advertisements).

What a peripheral answers is not written here: each one is the project's own virtual
peripheral (`device_adapters.ble.virtual`: VirtualMeter, VirtualCgm), which encodes the real
GATT bytes with the project's encoders. This file only puts it on the bus. The virtual
peripherals are asyncio code; they run on a private event loop stepped from GLib's main loop.

Parameters (JSON): {"adapters": ["hci0"], "devices": [{"kind": "meter"|"cgm"|"other",
"adapter": "hci0", "address": "F0:...", "name": "...", ...}]}; see `_make_peripheral`.
Extra org.bluez.Mock methods: `PeripheralState(address) -> s` (JSON of what the peripheral
saw: connects, RACP requests, records sent, bonded) for the tests' assertions.
"""

import asyncio
import json
from datetime import datetime

import dbus
import dbus.exceptions
from dbusmock import OBJECT_MANAGER_IFACE, mockobject
from dbusmock.templates import bluez5
from gi.repository import GLib

from device_adapters.ble import errors as ble_errors
from device_adapters.ble.uuids import Char, Service, full_uuid
from device_adapters.ble.virtual.cgm import VirtualCgm
from device_adapters.ble.virtual.meter import VirtualMeter, meter_record

BUS_NAME = bluez5.BUS_NAME
MAIN_OBJ = bluez5.MAIN_OBJ
SYSTEM_BUS = True
IS_OBJECT_MANAGER = True

ADAPTER_IFACE = bluez5.ADAPTER_IFACE
DEVICE_IFACE = bluez5.DEVICE_IFACE
MOCK_IFACE = bluez5.BLUEZ_MOCK_IFACE
SERVICE_IFACE = "org.bluez.GattService1"
CHAR_IFACE = "org.bluez.GattCharacteristic1"
DESC_IFACE = "org.bluez.GattDescriptor1"
CCCD = full_uuid(0x2902)
ADVERTISE_EVERY_MS = 100
STEP_EVERY_MS = 2  # one step of the peripheral's coroutines: about a connection event

# (characteristic, BlueZ flags) per service, in handle order.
GATT_LAYOUT = {
    Service.GLUCOSE: (
        (Char.GLUCOSE_MEASUREMENT, ("notify",)),
        (Char.GLUCOSE_MEASUREMENT_CONTEXT, ("notify",)),
        (Char.GLUCOSE_FEATURE, ("read",)),
        (Char.RECORD_ACCESS_CONTROL_POINT, ("write", "indicate")),
    ),
    Service.CONTINUOUS_GLUCOSE_MONITORING: (
        (Char.CGM_MEASUREMENT, ("notify",)),
        (Char.CGM_FEATURE, ("read",)),
        (Char.CGM_STATUS, ("read",)),
        (Char.CGM_SESSION_START_TIME, ("read", "write")),
        (Char.CGM_SESSION_RUN_TIME, ("read",)),
        (Char.RECORD_ACCESS_CONTROL_POINT, ("write", "indicate")),
        (Char.CGM_SPECIFIC_OPS_CONTROL_POINT, ("write", "indicate")),
    ),
}

LOOP = asyncio.new_event_loop()
PERIPHERALS = {}  # device object path -> Peripheral


def _bytes(data):
    return dbus.Array([dbus.Byte(b) for b in data], signature="y", variant_level=1)


def _bluez_error(exc, operation):
    """The D-Bus error bluetoothd sends for an ATT failure (src/gatt-client.c)."""
    if isinstance(exc, ble_errors.AuthenticationRequired):
        return dbus.exceptions.DBusException("Not paired", name="org.bluez.Error.NotPermitted")
    if isinstance(exc, ble_errors.NotConnected):
        return dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
    if "CCCD" in str(exc):
        return dbus.exceptions.DBusException(
            "Operation failed with ATT error: 0xfd", name="org.bluez.Error.Failed"
        )
    text = "Read not permitted" if operation == "read" else "Write not permitted"
    return dbus.exceptions.DBusException(text, name="org.bluez.Error.NotPermitted")


class Peripheral:
    """One virtual peripheral behind one org.bluez.Device1 object."""

    def __init__(self, device, virtual, spec):
        self.device = device
        self.path = device.path
        self.virtual = virtual
        self.service = spec.get("service")
        self.refuse_pairing = bool(spec.get("refuse_pairing", False))
        self.passkey = spec.get("passkey")  # the number the device shows; asked of the agent
        self.passkeys_entered = []
        self.connects = 0
        self.chars_by_uuid = {}  # uuid -> characteristic object
        self._stepping = False
        self._gatt_added = False
        if virtual is not None:
            virtual.set_disconnected_callback(self.link_lost)

    # -- the virtual peripheral's coroutines, on our private loop --

    def run(self, coro):
        return LOOP.run_until_complete(coro)

    def kick(self):
        if not self._stepping:
            self._stepping = True
            GLib.timeout_add(STEP_EVERY_MS, self._step)

    def _step(self):
        LOOP.run_until_complete(asyncio.sleep(0))
        if self.virtual is not None and self.virtual._tasks:
            return True
        self._stepping = False
        return False

    # -- link --

    @property
    def connected(self):
        return bool(self.device.props[DEVICE_IFACE]["Connected"])

    def set_device(self, **values):
        changed = {}
        for name, value in values.items():
            self.device.props[DEVICE_IFACE][name] = value
            changed[name] = value
        self.device.EmitSignal(
            dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as", [DEVICE_IFACE, changed, []]
        )

    def connect(self):
        if self.connected:
            raise dbus.exceptions.DBusException(
                "Already Connected", name="org.bluez.Error.AlreadyConnected"
            )
        if self.virtual is None:
            raise dbus.exceptions.DBusException(
                "le-connection-abort-by-remote", name="org.bluez.Error.Failed"
            )
        self.run(self.virtual.connect())
        self.connects += 1
        self.set_device(Connected=dbus.Boolean(True, variant_level=1))
        if not self._gatt_added:
            self._add_gatt()
        self.set_device(ServicesResolved=dbus.Boolean(True, variant_level=1))

    def disconnect(self):
        if not self.connected:
            raise dbus.exceptions.DBusException(
                "Not Connected", name="org.bluez.Error.NotConnected"
            )
        self.run(self.virtual.disconnect())
        self._link_down()

    def link_lost(self):
        """The virtual peripheral dropped the radio link (e.g. mid-RACP-transfer)."""
        self._link_down()

    def _link_down(self):
        for char in self.chars_by_uuid.values():
            if char.props[CHAR_IFACE]["Notifying"]:
                self._set_char(char, Notifying=dbus.Boolean(False, variant_level=1))
        self.set_device(
            Connected=dbus.Boolean(False, variant_level=1),
            ServicesResolved=dbus.Boolean(False, variant_level=1),
        )

    def pair(self):
        if self.virtual is not None and self.virtual.bonded:
            raise dbus.exceptions.DBusException(
                "Already Exists", name="org.bluez.Error.AlreadyExists"
            )
        if not self.connected:
            self.connect()
        if self.refuse_pairing:
            raise dbus.exceptions.DBusException(
                "Authentication Failed", name="org.bluez.Error.AuthenticationFailed"
            )
        if self.passkey is not None:
            entered = _request_passkey(self.path)
            self.passkeys_entered.append(entered)
            if entered != int(self.passkey):
                raise dbus.exceptions.DBusException(
                    "Authentication Failed", name="org.bluez.Error.AuthenticationFailed"
                )
        self.run(self.virtual.pair())
        self.set_device(
            Paired=dbus.Boolean(True, variant_level=1),
            Bonded=dbus.Boolean(True, variant_level=1),
        )

    def advertise(self):
        if not self.connected:
            rssi = int(self.device.props[DEVICE_IFACE]["RSSI"])
            self.set_device(RSSI=dbus.Int16(-55 if rssi != -55 else -56, variant_level=1))

    # -- GATT database --

    def _add_gatt(self):
        """The service discovery result, as bluetoothd exports it (handles in the paths)."""
        handle = 0x000A
        service_path = f"{self.path}/service{handle:04x}"
        _add(
            service_path,
            SERVICE_IFACE,
            {
                "UUID": dbus.String(self.service, variant_level=1),
                "Device": dbus.ObjectPath(self.path, variant_level=1),
                "Primary": dbus.Boolean(True, variant_level=1),
                "Includes": dbus.Array([], signature="o", variant_level=1),
                "Handle": dbus.UInt16(handle, variant_level=1),
            },
        )
        handle += 1
        for char_uuid, flags in GATT_LAYOUT[self.service]:
            char_path = f"{service_path}/char{handle:04x}"
            char = _add(
                char_path,
                CHAR_IFACE,
                {
                    "UUID": dbus.String(char_uuid, variant_level=1),
                    "Service": dbus.ObjectPath(service_path, variant_level=1),
                    "Value": _bytes(b""),
                    "Notifying": dbus.Boolean(False, variant_level=1),
                    "Flags": dbus.Array(flags, signature="s", variant_level=1),
                    "MTU": dbus.UInt16(247, variant_level=1),
                    "Handle": dbus.UInt16(handle, variant_level=1),
                },
                [
                    ("ReadValue", "a{sv}", "ay", ReadValue),
                    ("WriteValue", "aya{sv}", "", WriteValue),
                    ("StartNotify", "", "", StartNotify),
                    ("StopNotify", "", "", StopNotify),
                ],
            )
            char.peripheral, char.uuid, char.flags = self, str(char_uuid), flags
            self.chars_by_uuid[str(char_uuid)] = char
            handle += 2  # declaration + value
            if "notify" in flags or "indicate" in flags:
                _add(
                    f"{char_path}/desc{handle:04x}",
                    DESC_IFACE,
                    {
                        "UUID": dbus.String(CCCD, variant_level=1),
                        "Characteristic": dbus.ObjectPath(char_path, variant_level=1),
                        "Value": _bytes(b""),
                        "Handle": dbus.UInt16(handle, variant_level=1),
                    },
                )
                handle += 1
        self._gatt_added = True

    def _set_char(self, char, **values):
        changed = {}
        for name, value in values.items():
            char.props[CHAR_IFACE][name] = value
            changed[name] = value
        char.EmitSignal(
            dbus.PROPERTIES_IFACE, "PropertiesChanged", "sa{sv}as", [CHAR_IFACE, changed, []]
        )

    def notify(self, uuid, data):
        """A notification or indication: BlueZ shows both as a new Value."""
        char = self.chars_by_uuid.get(str(uuid))
        if char is not None:
            self._set_char(char, Value=_bytes(data))

    def state(self):
        v = self.virtual
        return {
            "connects": self.connects,
            "connected": self.connected,
            "bonded": bool(v is not None and v.bonded),
            "records_sent": getattr(v, "records_sent", 0),
            "passkeys_entered": self.passkeys_entered,
            "transfers": [
                [int(t.op_code), int(t.operator), t.operand] for t in getattr(v, "transfers", [])
            ],
        }


def _request_passkey(device_path):
    """What bluetoothd does for a device in passkey-entry pairing: ask the default agent's
    RequestPasskey (its owner found by who exports the path: the bluez5 template keeps only
    the path). Without an agent, or when it cancels, the pairing fails like bluetoothd's."""
    failed = dbus.exceptions.DBusException(
        "Authentication Failed", name="org.bluez.Error.AuthenticationFailed"
    )
    agent = mockobject.objects["/org/bluez"].default_agent
    if not agent:
        raise failed
    bus = dbus.SystemBus()
    for name in bus.list_names():
        if not name.startswith(":") or name == bus.get_unique_name():
            continue
        try:
            xml = bus.call_blocking(
                name, agent, "org.freedesktop.DBus.Introspectable", "Introspect", "", [], timeout=2
            )
        except dbus.exceptions.DBusException:
            continue
        if "org.bluez.Agent1" not in xml:
            continue
        try:
            return int(
                bus.call_blocking(
                    name,
                    agent,
                    "org.bluez.Agent1",
                    "RequestPasskey",
                    "o",
                    [device_path],
                    timeout=150,
                )
            )
        except dbus.exceptions.DBusException:
            raise failed from None
    raise failed


def _add(path, interface, props, methods=()):
    """A new object, announced with InterfacesAdded as bluetoothd does."""
    mockobject.objects["/"].AddObject(path, interface, props, list(methods))
    mockobject.objects["/"].EmitSignal(
        OBJECT_MANAGER_IFACE,
        "InterfacesAdded",
        "oa{sa{sv}}",
        [dbus.ObjectPath(path), {interface: props}],
    )
    return mockobject.objects[path]


def _peripheral_of(char):
    p = char.peripheral
    if not p.connected:
        raise dbus.exceptions.DBusException("Not connected", name="org.bluez.Error.Failed")
    return p


def ReadValue(char, _options):
    p = _peripheral_of(char)
    if "read" not in char.flags:
        raise dbus.exceptions.DBusException(
            "Read not permitted", name="org.bluez.Error.NotPermitted"
        )
    try:
        data = p.run(p.virtual.read(char.uuid))
    except ble_errors.GattError as exc:
        raise _bluez_error(exc, "read") from exc
    return _bytes(data)


def WriteValue(char, value, options):
    p = _peripheral_of(char)
    if "write" not in char.flags and "write-without-response" not in char.flags:
        raise dbus.exceptions.DBusException(
            "Write not permitted", name="org.bluez.Error.NotPermitted"
        )
    response = str(options.get("type", "request")) != "command"
    try:
        p.run(p.virtual.write(char.uuid, bytes(value), response=response))
    except ble_errors.GattError as exc:
        raise _bluez_error(exc, "write") from exc
    p.kick()  # the RACP answer (records, then the indication) follows the write response


def StartNotify(char):
    p = _peripheral_of(char)
    if "notify" not in char.flags and "indicate" not in char.flags:
        raise dbus.exceptions.DBusException(
            "Operation is not supported", name="org.bluez.Error.NotSupported"
        )
    p.run(p.virtual.start_notify(char.uuid, p.notify))
    p._set_char(char, Notifying=dbus.Boolean(True, variant_level=1))


def StopNotify(char):
    p = _peripheral_of(char)
    p.run(p.virtual.stop_notify(char.uuid))
    p._set_char(char, Notifying=dbus.Boolean(False, variant_level=1))


def Connect(device):
    PERIPHERALS[device.path].connect()


def Disconnect(device):
    PERIPHERALS[device.path].disconnect()


def Pair(device):
    PERIPHERALS[device.path].pair()


def StartDiscovery(adapter):
    bluez5.StartDiscovery(adapter)
    _advertise(adapter.path)
    GLib.timeout_add(ADVERTISE_EVERY_MS, _advertise, adapter.path)


def _advertise(adapter_path):
    adapter = mockobject.objects.get(adapter_path)
    if adapter is None or not adapter.props[ADAPTER_IFACE]["Discovering"]:
        return False
    for path, peripheral in PERIPHERALS.items():
        if path.startswith(adapter_path + "/"):
            peripheral.advertise()
    return True


@dbus.service.method(MOCK_IFACE, in_signature="s", out_signature="s")
def PeripheralState(_self, address):
    for peripheral in PERIPHERALS.values():
        if str(peripheral.device.props[DEVICE_IFACE]["Address"]) == address:
            return json.dumps(peripheral.state())
    raise dbus.exceptions.DBusException(address, name=MOCK_IFACE + ".NoSuchDevice")


def _make_peripheral(spec):
    """meter: "records" [[seq, ISO time, mg/dL], ...], "requires_bonding" (default true),
    "passkey" n (pairing asks the registered agent for it and fails on another number),
    "drop_after_records" k (the link drops once, after the k-th record of a transfer).
    cgm: "session_start" ISO time, "readings" [[ISO time, mg/dL], ...], "e2e_crc" (true),
    "drop_after_records". other: an advertiser without a health service (not connectable)."""
    kind = spec["kind"]
    drop = spec.get("drop_after_records")
    if kind == "meter":
        records = [
            meter_record(seq, datetime.fromisoformat(t), mg) for seq, t, mg in spec["records"]
        ]
        virtual = VirtualMeter(
            records,
            address=spec["address"],
            requires_bonding=spec.get("requires_bonding", True),
            drop_after_records=drop,
        )
        return virtual, Service.GLUCOSE
    if kind == "cgm":
        virtual = VirtualCgm(
            session_start=datetime.fromisoformat(spec["session_start"]),
            address=spec["address"],
            e2e_crc=spec.get("e2e_crc", True),
            drop_after_records=drop,
        )
        for t, mg in spec.get("readings", []):
            virtual.add_reading(datetime.fromisoformat(t), mg, notify=False)
        return virtual, Service.CONTINUOUS_GLUCOSE_MONITORING
    return None, spec.get("service", full_uuid(0x110B))


def load(mock, parameters):
    mockobject.objects["/"] = mock  # dbusmock registers it only after load()
    bluez5.load(mock, parameters)
    for name in parameters.get("adapters", []):
        path = bluez5.AddAdapter(mock, name, f"glucohub-test-{name}")
        adapter = mockobject.objects[path]
        adapter.props[ADAPTER_IFACE]["Roles"] = dbus.Array(
            ["central", "peripheral"], signature="s", variant_level=1
        )
        adapter.AddMethods(ADAPTER_IFACE, [("StartDiscovery", "", "", StartDiscovery)])
    for spec in parameters.get("devices", []):
        virtual, service = _make_peripheral(spec)
        path = bluez5.AddDevice(mock, spec.get("adapter", "hci0"), spec["address"], spec["name"])
        device = mockobject.objects[path]
        device.props[DEVICE_IFACE]["UUIDs"] = dbus.Array([service], signature="s", variant_level=1)
        props = device.props[DEVICE_IFACE]
        props["Bonded"] = dbus.Boolean(False, variant_level=1)
        # bluez5 declares these dictionaries as arrays; bluetoothd sends a{qv}, a{sv}, a{yv}.
        props["ManufacturerData"] = dbus.Dictionary({}, signature="qv", variant_level=1)
        props["ServiceData"] = dbus.Dictionary({}, signature="sv", variant_level=1)
        props["AdvertisingData"] = dbus.Dictionary({}, signature="yv", variant_level=1)
        device.AddMethods(
            DEVICE_IFACE,
            [
                ("Connect", "", "", Connect),
                ("Disconnect", "", "", Disconnect),
                ("Pair", "", "", Pair),
            ],
        )
        PERIPHERALS[path] = Peripheral(device, virtual, {**spec, "service": service})
