"""Bytes written to disk per stored reading (issue 17, "Disk"): what an SD card wears.

Runs the real `python -m glucohub run` (SQLite) against its own Mosquitto, once with the
default group commit (`storage.commit_max_delay_ms = 0`) and once with it raised to
DELAY_MS, and for each of three arrival patterns measures, from before the first reading is
published until every reading is stored, sealed and its checkpoint signed:

- `write_bytes` of /proc/<hub pid>/io: bytes the hub sent to the block layer (database,
  WAL, log file), divided by the readings stored — the figure an SD card feels;
- `wchar`: bytes passed to write() at all (before the page cache merges rewrites);
- the growth of the database per reading (its pages, in the file or the WAL: what a
  reading costs to keep).

The WAL is copied into the database file every 1000 pages (SQLite's automatic checkpoint);
those writes are counted when one falls inside a measurement (in "home" none does, so its
figure leaves out that later copy of the pages it changed).

Each is printed per reading and as a ratio: the raised delay against the default, and bytes
written against the database growth (write amplification). The patterns:

1. home: a reading every HOME_SPACING_S (a household's CGMs, meter and heart-rate strap),
   sealed as at home where readings are minutes apart: one batch and checkpoint each
   (ledger.batch_max_seconds is set below the spacing);
2. paced: PACED_COUNT readings at PACED_RATE/s (an uploader streaming), sealed as by
   default (a batch every 10 s);
3. burst: BURST_COUNT readings published as fast as one client can (a phone uploader
   sending a day's backlog after being offline).

    .venv/bin/python -m bench bench_disk_writes
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_hub_ingest import (
    HISTORY_PER_DEVICE,
    HubProcess,
    Live,
    make_load,
    paced_publisher,
    register,
    seed_history,
    sqlite_counts,
)
from bench.paho_baseline import BenchError, prefill
from gateway.store import DB_FILENAME
from tests.support.mosquitto import Mosquitto, free_port

DEVICES = 10
DELAY_MS = 200
HOME_COUNT = 30
HOME_SPACING_S = 0.5
PACED_COUNT = 1000
PACED_RATE = 50.0
BURST_COUNT = 5000
SETTLE_S = 1.5  # after the last reading is sealed: its checkpoint is signed and committed


@dataclass(frozen=True, slots=True)
class Written:
    readings: int
    write_bytes: int
    wchar: int
    growth: int  # database size change (pages, wherever they are)

    def per(self, value: int) -> float:
        return value / self.readings


def proc_io(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        key, value = line.split(":")
        fields[key] = int(value)
    return fields


def database_bytes(data_dir: Path) -> int:
    """The database's size as its readers see it (pages in the file and the WAL): what the
    data takes, whatever the WAL's own size (it is reused after each checkpoint)."""
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True, timeout=5)
    try:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)
    finally:
        db.close()


def measure(hub: HubProcess, publish: int, send: object) -> Written:
    """Bytes the hub wrote while `send()` delivered `publish` readings and it sealed them."""
    path = hub.data_dir / DB_FILENAME
    with sqlite_counts(path) as counts:
        target = counts()[1] + publish
        before_io, before_size = proc_io(hub.pid), database_bytes(hub.data_dir)
        send()  # type: ignore[operator]
        deadline = time.monotonic() + 120
        while counts()[1] < target:
            hub.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"hub sealed {counts()[1]} of {target} in 120 s")
            time.sleep(0.05)
    time.sleep(SETTLE_S)
    after_io = proc_io(hub.pid)
    return Written(
        readings=publish,
        write_bytes=after_io["write_bytes"] - before_io["write_bytes"],
        wchar=after_io["wchar"] - before_io["wchar"],
        growth=database_bytes(hub.data_dir) - before_size,
    )


def run_config(delay_ms: int, tmp: Path) -> dict[str, Written]:
    data_dir = tmp / f"data-{delay_ms}"
    broker = Mosquitto(tmp / f"broker-{delay_ms}")
    port = free_port()
    hub = HubProcess(data_dir, broker.url, port, tmp / f"hub-{delay_ms}.log")
    total = HOME_COUNT + PACED_COUNT + BURST_COUNT
    load = make_load(DEVICES, 0.01, total // DEVICES + 1, HISTORY_PER_DEVICE)
    messages = load.messages(0, total // DEVICES + 1)
    home, rest = messages[:HOME_COUNT], messages[HOME_COUNT:]
    paced, burst = rest[:PACED_COUNT], rest[PACED_COUNT : PACED_COUNT + BURST_COUNT]
    results: dict[str, Written] = {}
    try:
        broker.start()
        register(data_dir, DEVICES)
        seed_history(data_dir, DEVICES, HISTORY_PER_DEVICE, load.start - timedelta(days=1))
        delay = {"GLUCOHUB_STORAGE__COMMIT_MAX_DELAY_MS": str(delay_ms)}
        hub.env = {**delay, "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": str(HOME_SPACING_S / 2)}
        hub.start()
        hub.wait_mqtt_connected()
        time.sleep(2.0)  # startup writes (migrations, first checkpoint) are not the load's
        results["home"] = measure(
            hub,
            len(home),
            lambda: paced_publisher(broker.port, home, 1 / HOME_SPACING_S, Live()),
        )
        if hub.stop() != 0:
            raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
        # The default batches (10 s or 1000 readings; HubProcess alone would say 1 s).
        hub.env = {**delay, "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "10"}
        hub.start()
        hub.wait_mqtt_connected()
        time.sleep(2.0)
        results["paced"] = measure(
            hub, len(paced), lambda: paced_publisher(broker.port, paced, PACED_RATE, Live())
        )
        results["burst"] = measure(hub, len(burst), lambda: prefill(broker.port, burst))
        if hub.stop() != 0:
            raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
    finally:
        hub.stop()
        broker.kill()
    return results


def main() -> None:
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="bench-disk-") as tmp:
        default = run_config(0, Path(tmp))
        raised = run_config(DELAY_MS, Path(tmp))
    print(
        f"bytes written per stored reading by the hub process (SQLite WAL, synchronous=FULL; "
        f"{DEVICES} devices, a database already holding {DEVICES * HISTORY_PER_DEVICE:,} "
        "readings): /proc/<pid>/io write_bytes (block layer) and wchar (write() calls), "
        "database growth"
    )
    for name, what in (
        ("home", f"{HOME_COUNT} readings {HOME_SPACING_S:g} s apart, a batch each"),
        ("paced", f"{PACED_COUNT} readings at {PACED_RATE:g}/s"),
        ("burst", f"{BURST_COUNT} readings as fast as published"),
    ):
        print(f"  {name}: {what}")
        for label, result in (
            ("delay 0 (default)", default[name]),
            (f"delay {DELAY_MS} ms", raised[name]),
        ):
            per_write = result.per(result.write_bytes)
            growth = result.per(result.growth)
            print(
                f"    {label:18s} write_bytes {per_write:8.0f} B/reading  "
                f"wchar {result.per(result.wchar):8.0f} B/reading  "
                f"growth {growth:6.0f} B/reading  "
                f"amplification {per_write / growth if growth > 0 else float('nan'):5.1f}x"
            )
        base, high = default[name], raised[name]
        print(
            f"    ratio delay {DELAY_MS} ms / default: write_bytes "
            f"{high.per(high.write_bytes) / max(base.per(base.write_bytes), 1e-9):.2f}"
        )
    print(f"  ({(datetime.now(UTC) - started).total_seconds():.0f} s)")


if __name__ == "__main__":
    main()
