"""The house rules on dependencies, checked from the whole syntax tree (STYLE.md §2-3).

Every `import` counts wherever it is written: at module level, inside a function, a `try`
or an `if TYPE_CHECKING`. The checkers take a root directory, so `test_a_planted_*` can run
them on a small tree holding one violation each and see it reported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("glucohub", "device_adapters", "dashboards", "gateway", "ledger")
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
# What each package may import of ours (a name, or a name inside it). Top-down:
# glucohub -> device_adapters, dashboards -> gateway -> ledger.
LAYERS: dict[str, tuple[str, ...]] = {
    "glucohub": PACKAGES,
    "device_adapters": ("device_adapters", *VOCABULARY),
    # dashboards keeps its account tables in the hub's database: the storage package is theirs too
    "dashboards": ("dashboards", *VOCABULARY, "gateway.clinical", "gateway.storage"),
    "gateway": ("gateway", "ledger"),
    "ledger": ("ledger",),
}
# A module that imports one of these does I/O (or waits on it).
IO_LIBRARIES = (
    "asyncio",
    "sqlite3",
    "socket",
    "selectors",
    "signal",
    "threading",
    "subprocess",
    "multiprocessing",
    "concurrent.futures",
    "urllib.request",
    "http.client",
    "http.server",
    "ssl",
    "paho",
    "bleak",
    "bleak_retry_connector",
    "dbus_fast",
    "aiohttp",
    "psycopg",
    "psycopg2",
    "asyncpg",
)
# The only modules that may do I/O, each with the libraries it may use. Every other module is
# pure: a new module importing an I/O library fails until it is added here on purpose.
IO_MODULES: dict[str, frozenset[str]] = {
    name: frozenset(libraries)
    for name, libraries in {
        "glucohub.cli": ("asyncio",),
        "glucohub.clinic": ("asyncio", "signal", "concurrent.futures"),
        "glucohub.clinic_dashboard": ("asyncio", "signal"),
        "glucohub.simulate": ("asyncio",),
        "glucohub.clockwatch": ("asyncio",),
        "glucohub.metrics_http": ("aiohttp",),
        "glucohub.enrolment_http": ("aiohttp", "asyncio", "concurrent.futures", "signal", "ssl"),
        "glucohub.enrol": ("aiohttp", "asyncio", "ssl"),
        "glucohub.clinic_enrolment": ("asyncio",),
        "glucohub.demo": ("asyncio",),
        "glucohub.devicestops": ("asyncio",),
        "glucohub.diskguard": ("asyncio",),
        "glucohub.doctor": ("asyncio", "dbus_fast", "socket", "ssl"),
        "glucohub.runtime": ("asyncio", "signal"),
        "glucohub.firstrun": ("asyncio",),
        "glucohub.systemd": ("asyncio", "socket"),
        "device_adapters.ble.adapter": ("asyncio",),
        "device_adapters.ble.bleak_transport": ("asyncio", "bleak", "bleak_retry_connector"),
        "device_adapters.ble.bluez_agent": ("asyncio", "dbus_fast"),
        "device_adapters.ble.virtual.base": ("asyncio",),
        "device_adapters.ble.virtual.cgm": ("asyncio",),
        "device_adapters.ble.virtual.meter": ("asyncio",),
        "device_adapters.mqtt.client": ("asyncio", "paho", "ssl", "threading"),
        "device_adapters.mqtt.consumer": ("asyncio",),
        "device_adapters.mqtt.upstream": ("asyncio",),
        "dashboards.accounts": ("asyncio", "threading", "concurrent.futures", "multiprocessing"),
        "dashboards.api": ("aiohttp",),
        "dashboards.app": ("aiohttp", "asyncio", "ssl"),
        "dashboards.context": ("aiohttp",),
        "dashboards.fhir": ("aiohttp",),
        "dashboards.live": ("asyncio",),
        "dashboards.nightscout.routes": ("aiohttp", "asyncio"),
        "dashboards.nightscout.api3_auth": ("aiohttp",),
        "dashboards.nightscout.api3_collections": ("aiohttp",),
        "dashboards.nightscout.api3_documents": ("aiohttp",),
        "dashboards.nightscout.api3_entries": ("aiohttp", "asyncio"),
        "dashboards.nightscout.api3_treatments": ("aiohttp",),
        "dashboards.nightscout.api3_routes": ("aiohttp",),
        "dashboards.nightscout.auth": ("aiohttp",),
        "dashboards.nightscout.document_routes": ("aiohttp", "asyncio"),
        "dashboards.hublogs": ("aiohttp", "asyncio"),
        "dashboards.offload": ("aiohttp", "asyncio", "concurrent.futures", "multiprocessing"),
        "dashboards.publiclog": ("aiohttp",),
        "dashboards.setup": ("aiohttp", "asyncio"),
        "dashboards.templating": ("aiohttp",),
        "dashboards.triageranges": ("aiohttp", "asyncio"),
        "dashboards.views": ("aiohttp", "asyncio"),
        "gateway.clinic.hub_logs": ("asyncio", "concurrent.futures"),
        "gateway.clinic.services": ("asyncio", "concurrent.futures"),
        "gateway.fanout": ("asyncio",),
        "gateway.pipeline": ("asyncio", "concurrent.futures"),
        "gateway.services": ("asyncio", "concurrent.futures"),
        "gateway.store": ("sqlite3",),
        "gateway.storage.sqlite_accounts": ("sqlite3",),
        "gateway.storage.sqlite_backup": ("sqlite3",),
        "gateway.storage.sqlite_base": ("sqlite3",),
        "gateway.storage.sqlite_ingest": ("sqlite3",),
        "gateway.storage.sqlite_registry": ("sqlite3",),
        "gateway.storage.sqlite_errors": ("sqlite3",),
        "gateway.storage.sqlite_events": ("sqlite3",),
        "gateway.storage.sqlite_migrations": ("sqlite3",),
        "gateway.storage.postgres_accounts": ("psycopg",),
        "gateway.storage.postgres_clinic": ("psycopg",),
        "gateway.storage.postgres_clinic_group": ("psycopg",),
        "gateway.storage.postgres_live": ("psycopg",),
        "gateway.storage.postgres_clinic_projection": ("psycopg",),
        "gateway.storage.postgres_clinic_alerts": ("psycopg",),
        "gateway.storage.postgres_alerts": ("psycopg",),
        "gateway.storage.postgres_connection": ("psycopg",),
        "gateway.storage.postgres_events": ("psycopg",),
        "gateway.storage.postgres_migrations": ("psycopg",),
        "gateway.storage.postgres_store": ("psycopg",),
        "gateway.storage.postgres_treatments": ("psycopg",),
        "gateway.storage.postgres_documents": ("psycopg",),
        "gateway.storage.postgres_triage": ("psycopg",),
        "gateway.supervision": ("asyncio",),
        "gateway.verify": ("multiprocessing", "concurrent.futures"),
        "ledger.witness": ("urllib.request",),
    }.items()
}
# Each database driver is imported by its backend only; everyone else sees the storage
# contract's errors (gateway.errors.StorageError). psycopg: the PostgreSQL backend.
DATABASE_DRIVERS: dict[str, frozenset[str]] = {
    "sqlite3": frozenset(
        {
            "gateway.store",
            "gateway.storage.sqlite_errors",
            "gateway.storage.sqlite_events",
            "gateway.storage.sqlite_migrations",
            "gateway.storage.sqlite_accounts",
            "gateway.storage.sqlite_backup",
            "gateway.storage.sqlite_base",
            "gateway.storage.sqlite_ingest",
            "gateway.storage.sqlite_registry",
        }
    ),
    "psycopg": frozenset(
        {
            "gateway.storage.postgres_accounts",
            "gateway.storage.postgres_clinic",
            "gateway.storage.postgres_clinic_group",
            "gateway.storage.postgres_live",
            "gateway.storage.postgres_clinic_projection",
            "gateway.storage.postgres_clinic_alerts",
            "gateway.storage.postgres_alerts",
            "gateway.storage.postgres_connection",
            "gateway.storage.postgres_events",
            "gateway.storage.postgres_migrations",
            "gateway.storage.postgres_store",
            "gateway.storage.postgres_treatments",
            "gateway.storage.postgres_documents",
            "gateway.storage.postgres_triage",
        }
    ),
    "psycopg2": frozenset(),
    "asyncpg": frozenset(),
}
# Modules that must stay pure whatever IO_MODULES says.
PURE_CORES = (
    "gateway.model",
    "gateway.topics",
    "gateway.shapes",
    "gateway.units",
    "gateway.validation",
    "gateway.batcher",
    "gateway.clockjump",
    "gateway.clocklag",
    "gateway.telemetry",
    "gateway.clinic.witness",
    "gateway.clinic.projection",
    "gateway.clinical.alerts",
    "gateway.clinical.forecast",
    "gateway.clinical.glucose_filter",
    "gateway.clinical.metrics",
    "gateway.clinical.urgency",
    "gateway.storage.triage_order",
    "device_adapters.virtual.physiology",
    "device_adapters.virtual.realistic",
    "device_adapters.mqtt.payload",
    "dashboards.nightscout.entries",
    "dashboards.nightscout.api3",
    "dashboards.nightscout.documents",
    "dashboards.nightscout.jwt",
    "gateway.clinical.therapy_profile",
    "gateway.clinical.trend",
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

Graph = Mapping[str, set[str]]


# --- the checkers: each takes a graph read from a root directory ---------------------------


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Every absolute name `path` imports, wherever the import statement is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join([*base, *([node.module] if node.module else [])])
            else:
                source = node.module or ""
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
    return found


def read_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    return {
        module_name(root, path): imports_of(path, module_name(root, path))
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def _within(name: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layering_violations(graph: Graph) -> dict[str, list[str]]:
    """Imports of ours that go against LAYERS (sideways, upwards, or past the vocabulary)."""
    bad: dict[str, list[str]] = {}
    for module, imports in graph.items():
        allowed = LAYERS[module.split(".")[0]]
        wrong = sorted(
            name
            for name in imports
            if name.split(".")[0] in PACKAGES
            and not _within(name, allowed)
            # `from gateway import model` also names the bare package; `gateway.model` is checked
            and not (name in PACKAGES and any(a.startswith(name + ".") for a in allowed))
        )
        if wrong:
            bad[module] = wrong
    return bad


def io_used(graph: Graph) -> dict[str, set[str]]:
    """The I/O libraries each module imports."""
    used = {
        m: {lib for lib in IO_LIBRARIES if any(_within(i, (lib,)) for i in imps)}
        for m, imps in graph.items()
    }
    return {m: libs for m, libs in used.items() if libs}


def io_violations(graph: Graph) -> dict[str, list[str]]:
    """I/O libraries imported by a module IO_MODULES does not allow them to."""
    bad = {m: sorted(libs - IO_MODULES.get(m, frozenset())) for m, libs in io_used(graph).items()}
    return {m: libs for m, libs in bad.items() if libs}


def driver_violations(graph: Graph) -> dict[str, list[str]]:
    """Database drivers imported outside their backend."""
    bad: dict[str, list[str]] = {}
    for module, libs in io_used(graph).items():
        wrong = sorted(
            d for d, home in DATABASE_DRIVERS.items() if d in libs and module not in home
        )
        if wrong:
            bad[module] = wrong
    return bad


def _known(graph: Graph, name: str) -> str | None:
    """The module of ours that `name` refers to (a module, or a name inside one)."""
    while name:
        if name in graph:
            return name
        name = name.rpartition(".")[0]
    return None


def import_cycles(graph: Graph) -> list[list[str]]:
    edges = {
        m: {k for i in imps if (k := _known(graph, i)) and k != m} for m, imps in graph.items()
    }
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
        for nxt in sorted(edges.get(node, ())):
            # A package's __init__ importing its own submodules is not a cycle of concern.
            if not node.startswith(nxt + ".") and not nxt.startswith(node + "."):
                visit(nxt)
        visiting.pop()
        done.add(node)

    for module in sorted(edges):
        visit(module)
    return cycles


# --- the rules, on this repository ---------------------------------------------------------

MODULES = read_graph(ROOT)


def test_the_graph_was_read() -> None:
    assert {"glucohub.cli", "gateway.pipeline", "dashboards.app", "ledger.rfc6962"} <= set(MODULES)
    # a lazy import inside a function is an edge too
    assert "dashboards.accounts" in MODULES["glucohub.cli"]


def test_dependencies_point_one_way() -> None:
    assert layering_violations(MODULES) == {}


def test_only_listed_modules_do_io() -> None:
    assert io_violations(MODULES) == {}


def test_the_io_list_is_not_stale() -> None:
    used = io_used(MODULES)
    stale = {m: sorted(libs - used.get(m, set())) for m, libs in IO_MODULES.items()}
    assert {m: v for m, v in stale.items() if v} == {}


def test_database_drivers_stay_in_their_backend() -> None:
    assert driver_violations(MODULES) == {}


@pytest.mark.parametrize("module", PURE_CORES)
def test_pure_cores_do_no_io(module: str) -> None:
    assert module in MODULES, f"{module} moved: update PURE_CORES"
    assert module not in IO_MODULES
    assert module not in io_used(MODULES)


@pytest.mark.parametrize(
    ("library", "home"),
    [
        ("bleak", ("device_adapters.ble.bleak_transport",)),
        ("bleak_retry_connector", ("device_adapters.ble.bleak_transport",)),
        ("paho", ("device_adapters.mqtt.client",)),
    ],
)
def test_io_libraries_live_in_one_module(library: str, home: tuple[str, ...]) -> None:
    users = sorted(m for m, libs in io_used(MODULES).items() if library in libs)
    assert users == list(home)


def test_aiohttp_only_at_the_web_edge() -> None:
    # The dashboards, the /metrics port of a process that has no dashboard (a worker), and
    # enrolment: the clinic's endpoint and the hub's request to it.
    users = {m for m, libs in io_used(MODULES).items() if "aiohttp" in libs}
    edge = {m for m in users if m.startswith("dashboards")} | {
        "glucohub.metrics_http",
        "glucohub.enrolment_http",
        "glucohub.enrol",
    }
    assert users and users <= edge, sorted(users - edge)


def test_pandas_is_not_imported_by_the_running_pipeline() -> None:
    # import pandas costs ~45 MiB: only the metrics and reports may load it.
    users = {m for m, imps in MODULES.items() if any(_within(i, ("pandas",)) for i in imps)}
    assert not users & {
        "gateway.pipeline",
        "glucohub.runtime",
        "gateway.alerting",
        "gateway.clinical.alerts",
        "gateway.store",
    }, sorted(users)


def test_no_import_cycles() -> None:
    assert import_cycles(MODULES) == []


def test_starting_the_hub_does_not_load_pandas() -> None:
    # The hub's composition root and the dashboard app import without pandas (~45 MiB);
    # it is loaded the first time metrics are computed.
    code = (
        "import sys, glucohub.runtime, glucohub.cli, dashboards.app, "
        "device_adapters.mqtt.consumer, device_adapters.ble.adapter\n"
        "print('pandas' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert result.stdout.strip() == "False"


# --- each rule bites: a small tree with one planted violation ------------------------------

# A clean tree: every layer uses the one below it the allowed way.
CLEAN_TREE = {
    "glucohub/cli.py": (
        "import asyncio\nfrom dashboards import app\nfrom device_adapters import x\n"
    ),
    "device_adapters/x.py": "from gateway.model import Reading\n",
    "dashboards/app.py": "from gateway import model\nfrom gateway.clinical import metrics\n",
    "gateway/model.py": "from ledger import rfc6962\n",
    "gateway/store.py": "import sqlite3\n",
    "ledger/rfc6962.py": "import hashlib\n",
}


def plant(root: Path, files: Mapping[str, str]) -> dict[str, set[str]]:
    for name, source in {**CLEAN_TREE, **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
    for package in PACKAGES:
        for directory in [root / package, *(p for p in (root / package).rglob("*") if p.is_dir())]:
            (directory / "__init__.py").touch()
    return read_graph(root)


def test_the_clean_tree_breaks_no_rule(tmp_path: Path) -> None:
    graph = plant(tmp_path, {})
    assert graph["glucohub.cli"] >= {"dashboards.app", "asyncio"}
    assert layering_violations(graph) == {}
    assert io_violations(graph) == {}
    assert driver_violations(graph) == {}
    assert import_cycles(graph) == []


LAYERING_CASES = {
    "inside a function": (
        "gateway/pipeline.py",
        "def start() -> None:\n    from dashboards import app\n",
        "dashboards.app",
    ),
    "inside try": (
        "ledger/tiles.py",
        "try:\n    import gateway.model\nexcept ImportError:\n    pass\n",
        "gateway.model",
    ),
    "under TYPE_CHECKING": (
        "device_adapters/ble.py",
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from gateway.pipeline import Hub\n",
        "gateway.pipeline",
    ),
    "inside a method under with": (
        "gateway/services.py",
        "class S:\n    def f(self) -> None:\n        with open('x'):\n"
        "            import device_adapters.mqtt\n",
        "device_adapters.mqtt",
    ),
    "gateway imports dashboards": (
        "gateway/alerting.py",
        "import dashboards.app\n",
        "dashboards.app",
    ),
    "gateway imports the wiring": (
        "gateway/verify.py",
        "from glucohub.runtime import run_hub\n",
        "glucohub.runtime",
    ),
    "an adapter imports the wiring": (
        "device_adapters/y.py",
        "from glucohub import cli\n",
        "glucohub.cli",
    ),
    "a dashboard imports the wiring": ("dashboards/z.py", "import glucohub\n", "glucohub"),
    "an adapter imports a dashboard": (
        "device_adapters/y.py",
        "from dashboards.app import serve\n",
        "dashboards.app",
    ),
    "a dashboard imports past the vocabulary": (
        "dashboards/z.py",
        "from gateway.store import Store\n",
        "gateway.store",
    ),
    "an aliased import of the pipeline": (
        "dashboards/z.py",
        "import gateway.pipeline as pipeline\n",
        "gateway.pipeline",
    ),
    "ledger imports the bare gateway package": ("ledger/note.py", "import gateway\n", "gateway"),
}


@pytest.mark.parametrize("case", LAYERING_CASES)
def test_a_planted_layering_violation_is_reported(tmp_path: Path, case: str) -> None:
    path, source, target = LAYERING_CASES[case]
    graph = plant(tmp_path, {path: source})
    module = module_name(tmp_path, tmp_path / path)
    assert target in layering_violations(graph).get(module, [])


IO_CASES = {
    "an unlisted module opens a database": ("gateway/cache.py", "import sqlite3\n", "sqlite3"),
    "a listed module uses a library not listed for it": (
        "gateway/fanout.py",
        "import asyncio\nimport socket\n",
        "socket",
    ),
    "a pure core awaits inside a function": (
        "device_adapters/ble/glucose.py",
        "def parse() -> None:\n    import asyncio\n",
        "asyncio",
    ),
    "a pure core uses paho inside try": (
        "gateway/validation.py",
        "try:\n    from paho.mqtt import client\nexcept ImportError:\n    client = None\n",
        "paho",
    ),
    "the ledger fetches over HTTP": (
        "ledger/batch.py",
        "from urllib import request\n",
        "urllib.request",
    ),
}


@pytest.mark.parametrize("case", IO_CASES)
def test_a_planted_io_import_is_reported(tmp_path: Path, case: str) -> None:
    path, source, library = IO_CASES[case]
    graph = plant(tmp_path, {path: source})
    module = module_name(tmp_path, tmp_path / path)
    assert library in io_violations(graph).get(module, [])


DRIVER_CASES = {
    "sqlite3 outside the SQLite backend": ("dashboards/views.py", "import sqlite3\n", "sqlite3"),
    "psycopg outside the PostgreSQL backend": (
        "gateway/sealing.py",
        "from psycopg import errors\n",
        "psycopg",
    ),
    "psycopg in a storage module not on the list": (
        "gateway/storage/postgres.py",
        "import psycopg\n",
        "psycopg",
    ),
    "asyncpg inside a function": (
        "gateway/storage/pg.py",
        "async def connect() -> None:\n    import asyncpg\n",
        "asyncpg",
    ),
}


@pytest.mark.parametrize("case", DRIVER_CASES)
def test_a_planted_database_driver_is_reported(tmp_path: Path, case: str) -> None:
    path, source, driver = DRIVER_CASES[case]
    graph = plant(tmp_path, {path: source})
    module = module_name(tmp_path, tmp_path / path)
    assert driver in driver_violations(graph).get(module, [])


def test_a_driver_listed_as_io_is_still_kept_in_its_backend(tmp_path: Path) -> None:
    # gateway.fanout may do I/O (IO_MODULES) but open no database
    graph = plant(tmp_path, {"gateway/fanout.py": "import asyncio\nimport sqlite3\n"})
    assert driver_violations(graph) == {"gateway.fanout": ["sqlite3"]}


CYCLE_CASES = {
    "two modules, one import lazy": (
        {
            "gateway/a.py": "from gateway.b import f\n",
            "gateway/b.py": "def f() -> None:\n    from gateway import a\n",
        },
        ["gateway.a", "gateway.b", "gateway.a"],
    ),
    "three modules, one relative": (
        {
            "ledger/a.py": "from . import b\n",
            "ledger/b.py": "import ledger.c\n",
            "ledger/c.py": "from ledger.a import x\n",
        },
        ["ledger.a", "ledger.b", "ledger.c", "ledger.a"],
    ),
}


@pytest.mark.parametrize("case", CYCLE_CASES)
def test_a_planted_cycle_is_reported(tmp_path: Path, case: str) -> None:
    files, cycle = CYCLE_CASES[case]
    assert import_cycles(plant(tmp_path, files)) == [cycle]
