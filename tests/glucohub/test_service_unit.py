"""deploy/glucohub.service: a unit systemd accepts, run as a notify service with a watchdog."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "glucohub.service"


def _service() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_unit_waits_for_ready_and_watches_the_hub() -> None:
    service = _service()
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) >= 10  # two pings per interval, room for a slow card
    assert service["Restart"] in ("on-failure", "always")  # a watchdog kill restarts it
    assert service["ExecStart"].split()[1] == "run"


def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    glucohub = Path(sys.executable).with_name("glucohub")
    assert glucohub.is_file(), "install the project: pip install -e '.[dev]'"
    # The unit as installed names /opt/glucohub; verify checks that ExecStart exists.
    unit = tmp_path / "glucohub.service"
    unit.write_text(UNIT.read_text().replace("/opt/glucohub/bin/glucohub", str(glucohub)))
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    # A misspelt value is only a warning (exit 0): any output at all is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
