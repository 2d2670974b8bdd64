"""axe-core (Deque's accessibility engine) for the browser tests, from npm.

`axe_source()` returns axe.min.js, installing `axe-core@4` with npm into a cache folder of
the checkout (`var/test-cache/axe`, git-ignored) the first time. No npm: `AxeMissing` with what
to install (the test fails with it, never skips). Run it in a page with `page.evaluate`, which
the page's Content Security Policy does not apply to, then `axe.run()`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

AXE_SPEC = "axe-core@4"
CACHE = Path(__file__).resolve().parents[2] / "var" / "test-cache" / "axe"
SCRIPT = CACHE / "node_modules" / "axe-core" / "axe.min.js"
INSTALL_HINT = "install npm (axe-core comes from npm): apt-get install npm"


class AxeMissing(RuntimeError):
    pass


def axe_source() -> str:
    if not SCRIPT.is_file():
        npm = shutil.which("npm")
        if npm is None:
            raise AxeMissing(INSTALL_HINT)
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), AXE_SPEC],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0 or not SCRIPT.is_file():
            raise AxeMissing(f"npm install {AXE_SPEC} failed: {done.stderr.strip()[-500:]}")
    return SCRIPT.read_text(encoding="utf-8")


# What a test asserts on: violations a user with a disability would be blocked or seriously
# hindered by (axe's "serious" and "critical" impacts).
BLOCKING = ("serious", "critical")
