"""House rules for this package, checked from the source: paho only in client.py, pure
modules free of I/O libraries, and only the gateway's vocabulary imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[3] / "device_adapters" / "mqtt"
GATEWAY_VOCABULARY = {"model", "units", "clock", "errors", "protocols", "settings", "topics"}
PURE = {"payload.py", "topics.py", "backoff.py", "acks.py", "errors.py"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_paho_is_imported_only_by_client_py() -> None:
    users = {p.name for p in PACKAGE.glob("*.py") if any(n.startswith("paho") for n in _imports(p))}
    assert users == {"client.py"}


def test_pure_modules_import_no_io_library() -> None:
    for name in PURE:
        imported = _imports(PACKAGE / name)
        assert not {n.split(".")[0] for n in imported} & {"asyncio", "paho", "aiohttp", "bleak"}


def test_only_gateway_vocabulary_is_imported() -> None:
    for path in PACKAGE.glob("*.py"):
        for name in _imports(path):
            if name.startswith("gateway"):
                assert name.split(".")[1] in GATEWAY_VOCABULARY, (path.name, name)
