"""`glucohub backup` / `glucohub restore` (glucohub/backup.py): encrypted, online, all or
nothing, and a restored hub that never seals over what it had already published."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import ConfigError
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin
from gateway.sealing import init_keys
from gateway.settings import load_settings
from gateway.storage.opening import open_storage
from gateway.storage.sqlite_backup import seal_hold
from gateway.units import Unit
from glucohub.cli import main
from glucohub.runtime import Running, run_hub
from ledger.rfc6962 import root_from_hashes
from tests.support.mosquitto import free_port

PASS = "a long backup passphrase 7"
CHUNK_BLOCK = 65536 + 16  # a sealed 64 KiB chunk


def cli(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *argv: str,
    stdin: str = "",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def new_hub(data_dir: Path) -> None:
    store = open_storage(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.close()


BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def readings(first: int, count: int) -> list[Reading]:
    return [
        Reading(
            patient_id="p1",
            device_id="cgm-1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=90.0 + seq % 80,
            unit=Unit.MG_DL,
            time=BASE + timedelta(minutes=seq),
            source=Source.MQTT,
            seq=seq,
        )
        for seq in range(first, first + count)
    ]


def settings_for(data_dir: Path, port: int | None = None, witness: str = "") -> object:
    env = {
        "GLUCOHUB_LEDGER__WITNESS_KEYS": witness,
        "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
        "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "4",
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
    }
    if port is None:
        env["GLUCOHUB_DASHBOARD__ENABLED"] = "false"
    else:
        env["GLUCOHUB_DASHBOARD__PORT"] = str(port)
    return load_settings(None, env)


@contextlib.asynccontextmanager
async def running_hub(
    data_dir: Path, port: int | None = None, witness: str = ""
) -> AsyncIterator[Running]:
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(
        run_hub(settings_for(data_dir, port, witness), stop=stop, on_ready=ready.set_result)  # type: ignore[arg-type]
    )
    try:
        yield await asyncio.wait_for(ready, 30)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def ingest(running: Running, batch: list[Reading]) -> None:
    for start in range(0, len(batch), 4):
        await running.hub.submit(
            origin=Origin(source=Source.MQTT), readings=batch[start : start + 4]
        )


async def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def db_rows(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{data_dir / 'glucohub.sqlite3'}?mode=ro", uri=True)
    try:
        return list(db.execute(sql))
    finally:
        db.close()


def tree_size(data_dir: Path) -> int:
    return int(db_rows(data_dir, "SELECT COALESCE(MAX(size), 0) FROM tree_state")[0][0])


def leaves(data_dir: Path) -> list[bytes]:
    return [bytes(r[0]) for r in db_rows(data_dir, "SELECT leaf_hash FROM batches ORDER BY seq")]


def exported(data_dir: Path) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-m", "glucohub", "export", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def ledger_verify(data_dir: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "glucohub", "ledger", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.fixture
def sealed_hub(tmp_path: Path) -> Path:
    """A hub that has run: keys (private and public), 12 readings sealed."""
    data_dir = tmp_path / "hub"
    new_hub(data_dir)

    async def go() -> None:
        async with running_hub(data_dir) as running:
            await ingest(running, readings(0, 12))

    asyncio.run(go())
    assert tree_size(data_dir) >= 1
    return data_dir


def make_backup(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    out: Path,
    *extra: str,
) -> None:
    code, stdout, err = cli(
        capsys,
        monkeypatch,
        "backup",
        "--data-dir",
        str(data_dir),
        "--out",
        str(out),
        "--passphrase-stdin",
        *extra,
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert f"wrote {out}" in stdout


# -- the file ---------------------------------------------------------------------------


def test_backup_is_private_encrypted_and_restores_a_verifying_ledger(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "hub.backup"
    make_backup(capsys, monkeypatch, sealed_hub, out)
    assert out.stat().st_mode & 0o777 == 0o600
    data = out.read_bytes()
    assert data.startswith(b"GHBACKUP")
    assert b"SQLite format 3" not in data and b"cgm-1" not in data  # nothing in the clear
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    assert [p.name for p in sealed_hub.iterdir() if p.name.startswith(".")] == []

    restored = tmp_path / "restored"
    code, stdout, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(out),
        "--data-dir",
        str(restored),
        "--passphrase-stdin",
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert "restored 12 readings" in stdout
    assert (restored / "glucohub.sqlite3").stat().st_mode & 0o777 == 0o600
    assert exported(restored) == exported(sealed_hub)
    assert leaves(restored) == leaves(sealed_hub)
    assert f"OK: {tree_size(sealed_hub)} batches" in ledger_verify(restored)


def test_keys_only_with_keys(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    without, with_keys = tmp_path / "a.backup", tmp_path / "b.backup"
    make_backup(capsys, monkeypatch, sealed_hub, without)
    make_backup(capsys, monkeypatch, sealed_hub, with_keys, "--with-keys")
    for backup_file, target, says in (
        (without, "r1", "no private keys in the backup"),
        (with_keys, "r2", "keys restored"),
    ):
        code, out, err = cli(
            capsys,
            monkeypatch,
            "restore",
            str(backup_file),
            "--data-dir",
            str(tmp_path / target),
            "--passphrase-stdin",
            stdin=PASS + "\n",
        )
        assert code == 0, err
        assert says in out
    # public halves always (so `ledger verify` works), private keys only when asked
    assert sorted(p.name for p in (tmp_path / "r1" / "keys").iterdir()) == [
        "batch-key.jwk",
        "log-key.vkey",
    ]
    keys = tmp_path / "r2" / "keys"
    for name in ("batch-key.pem", "log-key.pem"):
        assert (keys / name).read_bytes() == (sealed_hub / "keys" / name).read_bytes()
        assert (keys / name).stat().st_mode & 0o777 == 0o600
    # the restored hub without its keys refuses to start rather than begin another log
    with pytest.raises(ConfigError, match="restore the hub's keys"):
        init_keys(tmp_path / "r1", None)
    assert not (tmp_path / "r1" / "keys" / "log-key.pem").exists()


@pytest.mark.parametrize(
    ("label", "spoil", "message"),
    [
        ("wrong passphrase", None, "wrong passphrase"),
        ("flipped byte in the header", lambda b: flip(b, 20), "wrong passphrase"),
        ("flipped byte in the first chunk", lambda b: flip(b, 53 + 1000), "damaged"),
        ("flipped byte in the middle", lambda b: flip(b, len(b) // 2), "damaged"),
        ("flipped last byte", lambda b: flip(b, len(b) - 1), "damaged"),
        ("cut at a chunk boundary", lambda b: b[: 53 + CHUNK_BLOCK], "damaged"),
        ("cut mid-chunk", lambda b: b[: len(b) // 2], "damaged"),
        ("last byte missing", lambda b: b[:-1], "damaged"),
        ("bytes appended", lambda b: b + b[100:200], "damaged"),
        ("empty file", lambda b: b"", "cut short"),
        ("not a backup", lambda b: b"SQLite format 3\0" + b[16:], "not a Glucohub backup"),
    ],
)
def test_a_bad_file_or_passphrase_is_one_line_exit_2_and_nothing_written(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    label: str,
    spoil: Callable[[bytes], bytes] | None,
    message: str,
) -> None:
    good = tmp_path / "good.backup"
    make_backup(capsys, monkeypatch, sealed_hub, good, "--with-keys")
    assert good.stat().st_size > 53 + 2 * CHUNK_BLOCK  # several chunks
    bad = tmp_path / "bad.backup"
    bad.write_bytes(good.read_bytes() if spoil is None else spoil(good.read_bytes()))
    passphrase = "not the passphrase" if spoil is None else PASS
    fresh, empty = tmp_path / "fresh", tmp_path / "empty"
    empty.mkdir()
    for target in (fresh, empty):
        code, out, err = cli(
            capsys,
            monkeypatch,
            "restore",
            str(bad),
            "--data-dir",
            str(target),
            "--passphrase-stdin",
            stdin=passphrase + "\n",
        )
        assert code == 2, out + err
        assert err.startswith("glucohub: ") and err.count("\n") == 1, err
        assert message in err and "Traceback" not in err
        assert out == ""
    assert not fresh.exists()
    assert list(empty.iterdir()) == []


def flip(data: bytes, position: int) -> bytes:
    spoiled = bytearray(data)
    spoiled[position] ^= 0x40
    return bytes(spoiled)


def test_restore_never_overwrites_without_force(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup_file = tmp_path / "hub.backup"
    make_backup(capsys, monkeypatch, sealed_hub, backup_file)
    other = tmp_path / "other"
    new_hub(other)  # a hub with no readings, and a WAL beside its database
    before = (other / "glucohub.sqlite3").read_bytes()
    argv = ("restore", str(backup_file), "--data-dir", str(other), "--passphrase-stdin")
    code, _, err = cli(capsys, monkeypatch, *argv, stdin=PASS + "\n")
    assert code == 2 and "exists; --force replaces it" in err
    assert (other / "glucohub.sqlite3").read_bytes() == before
    code, _, err = cli(capsys, monkeypatch, *argv, "--force", stdin=PASS + "\n")
    assert code == 0, err
    assert exported(other) == exported(sealed_hub)
    ledger_verify(other)


def test_restore_never_replaces_the_database_under_a_running_hub(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--force` with the hub still running on the directory: refused in one line, nothing
    replaced (a running hub holds D/hub.lock, as `glucohub run` takes it)."""
    backup_file = tmp_path / "hub.backup"
    make_backup(capsys, monkeypatch, sealed_hub, backup_file)
    other = tmp_path / "other"
    new_hub(other)
    before = (other / "glucohub.sqlite3").read_bytes()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)",
         str(other / "hub.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        argv = ("restore", str(backup_file), "--data-dir", str(other), "--passphrase-stdin")
        code, _, err = cli(capsys, monkeypatch, *argv, "--force", stdin=PASS + "\n")
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    assert code == 2
    assert err == f"glucohub: another hub is running on data directory {other}; stop it first\n"
    assert (other / "glucohub.sqlite3").read_bytes() == before


def test_backup_refuses_a_postgresql_hub_in_one_line(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLUCOHUB_STORAGE__URL", "postgresql://hub:secret@db.example:5432/hub")
    out = tmp_path / "pg.backup"
    code, stdout, err = cli(
        capsys, monkeypatch, "backup", "--data-dir", str(sealed_hub), "--out", str(out)
    )
    assert code == 2 and err.count("\n") == 1
    assert "PostgreSQL" in err and "pg_dump" in err and "secret" not in err
    assert not out.exists() and stdout == ""


def test_the_passphrase_from_the_environment(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GLUCOHUB_BACKUP_PASSPHRASE", PASS)
    out = tmp_path / "env.backup"
    code, stdout, err = cli(
        capsys, monkeypatch, "backup", "--data-dir", str(sealed_hub), "--out", str(out)
    )
    assert code == 0, err
    assert PASS not in stdout + err
    monkeypatch.delenv("GLUCOHUB_BACKUP_PASSPHRASE")
    code, _, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(out),
        "--data-dir",
        str(tmp_path / "r"),
        "--passphrase-stdin",
        stdin=PASS + "\n",
    )
    assert code == 0, err


def test_a_backup_of_an_old_database_is_restored_upgraded(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database from before numbered migrations (commit c685acb, schema version 0): the
    backup carries it as it is, restore upgrades it, and its six batches verify."""
    old = tmp_path / "old"
    shutil.copytree(Path(__file__).parents[1] / "data" / "storage" / "c685acb", old)
    backup_file = tmp_path / "old.backup"
    make_backup(capsys, monkeypatch, old, backup_file, "--with-keys")
    assert db_rows(old, "PRAGMA user_version") == [(0,)]  # backup never writes the source
    restored = tmp_path / "restored"
    code, out, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(backup_file),
        "--data-dir",
        str(restored),
        "--passphrase-stdin",
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert "restored 48 readings and a log of 6 batches" in out
    assert db_rows(restored, "PRAGMA user_version")[0][0] >= 7
    assert "OK: 6 batches, 48 readings" in ledger_verify(restored)


# -- the published checkpoint ---------------------------------------------------------------


def witness_cmd(log_url: str, log_key: str, state_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "glucohub",
        "witness",
        "--log-url",
        log_url,
        "--log-key",
        log_key,
        "--state-dir",
        str(state_dir),
        "--key-file",
        str(state_dir.parent / "witness.pem"),
        *extra,
    ]


def witness_vkey(state_dir: Path) -> str:
    """Create the witness's key; its verifier key, for the hub's ledger.witness_keys."""
    printed = subprocess.run(
        witness_cmd("x", "x", state_dir, "--print-vkey"), capture_output=True, text=True, check=True
    )
    return printed.stdout.strip()


def witness_state(state_dir: Path) -> dict[str, object]:
    state: dict[str, object] = json.loads((state_dir / "state.json").read_text())
    return state


def get_json(url: str) -> dict[str, object]:
    try:
        body = urllib.request.urlopen(url, timeout=10).read()
    except urllib.error.HTTPError as exc:  # /healthz says 503 when degraded
        body = exc.read()
    result: dict[str, object] = json.loads(body)
    return result


async def test_an_old_backup_never_seals_over_the_published_log(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = tmp_path / "hub"
    new_hub(hub)
    async with running_hub(hub) as running:
        await ingest(running, readings(0, 12))
    old_size, old_leaves = tree_size(hub), leaves(hub)
    old = tmp_path / "old.backup"
    await asyncio.to_thread(make_backup, capsys, monkeypatch, hub, old, "--with-keys")

    # After the backup the hub seals more and a witness sees (and cosigns) the larger log.
    witness_dir = tmp_path / "witness"
    vkey = witness_vkey(witness_dir)
    async with running_hub(hub, port=0, witness=vkey) as running:
        await ingest(running, readings(12, 12))
        await wait_until(lambda: running.hub.health()["ledger"]["tree_size"] > old_size, "seal")  # type: ignore[index]
        once = await asyncio.to_thread(
            subprocess.run,
            witness_cmd(f"{running.url}/log", running.keys.log_verifier_key, witness_dir, "--once"),
            capture_output=True,
            text=True,
        )
        assert once.returncode == 0, once.stdout + once.stderr
        log_key = running.keys.log_verifier_key
    published = witness_state(witness_dir)
    published_size = int(published["size"])  # type: ignore[call-overload]
    assert published_size > old_size

    # Restored without the published size: held, and it says how to give it.
    restored = tmp_path / "restored"
    argv = ("restore", str(old), "--data-dir", str(restored), "--passphrase-stdin")
    code, out, err = await asyncio.to_thread(cli, capsys, monkeypatch, *argv, stdin=PASS + "\n")
    assert code == 0, err
    assert "sealing held" in out and "--published-size" in out
    # Given the witness's state: still held, because batches old_size.. were published.
    code, out, err = await asyncio.to_thread(
        cli,
        capsys,
        monkeypatch,
        "restore",
        "--data-dir",
        str(restored),
        "--witness-state",
        str(witness_dir / "state.json"),
    )
    assert code == 0, err
    assert f"reuse batch numbers {old_size} to {published_size - 1}" in out
    assert "restore a newer backup, or obtain the missing batches" in out

    caplog.set_level(logging.CRITICAL)
    async with running_hub(restored, port=0, witness=vkey) as running:
        await ingest(running, readings(24, 12))  # ingest goes on: stored, not sealed
        await asyncio.sleep(1.0)  # several batch_max_seconds
        health = await asyncio.to_thread(get_json, f"{running.url}/healthz")
        checkpoint = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{running.url}/log/checkpoint", timeout=10).read()
        )
        again = await asyncio.to_thread(
            subprocess.run,
            witness_cmd(f"{running.url}/log", log_key, witness_dir, "--once"),
            capture_output=True,
            text=True,
        )
    assert health["status"] == "degraded"
    held = health["ledger"]["sealing_held"]  # type: ignore[index]
    assert "reuse batch numbers" in held
    assert any(
        "SEALING HELD" in r.getMessage() for r in caplog.records if r.levelname == "CRITICAL"
    )
    assert tree_size(restored) == old_size and leaves(restored) == old_leaves
    assert len(db_rows(restored, "SELECT id FROM readings")) == 12 + 12  # old + new
    assert db_rows(restored, "SELECT MAX(size) FROM checkpoints") == [(old_size,)]
    outbox = db_rows(restored, "SELECT payload FROM outbox")
    assert all(f"\n{published_size}\n".encode() not in bytes(p[0]) for p in outbox)
    # What the hub serves is its old, smaller checkpoint: the witness calls it a rollback,
    # never a fork (no second root for a size it had seen).
    assert checkpoint.decode().split("\n")[1] == str(old_size)
    assert again.returncode == 3
    alarm = json.loads((witness_dir / "alarm.json").read_text())
    assert "rollback" in json.dumps(alarm) and "fork" not in json.dumps(alarm)
    assert witness_state(witness_dir) == published


async def test_a_running_witness_keeps_accepting_a_hub_restored_from_a_current_backup(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = tmp_path / "hub"
    new_hub(hub)
    async with running_hub(hub) as running:
        await ingest(running, readings(0, 12))
    port = free_port()
    witness_dir = tmp_path / "witness"
    vkey = witness_vkey(witness_dir)
    log_url = f"http://127.0.0.1:{port}/log"
    backup_file = tmp_path / "now.backup"
    async with running_hub(hub, port=port, witness=vkey) as running:
        size = running.hub.health()["ledger"]["tree_size"]  # type: ignore[index]
        witness = subprocess.Popen(  # noqa: ASYNC220 (started once, stopped at the end)
            witness_cmd(log_url, running.keys.log_verifier_key, witness_dir, "--interval", "0.2"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            await wait_until(
                lambda: (
                    (witness_dir / "state.json").exists()
                    and witness_state(witness_dir)["cosigned_size"] == size
                ),
                "the witness to cosign",
            )
            # online: taken from the running hub
            await asyncio.to_thread(
                make_backup, capsys, monkeypatch, hub, backup_file, "--with-keys"
            )
        except BaseException:
            witness.kill()
            raise
    try:
        restored = tmp_path / "restored"
        code, out, err = await asyncio.to_thread(
            cli,
            capsys,
            monkeypatch,
            "restore",
            str(backup_file),
            "--data-dir",
            str(restored),
            "--passphrase-stdin",
            "--witness-state",
            str(witness_dir / "state.json"),
            stdin=PASS + "\n",
        )
        assert code == 0, err
        assert "the published checkpoint matches" in out
        async with running_hub(restored, port=port, witness=vkey) as running:
            await ingest(running, readings(12, 12))
            await wait_until(
                lambda: witness_state(witness_dir)["size"] == tree_size(restored) > size,
                "the witness to accept the restored hub's new checkpoint",
            )
            assert running.hub.health()["status"] == "ok"
        assert witness.poll() is None  # still running: no alarm
        assert not (witness_dir / "alarm.json").exists()
        assert leaves(restored)[:size] == leaves(hub)[:size]
        ledger_verify(restored)
    finally:
        witness.terminate()
        witness.wait(10)


def test_the_published_size_must_match_the_restored_root(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backup_file = tmp_path / "hub.backup"
    make_backup(capsys, monkeypatch, sealed_hub, backup_file, "--with-keys")
    restored = tmp_path / "restored"
    size = tree_size(sealed_hub)
    true_root = root_from_hashes(leaves(sealed_hub))
    other_root = bytes(32)
    argv = ("restore", str(backup_file), "--data-dir", str(restored), "--passphrase-stdin")
    code, out, err = cli(
        capsys,
        monkeypatch,
        *argv,
        "--published-size",
        str(size),
        "--published-root",
        other_root.hex(),
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert "root mismatch" in out
    # the right root, in base64 as a witness's state and checkpoints spell it
    code, out, err = cli(
        capsys,
        monkeypatch,
        "restore",
        "--data-dir",
        str(restored),
        "--published-size",
        str(size),
        "--published-root",
        base64.b64encode(true_root).decode(),
    )
    assert code == 0, err
    assert "matches" in out
    assert db_rows(restored, "SELECT value FROM meta WHERE key = 'restored'") == []
    # a hub that is not held has nothing to learn
    code, _, err = cli(
        capsys,
        monkeypatch,
        "restore",
        "--data-dir",
        str(restored),
        "--published-size",
        str(size),
        "--published-root",
        true_root.hex(),
    )
    assert code == 2 and "not held after a restore" in err
    # a published size smaller than the backup's log (the backup is newer): resumes too
    assert size >= 2
    code, out, err = cli(
        capsys,
        monkeypatch,
        *argv[:3],
        str(tmp_path / "newer"),
        "--passphrase-stdin",
        "--published-size",
        str(size - 1),
        "--published-root",
        root_from_hashes(leaves(sealed_hub)[: size - 1]).hex(),
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert "matches" in out


def test_every_observer_counts_the_largest_published_size_wins(
    sealed_hub: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A witness that lagged saw the backup's size; the clinic saw two batches more. The
    witness alone would let the hub seal; with both it stays held."""
    backup_file = tmp_path / "hub.backup"
    make_backup(capsys, monkeypatch, sealed_hub, backup_file, "--with-keys")
    size = tree_size(sealed_hub)
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "origin": "glucohub.local/glucohub-local",
                "size": size,
                "root_hash": base64.b64encode(root_from_hashes(leaves(sealed_hub))).decode(),
                "cosigned_size": size,
            }
        )
    )
    code, out, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(backup_file),
        "--data-dir",
        str(tmp_path / "r"),
        "--passphrase-stdin",
        "--witness-state",
        str(state),
        "--published-size",
        str(size + 2),
        "--published-root",
        "ab" * 32,
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert f"reuse batch numbers {size} to {size + 1}" in out
    # a witness state of another hub is refused, naming both
    monkeypatch.setenv("GLUCOHUB_HUB__HUB_ID", "another-hub")
    code, _, err = cli(
        capsys,
        monkeypatch,
        "restore",
        "--data-dir",
        str(tmp_path / "r"),
        "--witness-state",
        str(state),
    )
    assert code == 2 and "not of 'glucohub.local/another-hub'" in err


# -- online, while a hub process ingests over MQTT ----------------------------------------


@pytest.mark.broker
@pytest.mark.slow
def test_round_trip_while_the_hub_ingests_over_mqtt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.support.mosquitto import Mosquitto

    total = 6000
    topic = "glucohub/v1/p1/cgm-1/readings"
    hub = tmp_path / "hub"
    new_hub(hub)

    def stored() -> int:
        try:
            return len(db_rows(hub, "SELECT id FROM readings"))
        except sqlite3.Error:
            return 0

    payloads = [
        json.dumps(
            {
                "kind": "cgm_glucose",
                "value": 80 + seq % 150,
                "unit": "mg/dL",
                "time": (BASE + timedelta(seconds=2 * seq)).isoformat(),
                "seq": seq,
            }
        )
        for seq in range(total)
    ]
    with Mosquitto(tmp_path / "broker") as broker:
        env = {
            **os.environ,
            "GLUCOHUB_MQTT__URL": broker.url,
            "GLUCOHUB_MQTT__CLIENT_ID": "backup-hub",
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
            "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "200",
        }
        log = (tmp_path / "hub.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "glucohub", "run", "--data-dir", str(hub)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id="backup-uploader")
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        try:
            deadline = time.monotonic() + 60
            while stored() == 0:  # until the hub's subscription exists (seq 0 dedupes)
                assert time.monotonic() < deadline, "the hub never subscribed"
                client.publish(topic, payloads[0], qos=1).wait_for_publish(5)
                time.sleep(0.2)
            infos: list[paho.MQTTMessageInfo] = []

            def publish() -> None:  # the uploader, on its own thread: ~1,000 readings a second
                for seq in range(1, total):
                    infos.append(client.publish(topic, payloads[seq], qos=1))
                    if seq % 50 == 0:
                        time.sleep(0.05)

            uploader = threading.Thread(target=publish)
            uploader.start()
            try:
                deadline = time.monotonic() + 60
                while stored() < total // 4:
                    assert time.monotonic() < deadline, "ingest never got going"
                    time.sleep(0.05)
                before = stored()
                make_backup(capsys, monkeypatch, hub, tmp_path / "live.backup", "--with-keys")
                during = (before, stored())
            finally:
                uploader.join()
            for info in infos:
                info.wait_for_publish(30)
            deadline = time.monotonic() + 60
            while stored() < total:
                assert time.monotonic() < deadline, f"only {stored()} of {total} stored"
                time.sleep(0.2)
            proc.terminate()
            assert proc.wait(60) == 0
        finally:
            client.loop_stop()
            client.disconnect()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
    before, after = during
    assert 0 < before < after < total  # the hub stored readings while the backup ran

    live = tmp_path / "live"
    code, _, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(tmp_path / "live.backup"),
        "--data-dir",
        str(live),
        "--passphrase-stdin",
        stdin=PASS + "\n",
    )
    assert code == 0, err
    ledger_verify(live)
    hold = seal_hold(live)  # restored without the published size: the hub will not seal
    assert hold is not None and "last checkpoint this hub published is unknown" in hold
    final, snapshot = exported(hub), exported(live)
    assert before <= len(snapshot) <= after
    assert set(snapshot) <= set(final)  # each restored reading is the one stored, unchanged
    restored_leaves = leaves(live)
    assert restored_leaves == leaves(hub)[: len(restored_leaves)]  # the same ledger, a prefix

    # Once ingest has stopped, a backup restores exactly what the hub holds.
    make_backup(capsys, monkeypatch, hub, tmp_path / "final.backup")
    code, _, err = cli(
        capsys,
        monkeypatch,
        "restore",
        str(tmp_path / "final.backup"),
        "--data-dir",
        str(tmp_path / "final"),
        "--passphrase-stdin",
        stdin=PASS + "\n",
    )
    assert code == 0, err
    assert exported(tmp_path / "final") == final and len(final) == total
    ledger_verify(tmp_path / "final")
