"""Numbered schema migrations: a database made by commit c685acb upgrades with nothing lost
and keeps verifying; a database from a newer version is refused in one line; read-only
opens never migrate."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.model import Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.storage import sqlite_migrations
from gateway.storage.sqlite_migrations import (
    SCHEMA_VERSION,
    Migration,
    SchemaTooNew,
    migrate,
    schema_version,
)
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from gateway.verify import verify_data_dir
from glucohub.accounts import open_accounts
from glucohub.cli import main
from glucohub.runtime import Running, run_hub
from tests.dashboards.test_real_hub import CSRF_RE, META_RE

FIXTURE = Path(__file__).resolve().parent.parent / "data" / "storage" / "c685acb"
PASSWORD = "correct horse battery staple"  # the fixture's accounts (see its README)


@pytest.fixture
def old_hub(tmp_path: Path) -> Path:
    """A copy of the database and keys made by commit c685acb."""
    data_dir = tmp_path / "hub"
    data_dir.mkdir(mode=0o700)
    shutil.copy(FIXTURE / DB_FILENAME, data_dir / DB_FILENAME)
    shutil.copytree(FIXTURE / "keys", data_dir / "keys")
    for key in (data_dir / "keys").glob("*.pem"):
        key.chmod(0o600)
    return data_dir


def rows(db_path: Path, query: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    finally:
        db.close()


def layout(db_path: Path) -> dict[str, object]:
    """Tables with their columns (name, type, not null, default, key) and the indexes."""
    db = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        shape: dict[str, object] = {
            t: sorted(tuple(c[1:]) for c in db.execute(f"PRAGMA table_info({t})")) for t in tables
        }
        shape["indexes"] = sorted(
            r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        )
        return shape
    finally:
        db.close()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_fixture_is_what_c685acb_made(old_hub: Path) -> None:
    db = old_hub / DB_FILENAME
    assert rows(db, "PRAGMA user_version") == [(0,)]
    columns = [r[1] for r in rows(db, "PRAGMA table_info(batches)")]
    assert "record_seed" not in columns  # format-1 batches only
    assert rows(db, "SELECT COUNT(*) FROM readings") == [(48,)]
    assert rows(db, "SELECT COUNT(*) FROM batches") == [(6,)]


def test_the_c685acb_database_upgrades_with_nothing_lost(old_hub: Path, tmp_path: Path) -> None:
    db = old_hub / DB_FILENAME
    before = {
        table: rows(db, f"SELECT * FROM {table} ORDER BY 1")
        for table in (
            "patients",
            "devices",
            "readings",
            "batches",
            "checkpoints",
            "ledger_events",
            "dash_users",
            "dash_grants",
        )
    }
    store = Store(old_hub)
    try:
        assert schema_version(store._db) == SCHEMA_VERSION
        assert [p.patient_id for p in store.list_patients()] == ["p1", "p2"]
        assert {d.device_id for d in store.list_devices()} == {"cgm-1", "meter-2"}
        assert store.count_readings() == 48
        (alert,) = store.alerts("p1")
        assert (alert.kind.value, alert.state.value, alert.acknowledged_by) == (
            "urgent_low",
            "acknowledged",
            "dr-ada",
        )
        assert alert.patient_acknowledged_by is None
        (letter,) = store.dead_letters()
        assert letter.reason == "out_of_range" and letter.payload == b'{"value": 5}'
        assert letter.payload_bytes == 12
        assert letter.payload_sha256 == hashlib.sha256(b'{"value": 5}').hexdigest()
    finally:
        store.close()
    for table, old_rows in before.items():
        after = rows(db, f"SELECT * FROM {table} ORDER BY 1")
        # Added columns come last and are empty in the old rows.
        assert [row[: len(old_rows[0])] for row in after] == old_rows, table
    assert rows(db, "SELECT COUNT(*) FROM batches WHERE record_seed IS NOT NULL") == [(0,)]
    # The upgraded file has the same tables, columns and indexes as a new database.
    Store(tmp_path / "new").close()
    assert layout(db) == layout(tmp_path / "new" / DB_FILENAME)

    async def accounts_work() -> None:
        accounts = open_accounts(db)
        try:
            login = await accounts.login("dr-ada", PASSWORD)
            assert login is not None and login[1].role.value == "clinician"
            assert await accounts.visible_patients(login[1]) == frozenset({"p1"})
            token = (FIXTURE / "api-token.txt").read_text().strip()
            user = await accounts.token_user(token)
            assert user is not None and user.username == "dr-ada"
            ann = await accounts.login("ada", PASSWORD)
            assert ann is not None and ann[1].patient_id == "p1"
        finally:
            accounts.close()

    asyncio.run(accounts_work())


def test_the_c685acb_database_upgrades_by_glucohub_migrate(
    old_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "migrate", "--data-dir", str(old_hub))
    assert code == 0 and f"schema version {SCHEMA_VERSION}" in out
    code, out, _ = cli(capsys, "ledger", "verify", "--data-dir", str(old_hub))
    assert (code, out) == (0, "OK: 6 batches, 48 readings, checkpoint 6 verifies\n")


def test_ledger_verify_never_upgrades_and_says_how(
    old_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (old_hub / DB_FILENAME).read_bytes()
    code, out, err = cli(capsys, "ledger", "verify", "--data-dir", str(old_hub))
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "schema version 0, older than" in err
    assert "glucohub migrate" in err
    assert (old_hub / DB_FILENAME).read_bytes() == before


async def test_an_upgraded_c685acb_hub_seals_format_2_batches_after_its_old_ones(
    old_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(old_hub),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        },
    )
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
    running = await asyncio.wait_for(ready, 20)
    try:
        now = datetime.now(UTC).replace(microsecond=0)
        new = [
            Reading(
                patient_id="p1",
                device_id="cgm-1",
                kind=ReadingKind.CGM_GLUCOSE,
                value=100.0 + seq,
                unit=Unit.MG_DL,
                time=now - timedelta(minutes=40 - seq),
                source=Source.MQTT,
                seq=seq,
            )
            for seq in range(36, 46)
        ]
        outcome = await running.hub.submit(origin=Origin(source=Source.MQTT), readings=new)
        assert outcome.accepted == 10
        assert running.url is not None
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as dr:
            await login_as(dr, running.url, "dr-ada")
            async with dr.get(f"{running.url}/patients/p1") as response:
                assert response.status == 200
        token = (FIXTURE / "api-token.txt").read_text().strip()
        async with (
            aiohttp.ClientSession() as api,
            api.get(
                f"{running.url}/api/v1/patients/p1/readings?hours=24",
                headers={"Authorization": f"Bearer {token}"},
            ) as response,
        ):
            assert response.status == 200
        for _ in range(100):
            if await running.reader.run(lambda s: s.count_unsealed()) == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    seeds = rows(old_hub / DB_FILENAME, "SELECT seq, record_seed IS NOT NULL FROM batches")
    assert seeds[:6] == [(seq, 0) for seq in range(6)]  # c685acb's format-1 batches
    assert len(seeds) > 6 and all(seeded for _, seeded in seeds[6:])  # format 2 after them
    code, out, _ = cli(capsys, "ledger", "verify", "--data-dir", str(old_hub))
    assert code == 0 and out.startswith(f"OK: {len(seeds)} batches, 58 readings"), out


async def login_as(session: aiohttp.ClientSession, base: str, username: str) -> None:
    """The dashboard's login form, with the fixture's password."""
    async with session.get(f"{base}/login") as page:
        token = CSRF_RE.search(await page.text())
    assert token is not None
    form = {"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    async with session.post(f"{base}/login", data=form) as response:
        assert response.status == 200 and META_RE.search(await response.text())


def test_a_database_from_before_numbered_migrations_keeps_everything(tmp_path: Path) -> None:
    """Hubs that ran the code before this change have every later column already and
    user_version 0: the probes skip what is there."""
    store = Store(tmp_path)
    store.add_ledger_event("p1", {"type": "note"})
    store.close()
    shape = layout(tmp_path / DB_FILENAME)
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute("PRAGMA user_version = 0")
    db.commit()
    db.close()
    Store(tmp_path).close()
    assert layout(tmp_path / DB_FILENAME) == shape
    assert rows(tmp_path / DB_FILENAME, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(tmp_path / DB_FILENAME, "SELECT body FROM ledger_events") == [('{"type":"note"}',)]


def test_each_migration_is_its_own_transaction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    migrate(db, datetime.now(UTC), upto=SCHEMA_VERSION - 2)
    broken = Migration(SCHEMA_VERSION, "half done", "CREATE TABLE half (x);\nSELECT nonsense")
    monkeypatch.setattr(
        sqlite_migrations, "MIGRATIONS", (*sqlite_migrations.MIGRATIONS[:-1], broken)
    )
    with pytest.raises(sqlite3.OperationalError, match="nonsense"):
        migrate(db, datetime.now(UTC))
    assert schema_version(db) == SCHEMA_VERSION - 1  # the migration before it is kept
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "half" not in tables
    db.close()


def newer(tmp_path: Path) -> Path:
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    return tmp_path


def test_a_database_from_a_newer_version_is_refused_by_every_open(tmp_path: Path) -> None:
    data_dir = newer(tmp_path)
    message = f"schema version {SCHEMA_VERSION + 1}, newer than this Glucohub's {SCHEMA_VERSION}"
    for open_it in (
        lambda: Store(data_dir),
        lambda: Store(data_dir, read_only=True),
        lambda: open_accounts(data_dir / DB_FILENAME),
    ):
        with pytest.raises(SchemaTooNew, match=message):
            open_it()
    assert rows(data_dir / DB_FILENAME, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]


def test_glucohub_run_refuses_a_newer_database_in_one_line(tmp_path: Path) -> None:
    data_dir = newer(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "glucohub", "run", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"GLUCOHUB_DASHBOARD__ENABLED": "false", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("glucohub: database ") and "newer than this Glucohub's" in lines[0]


@pytest.mark.parametrize("version", range(SCHEMA_VERSION))
def test_a_hub_stopped_at_any_earlier_schema_version_upgrades_and_verifies(
    old_hub: Path, version: int
) -> None:
    """A hub in the field may have been last upgraded by any earlier release: the c685acb
    data taken to each schema version in turn, then opened by this one."""
    db = sqlite3.connect(old_hub / DB_FILENAME, isolation_level=None)
    try:
        migrate(db, datetime(2026, 12, 1, tzinfo=UTC), upto=version)
        assert db.execute("PRAGMA user_version").fetchone()[0] == version
    finally:
        db.close()
    Store(old_hub).close()
    assert rows(old_hub / DB_FILENAME, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(old_hub / DB_FILENAME, "SELECT COUNT(*) FROM readings") == [(48,)]
    assert rows(old_hub / DB_FILENAME, "SELECT COUNT(*) FROM dash_users") == [(2,)]
    report = verify_data_dir(old_hub, "glucohub-local")
    assert report.ok and (report.batches, report.readings) == (6, 48), report.message
