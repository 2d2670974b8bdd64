"""House rule 2: ledger/ imports nothing else of ours, so a hospital can use it alone."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LEDGER = Path(__file__).resolve().parents[2] / "ledger"
THIRD_PARTY_ALLOWED = {"cryptography"}
# The pure cores of the transparency log must not do network I/O.
PURE = {"rfc6962.py", "note.py", "checkpoint.py", "cosignature.py", "tiles.py", "errors.py"}
NETWORK = {"asyncio", "aiohttp", "urllib", "http", "socket", "paho", "bleak"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_ledger_imports_only_stdlib_cryptography_and_itself() -> None:
    for path in sorted(LEDGER.glob("*.py")):
        for root in imported_roots(path):
            ok = root in sys.stdlib_module_names or root in THIRD_PARTY_ALLOWED or root == "ledger"
            assert ok, f"{path.name} imports {root}"


def test_pure_modules_do_no_network_io() -> None:
    for name in PURE:
        assert not imported_roots(LEDGER / name) & NETWORK, name
