"""`glucohub doctor`: each check passes on a sound installation and fails, with its fix, on
the mistake it exists for."""

from __future__ import annotations

import os
import pwd
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sealing import init_keys
from gateway.settings import Settings, load_settings
from gateway.storage.postgres_migrations import SCHEMA_VERSION as PG_SCHEMA_VERSION
from gateway.storage.postgres_store import PostgresStore
from gateway.storage.sqlite_migrations import SCHEMA_VERSION
from gateway.store import DB_FILENAME, Store
from glucohub.cli import main
from glucohub.doctor import Check, Host, adjtimex_synchronized, report, run_checks
from tests.support import bluez
from tests.support.bluez import BluezMock, PrivateSystemBus
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import Postgres


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    """A data directory as a hub leaves it: owner-only, database, keys."""
    data_dir = tmp_path / "hub"
    data_dir.mkdir(mode=0o700)
    Store(data_dir).close()
    init_keys(data_dir, None)
    return data_dir


@pytest.fixture
def host(tmp_path: Path) -> Host:
    """A host whose clock is synchronized (timesyncd's flag file) and that has hci0."""
    flag = tmp_path / "run" / "synchronized"
    flag.parent.mkdir()
    flag.touch()
    sys_bluetooth = tmp_path / "sys-class-bluetooth"
    (sys_bluetooth / "hci0").mkdir(parents=True)
    return Host(
        sys_bluetooth=sys_bluetooth,
        system_bus=f"unix:path={tmp_path / 'no-bus'}",
        timesync_flag=flag,
        kernel_clock_synchronized=lambda: False,
    )


def settings_for(data_dir: Path, **env: str) -> Settings:
    environ = {"GLUCOHUB_STORAGE__DATA_DIR": str(data_dir)}
    environ.update({f"GLUCOHUB_{k.upper()}": v for k, v in env.items()})
    return load_settings(None, environ)


def only(checks: list[Check], name: str) -> Check:
    [found] = [c for c in checks if c.name == name]
    return found


def failed(checks: list[Check], name: str) -> str:
    """The failed check's printed line (asserting that it failed)."""
    check = only(checks, name)
    assert not check.ok, check
    assert check.fix, "a failed check says how to fix it"
    return check.line()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as running:
        yield running


def test_a_sound_installation_passes_every_check(
    hub_dir: Path, host: Host, broker: Mosquitto
) -> None:
    checks = run_checks(settings_for(hub_dir, mqtt__url=broker.url), host)
    assert [c for c in checks if not c.ok] == []
    text, code = report(checks)
    assert code == 0
    lines = text.splitlines()
    assert len(lines) == len(checks) + 1
    assert all(line.startswith("ok    ") for line in lines[:-1])
    assert lines[-1] == f"{len(checks)} checks: {len(checks)} ok, 0 failed"
    assert f"broker: {broker.url} answers (MQTT)" in text
    assert "schema: version" in text and "quick_check ok" in text


def test_a_key_readable_by_others(hub_dir: Path, host: Host) -> None:
    key = hub_dir / "keys" / "log-key.pem"
    key.chmod(0o644)
    checks = run_checks(settings_for(hub_dir), host)
    line = failed(checks, "key files")
    assert f"{key} is mode 0644" in line
    assert line.endswith(f"fix: chmod 600 {key}")
    text, code = report(checks)
    assert code == 1 and text.endswith("1 failed")


def test_keys_missing(hub_dir: Path, host: Host) -> None:
    shutil.rmtree(hub_dir / "keys")
    line = failed(run_checks(settings_for(hub_dir), host), "key files")
    assert f"fix: glucohub keys init --data-dir {hub_dir}" in line


def test_files_of_another_user(hub_dir: Path, host: Host) -> None:
    # The hub's service user is not the owner (files copied in as root, say).
    other = Host(
        sys_bluetooth=host.sys_bluetooth,
        timesync_flag=host.timesync_flag,
        uid=os.geteuid() + 4242,
    )
    checks = run_checks(settings_for(hub_dir), other)
    me = str(os.geteuid() + 4242)  # no such user: named by number
    line = failed(checks, "data directory")
    assert f"not to {me} who runs this check" in line
    owner = pwd.getpwuid(os.geteuid()).pw_name
    assert f"sudo -u {owner} glucohub doctor" in line and f"sudo chown -R {me} {hub_dir}" in line
    assert f"sudo chown {me} {hub_dir}/keys/batch-key.pem" in failed(checks, "key files")


def test_a_data_dir_others_can_read(hub_dir: Path, host: Host) -> None:
    hub_dir.chmod(0o755)
    line = failed(run_checks(settings_for(hub_dir), host), "data directory")
    assert line.endswith(f"fix: chmod 700 {hub_dir}")


def test_a_missing_data_dir(tmp_path: Path, host: Host) -> None:
    checks = run_checks(settings_for(tmp_path / "typo"), host)
    assert "storage.data_dir" in failed(checks, "data directory")
    assert "glucohub run" in failed(checks, "database")
    assert not (tmp_path / "typo").exists(), "the doctor creates nothing"


def test_free_space_below_the_threshold(hub_dir: Path, host: Host) -> None:
    free_mb = shutil.disk_usage(hub_dir).free // (1024 * 1024)
    above = str(free_mb + 1024)
    line = failed(run_checks(settings_for(hub_dir, storage__min_free_mb=above), host), "disk space")
    assert f"below storage.min_free_mb = {above}" in line
    assert "shrink the journal" in line
    ok = only(run_checks(settings_for(hub_dir, storage__min_free_mb="1"), host), "disk space")
    assert ok.ok


def test_a_damaged_database(hub_dir: Path, host: Host) -> None:
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute("CREATE TABLE filler (n INTEGER PRIMARY KEY, text TEXT)")
    db.execute("CREATE INDEX filler_text ON filler (text)")
    db.executemany("INSERT INTO filler (text) VALUES (?)", [(f"row {i:06}",) for i in range(5000)])
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
    pages = int(db.execute("PRAGMA page_count").fetchone()[0])
    db.close()
    with (hub_dir / DB_FILENAME).open("r+b") as handle:  # scribble over the last pages
        handle.seek(page_size * (pages - 4))
        handle.write(b"\xa5" * page_size * 3)
    checks = run_checks(settings_for(hub_dir), host)
    line = failed(checks, "database")
    assert "is damaged:" in line
    assert f"restore {hub_dir / DB_FILENAME} from a backup" in line


def test_a_file_that_is_no_database(hub_dir: Path, host: Host) -> None:
    (hub_dir / DB_FILENAME).write_bytes(b"not a database at all\n" * 100)
    line = failed(run_checks(settings_for(hub_dir), host), "database")
    assert "from a backup" in line


@pytest.mark.parametrize(
    ("version", "fix"),
    [(SCHEMA_VERSION - 1, "glucohub migrate"), (SCHEMA_VERSION + 1, "install the Glucohub")],
)
def test_a_schema_not_current(hub_dir: Path, host: Host, version: int, fix: str) -> None:
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute(f"PRAGMA user_version = {version}")
    db.close()
    before = (hub_dir / DB_FILENAME).read_bytes()
    line = failed(run_checks(settings_for(hub_dir), host), "schema")
    assert f"version {version}" in line and fix in line
    assert (hub_dir / DB_FILENAME).read_bytes() == before, "read-only: nothing migrated"


def test_a_hub_on_postgresql_is_checked_there(
    hub_dir: Path, host: Host, postgres_server: Postgres, postgres_url: str
) -> None:
    # A hub whose [storage] url is PostgreSQL keeps only its keys in the data directory.
    (hub_dir / DB_FILENAME).unlink()
    PostgresStore(postgres_url).close()
    checks = run_checks(settings_for(hub_dir, storage__url=postgres_url), host)
    assert only(checks, "database").line() == f"ok    database: {postgres_url} answers"
    assert only(checks, "schema").line() == "ok    schema: current"
    # older than this code: read-only, nothing migrated
    database = postgres_url.rsplit("/", 1)[1]
    postgres_server.psql(
        "DELETE FROM schema_migrations WHERE version = (SELECT max(version) FROM"
        " schema_migrations)",
        database,
    )
    line = failed(run_checks(settings_for(hub_dir, storage__url=postgres_url), host), "schema")
    assert line.startswith(f"FAIL  schema: version {PG_SCHEMA_VERSION - 1}, this Glucohub's")
    assert "glucohub migrate" in line
    assert postgres_server.psql("SELECT max(version) FROM schema_migrations", database) == str(
        PG_SCHEMA_VERSION - 1
    )
    # a server that is not there
    gone = f"postgresql://glucohub:secret@127.0.0.1:{free_port()}/hub"
    checks = run_checks(settings_for(hub_dir, storage__url=gone), host)
    line = failed(checks, "database")
    assert "connection failed" in line and "correct storage.url" in line
    assert "secret" not in report(checks)[0]


def test_a_clock_not_synchronized(hub_dir: Path, host: Host) -> None:
    unsynced = Host(
        timesync_flag=host.timesync_flag.with_name("absent"),
        kernel_clock_synchronized=lambda: False,
    )
    line = failed(run_checks(settings_for(hub_dir), unsynced), "clock")
    assert "fix: sudo timedatectl set-ntp true" in line
    by_kernel = Host(
        timesync_flag=host.timesync_flag.with_name("absent"),
        kernel_clock_synchronized=lambda: True,
    )
    assert only(run_checks(settings_for(hub_dir), by_kernel), "clock").ok


def test_the_kernel_clock_state_is_readable() -> None:
    # adjtimex(2) with modes 0 needs no privilege: on Linux the answer is known.
    assert adjtimex_synchronized() in (True, False)


def test_no_bluetooth_adapter(hub_dir: Path, host: Host) -> None:
    shutil.rmtree(host.sys_bluetooth / "hci0")
    checks = run_checks(settings_for(hub_dir, ble__enabled="true"), host)
    assert "rfkill unblock bluetooth" in failed(checks, "bluetooth adapter")
    off = run_checks(settings_for(hub_dir), host)
    assert only(off, "bluetooth adapter").ok and only(off, "bluez").ok  # BLE not used


def test_the_configured_adapter_absent(hub_dir: Path, host: Host) -> None:
    settings = settings_for(hub_dir, ble__enabled="true", ble__adapter="hci1")
    line = failed(run_checks(settings, host), "bluetooth adapter")
    assert (
        "hci1 is absent (present: hci0)" in line and "fix: set ble.adapter to one of hci0" in line
    )


def with_bus(host: Host, address: str) -> Host:
    return Host(
        sys_bluetooth=host.sys_bluetooth, timesync_flag=host.timesync_flag, system_bus=address
    )


def test_no_system_bus(hub_dir: Path, host: Host) -> None:
    line = failed(run_checks(settings_for(hub_dir, ble__enabled="true"), host), "bluez")
    assert "fix: sudo systemctl start dbus" in line


@pytest.mark.slow
def test_bluez_not_running(hub_dir: Path, host: Host, tmp_path: Path) -> None:
    with PrivateSystemBus(tmp_path / "dbus") as bus:
        checks = run_checks(settings_for(hub_dir, ble__enabled="true"), with_bus(host, bus.address))
    assert "fix: sudo apt-get install bluez, then sudo systemctl enable bluetooth" in failed(
        checks, "bluez"
    )


@pytest.mark.slow
def test_bluez_running(hub_dir: Path, host: Host, tmp_path: Path) -> None:
    with PrivateSystemBus(tmp_path / "dbus") as bus, BluezMock(bus, {"adapters": ["hci0"]}):
        checks = run_checks(settings_for(hub_dir, ble__enabled="true"), with_bus(host, bus.address))
    assert only(checks, "bluez") == Check("bluez", True, "BlueZ answers; adapters: hci0")


@pytest.mark.slow
def test_bluez_refuses_this_user(
    hub_dir: Path, host: Host, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The system bus's policy for BlueZ (Debian: the bluetooth group) does not admit us.
    deny = (
        '<deny send_destination="org.bluez" send_interface="org.freedesktop.DBus.ObjectManager"/>'
    )
    monkeypatch.setattr(bluez, "_CONFIG", bluez._CONFIG.replace("</policy>", f"{deny}</policy>"))
    with PrivateSystemBus(tmp_path / "dbus") as bus, BluezMock(bus, {"adapters": ["hci0"]}):
        checks = run_checks(settings_for(hub_dir, ble__enabled="true"), with_bus(host, bus.address))
    line = failed(checks, "bluez")
    assert "fix: sudo usermod -aG bluetooth" in line and "restart the hub" in line


def test_a_broker_not_running(hub_dir: Path, host: Host) -> None:
    url = f"mqtt://127.0.0.1:{free_port()}"
    line = failed(run_checks(settings_for(hub_dir, mqtt__url=url), host), "broker")
    assert f"{url} unreachable" in line
    assert "start the broker (sudo systemctl start mosquitto) or correct mqtt.url" in line


def test_a_broker_refusing_the_credentials(hub_dir: Path, host: Host, tmp_path: Path) -> None:
    passwords = tmp_path / "passwd"
    tool = shutil.which("mosquitto_passwd")
    assert tool, "mosquitto_passwd is missing: apt-get install mosquitto"
    subprocess.run([tool, "-b", "-c", str(passwords), "hub", "right"], check=True, timeout=30)
    passwords.chmod(0o600)
    extra = f"allow_anonymous false\npassword_file {passwords}\n"
    with Mosquitto(tmp_path / "secured", extra_config=extra) as broker:
        wrong = settings_for(
            hub_dir, mqtt__url=broker.url, mqtt__username="hub", mqtt__password="wrong"
        )
        line = failed(run_checks(wrong, host), "broker")
        right = settings_for(
            hub_dir, mqtt__url=broker.url, mqtt__username="hub", mqtt__password="right"
        )
        assert only(run_checks(right, host), "broker").ok
    assert "fix: check mqtt.username and mqtt.password" in line
    assert "right" not in line and "wrong" not in line, "no secret in the report"


def test_the_command_prints_the_report_and_exits_1_on_a_failure(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (hub_dir / "keys" / "batch-key.pem").chmod(0o640)
    code = main(["doctor", "--data-dir", str(hub_dir)])
    out, err = capsys.readouterr()
    assert code == 1 and err == ""
    assert f"FAIL  key files: {hub_dir}/keys/batch-key.pem is mode 0640" in out
    assert out.splitlines()[-1].startswith("10 checks: ")


def test_a_check_this_user_may_not_make_fails_alone(
    hub_dir: Path, host: Host, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not root, the doctor cannot look inside the hub user's 0700 directory (root always can,
    # so the refusal is the one stat would raise).
    def refused(data_dir: Path, uid: int) -> Check:
        raise PermissionError(13, "Permission denied", str(data_dir / "keys" / "log-key.pem"))

    monkeypatch.setattr("glucohub.doctor._key_files", refused)
    checks = run_checks(settings_for(hub_dir), host)
    line = failed(checks, "key files")
    assert f"could not check ({hub_dir}/keys/log-key.pem: Permission denied)" in line
    assert "fix: run the doctor as the hub's user, or with sudo" in line
    assert [c.name for c in checks if not c.ok] == ["key files"]  # the others still ran
