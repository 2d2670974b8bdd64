"""`glucohub doctor`: check an installation, one line per check with its fix.

Every check only looks: nothing is created, changed or repaired (the database is opened
read-only), and each has a time limit, so the doctor can run beside a running hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import ssl
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gateway.errors import ConfigError, StorageError
from gateway.sealing import BATCH_KEY_FILE, KEYS_DIR, LOG_KEY_FILE
from gateway.settings import MqttSettings, Settings, UpstreamSettings
from gateway.storage.sqlite_migrations import SCHEMA_VERSION, SchemaTooNew, SchemaTooOld
from gateway.store import DB_FILENAME, inspect_file
from glucohub.clockwatch import adjtimex_synchronized

TIMEOUT_S = 5.0
SYSTEM_BUS = "unix:path=/run/dbus/system_bus_socket"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    found: str  # what the check saw
    fix: str = ""  # what to do about it (a failed check always has one)

    def line(self) -> str:
        if self.ok:
            return f"ok    {self.name}: {self.found}"
        return f"FAIL  {self.name}: {self.found} - fix: {self.fix}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Host:
    """What the checks look at outside the settings; tests point it at their own."""

    sys_bluetooth: Path = Path("/sys/class/bluetooth")
    system_bus: str = SYSTEM_BUS
    timesync_flag: Path = Path("/run/systemd/timesync/synchronized")
    kernel_clock_synchronized: Callable[[], bool | None] | None = None  # None: adjtimex(2)
    uid: int | None = None  # None: this process's effective user


def run_checks(settings: Settings, host: Host | None = None) -> list[Check]:
    host = host or Host()
    uid = os.geteuid() if host.uid is None else host.uid
    data_dir = settings.storage.data_dir
    plan: list[tuple[tuple[str, ...], Callable[[], Check | list[Check]]]] = [
        (("data directory",), lambda: _data_dir(data_dir, uid)),
        (("disk space",), lambda: _disk_space(data_dir, settings.storage.min_free_mb)),
        (("key files",), lambda: _key_files(data_dir, uid)),
        (("database", "schema"), lambda: _database(data_dir, settings.storage.url)),
        (("clock",), lambda: _clock(host)),
        (("bluetooth adapter", "bluez"), lambda: _bluetooth(settings, host)),
        (("broker",), lambda: _broker("broker", "mqtt", settings.mqtt)),
        (("upstream broker",), lambda: _broker("upstream broker", "upstream", settings.upstream)),
    ]
    checks: list[Check] = []
    for names, check in plan:
        try:
            found = check()
        except OSError as exc:  # most often: this user may not look (a 0700 directory)
            reason = f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc)
            fix = "run the doctor as the hub's user, or with sudo"
            found = [Check(name, False, f"could not check ({reason})", fix) for name in names]
        checks += found if isinstance(found, list) else [found]
    return checks


def report(checks: list[Check]) -> tuple[str, int]:
    """The printed report and the exit code: 0 when every check passed, 1 otherwise."""
    failed = sum(not c.ok for c in checks)
    summary = f"{len(checks)} checks: {len(checks) - failed} ok, {failed} failed"
    return "\n".join([*(c.line() for c in checks), summary]), 1 if failed else 0


# -- storage ---------------------------------------------------------------------------------


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _data_dir(data_dir: Path, uid: int) -> Check:
    name = "data directory"
    if not data_dir.is_dir():
        return Check(
            name,
            False,
            f"{data_dir} does not exist",
            "check storage.data_dir (or --data-dir); `glucohub run` creates it",
        )
    info = data_dir.stat()
    if info.st_uid != uid:
        owner, me = _user(info.st_uid), _user(uid)
        return Check(
            name,
            False,
            f"{data_dir} belongs to {owner}, not to {me} who runs this check",
            f"run the doctor as the hub's user (sudo -u {owner} glucohub doctor ...);"
            f" if the hub runs as {me}: sudo chown -R {me} {data_dir}",
        )
    if info.st_mode & 0o077:
        return Check(
            name,
            False,
            f"{data_dir} is mode {stat.S_IMODE(info.st_mode):04o}: others may read health data",
            f"chmod 700 {data_dir}",
        )
    return Check(name, True, f"{data_dir} (mode 0700, owner {_user(uid)})")


def _disk_space(data_dir: Path, min_free_mb: int) -> Check:
    name = "disk space"
    where = data_dir
    while not where.exists() and where != where.parent:
        where = where.parent  # the file system the data directory will be on
    try:
        free_mb = shutil.disk_usage(where).free // (1024 * 1024)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        return Check(
            name, False, f"cannot read free space of {where}: {reason}", "check storage.data_dir"
        )
    if free_mb < min_free_mb:
        return Check(
            name,
            False,
            f"{free_mb} MiB free on {where}, below storage.min_free_mb = {min_free_mb}",
            "free space (sudo apt-get clean; shrink the journal with journalctl's vacuum-size"
            " option) or move storage.data_dir to a larger disk",
        )
    return Check(name, True, f"{free_mb} MiB free on {where} (at least {min_free_mb} wanted)")


def _key_files(data_dir: Path, uid: int) -> Check:
    name = "key files"
    problems: list[tuple[str, str]] = []
    for file in (BATCH_KEY_FILE, LOG_KEY_FILE):
        path = data_dir / KEYS_DIR / file
        try:
            info = path.stat()
        except FileNotFoundError:
            problems.append((f"{path} is missing", f"glucohub keys init --data-dir {data_dir}"))
            continue
        if info.st_uid != uid:
            owner, me = _user(info.st_uid), _user(uid)
            problems.append(
                (
                    f"{path} belongs to {owner}, not {me}",
                    f"if the hub runs as {me}: sudo chown {me} {path}",
                )
            )
        if info.st_mode & 0o077:
            mode = f"{stat.S_IMODE(info.st_mode):04o}"
            problems.append((f"{path} is mode {mode}, readable by others", f"chmod 600 {path}"))
    if problems:
        found = "; ".join(p for p, _ in problems)
        fix = "; ".join(dict.fromkeys(f for _, f in problems))
        return Check(name, False, found, fix)
    return Check(name, True, f"{BATCH_KEY_FILE} and {LOG_KEY_FILE} mode 0600, owner {_user(uid)}")


def _database(data_dir: Path, url: str) -> list[Check]:
    if url:
        return _postgres_database(data_dir, url)
    path = data_dir / DB_FILENAME
    if not path.is_file():
        missing = Check(
            "database", False, f"no {DB_FILENAME} in {data_dir}", "start the hub once: glucohub run"
        )
        return [missing, Check("schema", False, "no database", "start the hub once")]
    restore = f"stop the hub and restore {path} from a backup"
    try:
        rows, version = inspect_file(path, TIMEOUT_S)
    except StorageError as exc:
        return [Check("database", False, f"{path} is damaged: {exc}", restore)]
    if rows == ["ok"]:
        integrity = Check("database", True, f"{path}: quick_check ok")
    else:
        integrity = Check("database", False, f"{path} is damaged: {'; '.join(rows)}", restore)
    if version < SCHEMA_VERSION:
        schema = Check(
            "schema",
            False,
            f"version {version}, this Glucohub's is {SCHEMA_VERSION}",
            "back up the database, then: glucohub migrate (the hub also upgrades at start)",
        )
    elif version > SCHEMA_VERSION:
        schema = Check(
            "schema",
            False,
            f"version {version} is newer than this Glucohub's {SCHEMA_VERSION}",
            "install the Glucohub version that wrote it (or restore a backup)",
        )
    else:
        schema = Check("schema", True, f"version {version}, current")
    return [integrity, schema]


def _postgres_database(data_dir: Path, url: str) -> list[Check]:
    """`[storage] url`: the server answers and holds this version's schema (a read-only
    open, which never migrates; the connect timeout bounds it)."""
    from gateway.storage.opening import open_storage

    try:
        # psycopg is imported only here: a SQLite hub may not have it.
        from gateway.storage.postgres_migrations import redacted

        where = redacted(url)
        open_storage(data_dir, url, read_only=True).close()
    except (SchemaTooOld, SchemaTooNew) as exc:
        reached = Check("database", True, f"{where} answers")
        if isinstance(exc, SchemaTooNew):
            fix = "install the Glucohub version that wrote it (or restore a backup)"
        else:
            fix = "back up the database, then: glucohub migrate (the hub also upgrades at start)"
        return [
            reached,
            Check("schema", False, f"version {exc.found}, this Glucohub's is {exc.expected}", fix),
        ]
    except ModuleNotFoundError:
        fix = "pip install 'glucohub[postgresql]'"
        return [
            Check("database", False, "storage.url is PostgreSQL, but psycopg is missing", fix),
            Check("schema", False, "no database", fix),
        ]
    except (StorageError, ConfigError) as exc:
        fix = "start PostgreSQL or correct storage.url"
        return [
            Check("database", False, str(exc), fix),
            Check("schema", False, "no database", "start the hub once"),
        ]
    return [Check("database", True, f"{where} answers"), Check("schema", True, "current")]


# -- clock -----------------------------------------------------------------------------------


def _clock(host: Host) -> Check:
    name = "clock"
    if host.timesync_flag.exists():
        return Check(name, True, "synchronized (systemd-timesyncd)")
    probe = host.kernel_clock_synchronized or adjtimex_synchronized
    synchronized = probe()
    if synchronized:
        return Check(name, True, "synchronized (kernel NTP status)")
    found = "unknown (no adjtimex)" if synchronized is None else "not synchronized"
    return Check(
        name,
        False,
        f"{found}: a Raspberry Pi has no battery clock, hub times may be wrong until NTP",
        "sudo timedatectl set-ntp true (and let the hub reach an NTP server)",
    )


# -- Bluetooth -------------------------------------------------------------------------------


def _bluetooth(settings: Settings, host: Host) -> list[Check]:
    if not settings.ble.enabled:
        off = "not used (ble.enabled = false)"
        return [Check("bluetooth adapter", True, off), Check("bluez", True, off)]
    return [_adapter(settings.ble.adapter, host.sys_bluetooth), _bluez(host.system_bus)]


def _adapter(wanted: str, sys_bluetooth: Path) -> Check:
    name = "bluetooth adapter"
    try:
        present = sorted(p.name for p in sys_bluetooth.iterdir() if p.name.startswith("hci"))
    except OSError:
        present = []
    if not present:
        return Check(
            name,
            False,
            f"no adapter in {sys_bluetooth}",
            "plug in a Bluetooth adapter; on a Pi remove dtoverlay=disable-bt from config.txt;"
            " then sudo rfkill unblock bluetooth",
        )
    if wanted and wanted not in present:
        return Check(
            name,
            False,
            f"ble.adapter = {wanted} is absent (present: {', '.join(present)})",
            f"set ble.adapter to one of {', '.join(present)} (or leave it empty)",
        )
    return Check(name, True, ", ".join(present))


def _bluez(address: str) -> Check:
    try:
        return asyncio.run(asyncio.wait_for(_ask_bluez(address), TIMEOUT_S))
    except TimeoutError:
        return Check("bluez", False, f"no answer on the system bus {address}", "sudo reboot")


async def _ask_bluez(address: str) -> Check:
    from dbus_fast import BusType, Message, MessageType
    from dbus_fast.aio import MessageBus

    name = "bluez"
    try:
        bus = await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()
    except Exception as exc:  # dbus-fast raises several families for a missing bus
        return Check(
            name,
            False,
            f"cannot reach the system D-Bus ({address}): {exc}",
            "sudo systemctl start dbus",
        )
    try:
        owner = await bus.call(
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="NameHasOwner",
                signature="s",
                body=["org.bluez"],
            )
        )
        if (
            owner is None
            or owner.message_type is not MessageType.METHOD_RETURN
            or not owner.body[0]
        ):
            return Check(
                name,
                False,
                "BlueZ (org.bluez) is not on the system bus",
                "sudo apt-get install bluez, then sudo systemctl enable bluetooth"
                " and sudo systemctl start bluetooth",
            )
        reply = await bus.call(
            Message(
                destination="org.bluez",
                path="/",
                interface="org.freedesktop.DBus.ObjectManager",
                member="GetManagedObjects",
            )
        )
    finally:
        bus.disconnect()
    if reply is None or reply.message_type is not MessageType.METHOD_RETURN:
        error = "no reply" if reply is None else reply.error_name or "an error"
        if reply is not None and reply.error_name == "org.freedesktop.DBus.Error.AccessDenied":
            who = _user(os.geteuid())
            return Check(
                name,
                False,
                f"{who} may not talk to BlueZ ({error})",
                f"sudo usermod -aG bluetooth {who}, then restart the hub",
            )
        return Check(
            name,
            False,
            f"BlueZ refused to list its objects: {error}",
            "sudo systemctl restart bluetooth",
        )
    adapters = sorted(
        path.rsplit("/", 1)[-1]
        for path, interfaces in reply.body[0].items()
        if "org.bluez.Adapter1" in interfaces
    )
    return Check(name, True, f"BlueZ answers; adapters: {', '.join(adapters) or 'none'}")


# -- brokers ---------------------------------------------------------------------------------

_CONNACK_CODES = {
    1: "refused the MQTT protocol version",
    2: "refused the client id",
    3: "is unavailable",
    4: "refused the user name or password",
    5: "refused: not authorized",
}


def mqtt_connect_packet(client_id: str, username: str = "", password: str = "") -> bytes:
    """An MQTT 3.1.1 CONNECT (§3.1) with a clean session: it proves the broker speaks MQTT
    and takes the hub's credentials without touching the hub's own (persistent) session."""

    def field(text: str) -> bytes:
        data = text.encode()
        return len(data).to_bytes(2, "big") + data

    flags = 0x02 | (0x80 if username else 0) | (0x40 if username and password else 0)
    body = b"\x00\x04MQTT\x04" + bytes([flags]) + b"\x00\x0a" + field(client_id)  # keep-alive 10 s
    if username:
        body += field(username) + (field(password) if password else b"")
    length, remaining = b"", len(body)
    while True:  # §2.2.3: seven bits a byte, the high bit says another follows
        remaining, digit = divmod(remaining, 128)
        length += bytes([digit | (0x80 if remaining else 0)])
        if not remaining:
            return b"\x10" + length + body


def _broker(name: str, section: str, config: MqttSettings | UpstreamSettings) -> Check:
    url = config.url
    if not url:
        return Check(name, True, f"not used ({section}.url is empty)")
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    tls = parts.scheme == "mqtts"
    port = parts.port or (8883 if tls else 1883)
    fix = (
        f"start the broker (sudo systemctl start mosquitto) or correct {section}.url;"
        f" test with: mosquitto_sub -h {host} -p {port} -t '$SYS/#' -C 1"
    )
    try:
        with _connection(host, port, tls, config.ca_file) as sock:
            client_id = f"glucohub-doctor-{uuid.uuid4().hex[:12]}"
            sock.sendall(mqtt_connect_packet(client_id, config.username, config.password))
            connack = _read_exactly(sock, 4)
            with contextlib.suppress(OSError):
                sock.sendall(b"\xe0\x00")  # DISCONNECT
    except ssl.SSLError as exc:
        return Check(
            name, False, f"TLS to {host}:{port} failed: {exc.reason}", f"check {section}.ca_file"
        )
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        return Check(name, False, f"{url} unreachable: {reason}", fix)
    if connack[0] != 0x20:
        return Check(name, False, f"{url} does not answer as an MQTT broker", fix)
    if connack[3] != 0:
        refused = _CONNACK_CODES.get(connack[3], f"refused (code {connack[3]})")
        if connack[3] in (4, 5):
            fix = f"check {section}.username and {section}.password against the broker's"
        return Check(name, False, f"{url} {refused}", fix)
    return Check(name, True, f"{url} answers (MQTT)")


@contextlib.contextmanager
def _connection(host: str, port: int, tls: bool, ca_file: str) -> Iterator[socket.socket]:
    sock = socket.create_connection((host, port), timeout=TIMEOUT_S)
    try:
        if tls:
            context = ssl.create_default_context(cafile=ca_file or None)
            sock = context.wrap_socket(sock, server_hostname=host)
        yield sock
    finally:
        sock.close()


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return data
