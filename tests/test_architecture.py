"""The house rules on dependencies, checked from the import graph (STYLE.md §2-3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("glucohub", "gateway", "device_adapters", "ledger", "dashboards")
# The composition root may import every package.
COMPOSITION_ROOT = {"glucohub.cli", "glucohub.runtime", "glucohub.demo", "gateway.__main__"}
VOCABULARY = (
    "gateway.model",
    "gateway.units",
    "gateway.errors",
    "gateway.clock",
    "gateway.protocols",
    "gateway.settings",
    "gateway.topics",
    "gateway.shapes",
)
IO_LIBRARIES = ("asyncio", "bleak", "bleak_retry_connector", "paho", "aiohttp")
PURE_CORES = (
    "gateway.model",
    "gateway.topics",
    "gateway.shapes",
    "gateway.units",
    "gateway.validation",
    "gateway.batcher",
    "gateway.telemetry",
    "gateway.clinical.alerts",
    "gateway.clinical.forecast",
    "gateway.clinical.glucose_filter",
    "gateway.clinical.metrics",
    "device_adapters.virtual.physiology",
    "device_adapters.virtual.realistic",
    "device_adapters.mqtt.payload",
    "device_adapters.ble.glucose",
    "device_adapters.ble.cgm",
    "device_adapters.ble.racp",
    "device_adapters.ble.heart_rate",
    "device_adapters.ble.ieee11073",
    "device_adapters.ble.session",
    "ledger.rfc6962",
    "ledger.note",
    "ledger.checkpoint",
    "ledger.jcs",
    "ledger.jws",
    "ledger.batch",
    "ledger.bundle",
    "ledger.tiles",
)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Absolute names imported at module level (not inside functions: those are lazy)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If):  # TYPE_CHECKING blocks still count as dependencies
            nodes: list[ast.stmt] = [*node.body, *node.orelse]
        else:
            nodes = [node]
        for item in nodes:
            if isinstance(item, ast.Import):
                found.update(alias.name for alias in item.names)
            elif isinstance(item, ast.ImportFrom) and item.module and item.level == 0:
                found.add(item.module)
                found.update(f"{item.module}.{alias.name}" for alias in item.names)
    return found


MODULES = {
    _module_name(path): _imports(path)
    for package in PACKAGES
    for path in sorted((ROOT / package).rglob("*.py"))
}


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def _known(name: str) -> str | None:
    """The module of ours that `name` refers to (a module, or a name inside one)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def test_the_graph_was_read() -> None:
    assert "gateway.pipeline" in MODULES and "ledger.rfc6962" in MODULES


def test_ledger_imports_nothing_of_ours() -> None:
    bad = {
        m: sorted(i for i in imps if _ours(i) and not i.startswith("ledger"))
        for m, imps in MODULES.items()
        if m.startswith("ledger")
    }
    assert {m: v for m, v in bad.items() if v} == {}


@pytest.mark.parametrize("package", ["device_adapters", "dashboards"])
def test_edges_import_only_the_gateway_vocabulary(package: str) -> None:
    # dashboards keeps its account tables in the hub's database: the storage package is theirs too
    allowed = (
        (*VOCABULARY, "gateway.clinical", "gateway.storage")
        if package == "dashboards"
        else VOCABULARY
    )
    bad: dict[str, list[str]] = {}
    for module, imports in MODULES.items():
        if not module.startswith(package):
            continue
        wrong = sorted(
            i
            for i in imports
            if i.startswith("gateway")
            and i != "gateway"
            and not any(i == a or i.startswith(a + ".") for a in allowed)
        )
        if wrong:
            bad[module] = wrong
    assert bad == {}


def test_gateway_core_does_not_import_edges() -> None:
    bad = {
        m: sorted(i for i in imps if i.startswith(("device_adapters", "dashboards")))
        for m, imps in MODULES.items()
        if m.startswith("gateway") and m not in COMPOSITION_ROOT
    }
    assert {m: v for m, v in bad.items() if v} == {}


@pytest.mark.parametrize("module", PURE_CORES)
def test_pure_cores_do_no_io(module: str) -> None:
    assert module in MODULES, f"{module} moved: update PURE_CORES"
    io = sorted(i for i in MODULES[module] if i.split(".")[0] in IO_LIBRARIES)
    assert io == []


@pytest.mark.parametrize(
    ("library", "home"),
    [
        ("bleak", ("device_adapters.ble.bleak_transport",)),
        ("bleak_retry_connector", ("device_adapters.ble.bleak_transport",)),
        ("paho", ("device_adapters.mqtt.client",)),
    ],
)
def test_io_libraries_live_in_one_module(library: str, home: tuple[str, ...]) -> None:
    users = sorted(
        m for m, imps in MODULES.items() if any(i.split(".")[0] == library for i in imps)
    )
    assert users == list(home)


def test_aiohttp_only_at_the_web_edge() -> None:
    users = {m for m, imps in MODULES.items() if any(i.split(".")[0] == "aiohttp" for i in imps)}
    assert all(m.startswith("dashboards") for m in users), sorted(users)


def test_pandas_is_not_imported_by_the_running_pipeline() -> None:
    # import pandas costs ~45 MiB: only the metrics and reports may load it.
    users = {m for m, imps in MODULES.items() if any(i.split(".")[0] == "pandas" for i in imps)}
    assert not users & {
        "gateway.pipeline",
        "glucohub.runtime",
        "gateway.alerting",
        "gateway.clinical.alerts",
        "gateway.store",
    }, sorted(users)


def test_no_import_cycles() -> None:
    graph = {m: {k for i in imps if (k := _known(i)) and k != m} for m, imps in MODULES.items()}
    # A package's __init__ importing its own submodules is not a cycle of concern.
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        if node in done:
            return
        if node in visiting:
            cycles.append([*visiting[visiting.index(node) :], node])
            return
        visiting.append(node)
        for nxt in sorted(graph.get(node, ())):
            if not node.startswith(nxt + ".") and not nxt.startswith(node + "."):
                visit(nxt)
        visiting.pop()
        done.add(node)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


def test_starting_the_hub_does_not_load_pandas() -> None:
    # The hub's composition root and the dashboard app import without pandas (~45 MiB);
    # it is loaded the first time metrics are computed.
    import subprocess
    import sys

    code = (
        "import sys, glucohub.runtime, glucohub.cli, dashboards.app, "
        "device_adapters.mqtt.consumer, device_adapters.ble.adapter\n"
        "print('pandas' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False"
