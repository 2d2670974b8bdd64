"""`glucohub demo` end to end on PostgreSQL: simulated devices ingested, sealed, shown on the
dashboard to the demo clinician, exported, and `ledger verify` passes — with nothing of SQLite
in the data directory (which then holds only the ledger keys)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest

from gateway.store import DB_FILENAME
from gateway.verify import verify_data_dir
from tests.support.mosquitto import free_port


def count(url: str, sql: str) -> int:
    try:
        with psycopg.connect(url) as db:
            row = db.execute(sql).fetchone()
    except psycopg.Error:  # the schema is not there yet
        return 0
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_the_demo_runs_on_postgresql_from_ingest_to_dashboard(
    tmp_path: Path, postgres_url: str
) -> None:
    data_dir = tmp_path / "demo"
    port = free_port()
    env = {
        **os.environ,
        "GLUCOHUB_STORAGE__URL": postgres_url,
        "GLUCOHUB_DASHBOARD__PORT": str(port),
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.5",
    }
    demo = subprocess.Popen(
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
    try:
        assert demo.stdout is not None
        login: tuple[str, str] | None = None
        deadline = time.monotonic() + 90
        while login is None:
            assert time.monotonic() < deadline and demo.poll() is None, "the demo did not start"
            line = demo.stdout.readline()
            found = re.search(r"Demo clinician login: (\S+) / (\S+)", line)
            if found:
                login = (found.group(1), found.group(2))
        while count(postgres_url, "SELECT COALESCE(SUM(reading_count), 0) FROM batches") < 500:
            assert time.monotonic() < deadline and demo.poll() is None, "nothing sealed"
            time.sleep(0.3)

        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        base = f"http://127.0.0.1:{port}"
        with opener.open(base + "/healthz", timeout=10) as response:
            health = json.load(response)
        assert health["status"] in ("ok", "degraded")
        with opener.open(base + "/login", timeout=10) as response:
            form = response.read().decode()
        csrf = re.search(r'name="csrf_token" value="([^"]+)"', form)
        assert csrf is not None
        fields = {"username": login[0], "password": login[1], "csrf_token": csrf.group(1)}
        with opener.open(base + "/login", data=urlencode(fields).encode(), timeout=10) as response:
            triage = response.read().decode()
        patients = sorted(set(re.findall(r'href="/patients/([^"/?]+)"', triage)))
        assert len(patients) == 2, triage[:2000]
        with opener.open(f"{base}/patients/{patients[0]}", timeout=10) as response:
            page = response.read().decode()
        assert "mmol/L" in page
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, output[-3000:]
    assert "stopped cleanly" in output
    assert not (data_dir / DB_FILENAME).exists()  # everything is in PostgreSQL
    assert (data_dir / "keys").is_dir()

    exported = subprocess.run(
        [sys.executable, "-m", "glucohub", "export", "--data-dir", str(data_dir)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    stored = count(postgres_url, "SELECT COUNT(*) FROM readings")
    assert len(exported) == stored > 500
    report = verify_data_dir(data_dir, "glucohub-local", storage_url=postgres_url)
    assert report.ok and report.readings == stored, report.message
