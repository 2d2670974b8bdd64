"""The real `glucohub demo` process: SIGTERM mid-batch seals what is stored; SIGKILL loses
nothing that was stored, and the next start seals it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from gateway.store import DB_FILENAME
from gateway.verify import verify_data_dir


def start_demo(data_dir: Path, *, batch_seconds: str = "3600") -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "GLUCOHUB_DASHBOARD__ENABLED": "false",
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": batch_seconds,
        "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "100000",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "glucohub",
            "demo",
            "--data-dir",
            str(data_dir),
            "--patients",
            "2",
            "--history-days",
            "1",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def counts(data_dir: Path) -> tuple[int, int]:
    """(stored readings, sealed readings) as another process sees them."""
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        stored = db.execute("SELECT COUNT(*) FROM readings").fetchone()[0]
        sealed = db.execute("SELECT COUNT(*) FROM readings WHERE batch_seq IS NOT NULL").fetchone()[
            0
        ]
    finally:
        db.close()
    return int(stored), int(sealed)


def wait_for_readings(data_dir: Path, minimum: int, proc: subprocess.Popen[str]) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        if (data_dir / DB_FILENAME).exists():
            try:
                stored, _ = counts(data_dir)
            except sqlite3.OperationalError:
                stored = 0
            if stored >= minimum:
                return stored
        time.sleep(0.2)
    raise AssertionError(f"fewer than {minimum} readings stored within 60 s")


def test_sigterm_mid_batch_seals_the_open_batch(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    proc = start_demo(data_dir)
    try:
        wait_for_readings(data_dir, 500, proc)
        stored, sealed = counts(data_dir)
        assert sealed == 0  # the batch is still open: it would only seal after an hour
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    stored_after, sealed_after = counts(data_dir)
    assert stored_after >= stored
    assert sealed_after == stored_after, "every stored reading is sealed at shutdown"
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok and report.readings == stored_after, report.message
    assert "stopped cleanly" in output


def test_sigkill_loses_nothing_stored(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    proc = start_demo(data_dir, batch_seconds="0.5")
    try:
        wait_for_readings(data_dir, 300, proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    stored_at_kill, _ = counts(data_dir)

    again = start_demo(data_dir, batch_seconds="0.5")
    try:
        # New readings prove the restarted hub is up (and its signal handlers installed).
        wait_for_readings(data_dir, stored_at_kill + 1, again)
        time.sleep(1.0)
        again.send_signal(signal.SIGTERM)
        output, _ = again.communicate(timeout=60)
    finally:
        again.kill()
    assert again.returncode == 0, output
    stored, sealed = counts(data_dir)
    assert stored >= stored_at_kill and sealed == stored
    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message
