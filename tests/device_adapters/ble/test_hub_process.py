"""A real hub process with a BLE meter whose clock is at the year 9999 and a device whose backend
raises on its first connects: the hub stays up, keeps storing the healthy strap's readings, says
clearly in its log what happened, and stops cleanly on SIGTERM with a ledger that verifies."""

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

ROOT = Path(__file__).resolve().parents[3]


def _query(data_dir: Path, sql: str) -> list[tuple[object, ...]]:
    if not (data_dir / DB_FILENAME).exists():
        return []
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []  # tables not created yet
    finally:
        db.close()


def _per_device(data_dir: Path) -> dict[str, int]:
    rows = _query(data_dir, "SELECT device_id, COUNT(*) FROM readings GROUP BY device_id")
    return {str(device): int(str(n)) for device, n in rows}


def test_year_9999_meter_and_crashing_backend_do_not_stop_the_hub(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    env = {
        **os.environ,
        "GLUCOHUB_DASHBOARD__ENABLED": "false",
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.device_adapters.ble.hub_with_bad_devices", str(data_dir)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the hub exited"
            counts = _per_device(data_dir)
            wanted = {"meter-9999": 3, "hr-buggy": 1, "hr-ok": 10}
            if all(counts.get(device, 0) >= n for device, n in wanted.items()):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"readings never arrived: {counts}")
        time.sleep(1.5)
        assert proc.poll() is None, "the hub exited"
        later = _per_device(data_dir)
        assert later["hr-ok"] > counts["hr-ok"], "the strap's readings kept being stored"
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, output
    assert "stopped cleanly" in output

    seqs = _query(data_dir, "SELECT seq FROM readings WHERE device_id = 'meter-9999' ORDER BY seq")
    assert seqs == [(1,), (2,), (4,)]
    letters = _query(data_dir, "SELECT device_id, reason, detail FROM dead_letters")
    assert [(d, r) for d, r, _ in letters] == [("meter-9999", "malformed")]
    assert "9999-12-31 23:30:00 (America/New_York)" in str(letters[0][2])
    lines = output.splitlines()
    assert any(
        "WARNING" in line and "meter-9999" in line and "out of range (years 1-9999)" in line
        for line in lines
    ), output
    crashes = [line for line in lines if "ERROR glucohub.supervision" in line]
    assert len(crashes) == 2, output
    assert all(
        "ble:hr-buggy" in line and "KeyError: 'backend state lost'" in line for line in crashes
    )
    assert "OverflowError" not in output and "Traceback" not in output

    report = verify_data_dir(data_dir, "glucohub-local")
    assert report.ok, report.message
