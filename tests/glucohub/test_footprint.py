"""The hub's process keeps the heavy numeric and PDF libraries out: a clinician opening the
triage list, a patient page (with its 7/14/30-day metrics) and the AGP report as PDF has
them computed in the report worker, so a Raspberry Pi's hub does not carry pandas (~45 MiB),
numpy (~15 MiB) or fpdf2 for as long as it runs."""

from __future__ import annotations

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

import pytest

from tests.support.mosquitto import free_port

# Shared objects that show in /proc/<pid>/maps once these packages are imported.
HEAVY = {
    "numpy": re.compile(r"/numpy/_core/_multiarray_umath"),
    "pandas": re.compile(r"/pandas/_libs/"),
    "Pillow (fpdf2)": re.compile(r"/PIL/_imaging"),
}


def loaded(pid: int) -> set[str]:
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {name for name, pattern in HEAVY.items() if pattern.search(maps)}


@pytest.mark.slow
def test_pages_and_reports_leave_pandas_and_numpy_out_of_the_hub(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GLUCOHUB_")}
    command = [sys.executable, "-m", "glucohub", "demo", "--data-dir", str(tmp_path / "demo")]
    demo = subprocess.Popen(
        [*command, "--port", str(port), "--patients", "1", "--history-days", "2"],
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
            found = re.search(r"Demo clinician login: (\S+) / (\S+)", demo.stdout.readline())
            if found:
                login = (found.group(1), found.group(2))
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        base = f"http://127.0.0.1:{port}"
        with opener.open(base + "/login", timeout=10) as response:
            csrf = re.search(r'name="csrf_token" value="([^"]+)"', response.read().decode())
        assert csrf is not None
        fields = {"username": login[0], "password": login[1], "csrf_token": csrf.group(1)}
        with opener.open(base + "/login", data=urlencode(fields).encode(), timeout=30) as response:
            triage = response.read().decode()
        [patient] = sorted(set(re.findall(r'href="/patients/([^"/?]+)"', triage)))
        with opener.open(f"{base}/patients/{patient}", timeout=60) as response:
            page = response.read().decode()
        # The metrics were computed (in the worker): the page's table has 7, 14 and 30 days.
        assert "<th>7 days</th><th>14 days</th><th>30 days</th>" in page and "GMI" in page
        with opener.open(f"{base}/patients/{patient}/report.pdf", timeout=60) as response:
            assert response.read(5) == b"%PDF-"
        assert loaded(demo.pid) == set()
    finally:
        demo.send_signal(signal.SIGTERM)
        output = demo.communicate(timeout=60)[0]
    assert demo.returncode == 0, output[-3000:]
