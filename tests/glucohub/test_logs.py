"""The hub's log: the journal's format under systemd, or a file that rotates."""

from __future__ import annotations

import logging
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.settings import HubSettings
from glucohub.logs import log_handler


def test_a_log_file_rotates_and_keeps_so_many_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "glucohub.log"
    hub = HubSettings(log_file=str(path), log_file_max_mb=10 / 1024, log_file_backups=2)
    handler = log_handler(hub, {})
    logger = logging.getLogger("test-rotation")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(200):  # ~100 KiB: ten files' worth at 10 KiB each
            logger.warning("record %03d %s", i, "x" * 480)
    finally:
        logger.removeHandler(handler)
        handler.close()
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["glucohub.log", "glucohub.log.1", "glucohub.log.2"]
    for name in files:
        file = path.parent / name
        assert file.stat().st_size <= 10 * 1024
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, name
    assert "record 199 " in path.read_text()
    assert "record 199 " not in (path.parent / "glucohub.log.1").read_text()
    assert "record 000 " not in "".join((path.parent / n).read_text() for n in files)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_under_systemd_the_journal_stamps_the_time() -> None:
    record = logging.LogRecord("glucohub", logging.WARNING, __file__, 1, "low battery", (), None)
    journal = log_handler(HubSettings(), {"JOURNAL_STREAM": "8:12345"})
    assert journal.format(record) == "WARNING glucohub: low battery"
    terminal = log_handler(HubSettings(), {})
    assert terminal.format(record).endswith(" WARNING glucohub: low battery")
    assert terminal.format(record)[:4].isdigit()  # starts with the time


@pytest.mark.slow
def test_glucohub_run_logs_to_the_configured_file(tmp_path: Path) -> None:
    log_file = tmp_path / "log" / "hub.log"
    env = {
        **os.environ,
        "GLUCOHUB_DASHBOARD__ENABLED": "false",
        "GLUCOHUB_HUB__LOG_FILE": str(log_file),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "glucohub", "run", "--data-dir", str(tmp_path / "hub")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while "ready: ok: 0 queued" not in (log_file.read_text() if log_file.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "stopped cleanly" in log_file.read_text()
    assert err == "" and out == ""  # all of it went to the file
