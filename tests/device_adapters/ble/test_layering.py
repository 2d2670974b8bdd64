"""Only bleak_transport imports bleak; pure modules do no I/O; gateway vocabulary only."""

import ast
from pathlib import Path

import device_adapters.ble as pkg

ROOT = Path(pkg.__file__).parent
PURE = {
    "codec",
    "crc",
    "errors",
    "ieee11073",
    "uuids",
    "glucose",
    "racp",
    "cgm",
    "heart_rate",
    "blood_pressure",
    "thermometer",
    "weight_scale",
    "mapping",
    "registry",
    "session",
    "transport",
}
GATEWAY_ALLOWED = {
    "gateway.model",
    "gateway.units",
    "gateway.errors",
    "gateway.clock",
    "gateway.protocols",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_bleak_only_in_the_edge_and_pure_modules_do_no_io() -> None:
    for path in ROOT.rglob("*.py"):
        imports = _imports(path)
        bleak = {i for i in imports if i.split(".")[0] in ("bleak", "bleak_retry_connector")}
        if path.name != "bleak_transport.py":
            assert not bleak, path
        if path.stem in PURE and path.parent == ROOT:
            assert not {i for i in imports if i.split(".")[0] in ("asyncio", "paho", "aiohttp")}, (
                path
            )
        gateway = {i for i in imports if i.startswith("gateway")}
        assert gateway <= GATEWAY_ALLOWED, (path, gateway - GATEWAY_ALLOWED)
