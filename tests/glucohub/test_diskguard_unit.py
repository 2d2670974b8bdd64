"""The free-space guard's decisions: pause below the threshold, once; resume only with a
margin above it, so a disk hovering at the line does not flap."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from glucohub.diskguard import DiskGuard

MIB = 1024 * 1024


class Gate:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_ingest(self, reason: str) -> None:
        self.calls.append(f"pause: {reason}")

    def resume_ingest(self) -> None:
        self.calls.append("resume")


async def test_pause_once_and_resume_with_a_margin(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    free = [500 * MIB]
    gate = Gate()
    guard = DiskGuard(gate, tmp_path, 200, free=lambda path: free[0])
    with caplog.at_level(logging.WARNING, logger="glucohub.disk"):
        await guard.check()
        assert gate.calls == [] and guard.status() == {
            "free_mb": 500,
            "min_free_mb": 200,
            "paused": False,
        }
        free[0] = 199 * MIB
        await guard.check()
        await guard.check()  # still low: no second pause, no second CRITICAL
        assert gate.calls == ["pause: 199 MiB free, below storage.min_free_mb = 200"]
        free[0] = 215 * MIB  # above the threshold, not yet 10 % above it
        await guard.check()
        assert gate.calls[-1].startswith("pause") and guard.paused
        free[0] = 220 * MIB
        await guard.check()
        assert gate.calls[-1] == "resume" and not guard.paused
    levels = [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records]
    assert levels == [
        ("CRITICAL", "disk nearly full"),
        ("WARNING", "disk space is back (220 MiB free)"),
    ]
