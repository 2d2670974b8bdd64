"""The whole hub on PostgreSQL (issue 12): publish -> durable -> sealed throughput of the real
`python -m glucohub run` with `[storage] url` on a PostgreSQL server of its own, against a
baseline measured in the same run on the same server: the same rows written by a bare `COPY`
into a plain table with the readings' columns (no de-duplication, no index, no ledger).

Each trial pre-fills the hub's persistent MQTT session with N readings while it is down, then
times the hub from its MQTT connection until all N are sealed (as bench_hub_ingest does on
SQLite). The server keeps fsync on: the durability the hub is measured with is the real one.

    .venv/bin/python -m bench bench_pg_ingest
    .venv/bin/python bench/bench_pg_ingest.py [N [DEVICES]]
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_hub_ingest import (
    BARE_CLIENT_ID,
    DEFAULT_SPACING_S,
    SEALED_SQL,
    TOPIC_FILTER,
    UNSEALED_SQL,
    Counts,
    HubProcess,
    Ingest,
    Load,
    make_load,
    patient_id,
    register,
    seed_history,
    timed_ingest,
)
from bench.paho_baseline import BenchError, make_session, prefill
from tests.support.mosquitto import Mosquitto, free_port
from tests.support.postgres import Postgres

DEFAULT_COUNT = 10_000
DEFAULT_DEVICES = 100
TRIALS = 3
HISTORY_PER_DEVICE = 200
COLUMNS = "id, patient_id, device_id, kind, value, unit, time, seq, source, status, dedupe_key"


@contextlib.contextmanager
def pg_counts(url: str) -> Iterator[Counts]:
    with psycopg.connect(url, autocommit=True) as db:

        def counts() -> tuple[int, int]:
            sealed_row = db.execute(SEALED_SQL).fetchone()
            unsealed_row = db.execute(UNSEALED_SQL).fetchone()
            assert sealed_row is not None and unsealed_row is not None
            return int(sealed_row[0]) + int(unsealed_row[0]), int(sealed_row[0])

        yield counts


def baseline_rows(load: Load, first_round: int, rounds: int) -> list[tuple[object, ...]]:
    """The rows the hub stores for those readings, as plain values."""
    rows: list[tuple[object, ...]] = []
    for seq in range(first_round, first_round + rounds):
        for device in range(load.devices):
            device_id = f"bench-cgm{device:03d}"
            key = f"cgm_glucose:{load.first_seq + seq}"
            rows.append(
                (
                    len(rows) + 1,
                    patient_id(device),
                    device_id,
                    "cgm_glucose",
                    123.0,
                    "mg/dL",
                    load.time(device, seq),
                    load.first_seq + seq,
                    "mqtt",
                    "",
                    hashlib.sha256(key.encode()).hexdigest()[:16],
                )
            )
    return rows


def bare_copy(url: str, table: str, rows: list[tuple[object, ...]]) -> float:
    """COPY `rows` into a new plain table with the readings' columns and commit; rows/s."""
    with psycopg.connect(url) as db:
        db.execute(f"CREATE TABLE {table} (LIKE readings)")
        db.commit()
        start = time.perf_counter()
        with db.cursor() as cursor, cursor.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        db.commit()
        return len(rows) / (time.perf_counter() - start)


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_COUNT
    devices = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_DEVICES
    rounds = max(1, count // devices)
    count = rounds * devices
    load = make_load(devices, DEFAULT_SPACING_S, TRIALS * rounds, HISTORY_PER_DEVICE)
    trials: list[tuple[float, Ingest]] = []  # (bare COPY rows/s, hub ingest)
    with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp:
        server = Postgres(durable=True)
        broker = Mosquitto(Path(tmp) / "broker")
        data_dir = Path(tmp) / "data"
        hub: HubProcess | None = None
        saved = os.environ.get("GLUCOHUB_STORAGE__URL")
        try:
            server.start()
            url = server.create_database("hub")
            os.environ["GLUCOHUB_STORAGE__URL"] = url  # every CLI call of register() too
            broker.start()
            hub = HubProcess(
                data_dir,
                broker.url,
                free_port(),
                Path(tmp) / "hub.log",
                env={"GLUCOHUB_STORAGE__URL": url},
            )
            register(data_dir, devices)
            history = seed_history(data_dir, devices, HISTORY_PER_DEVICE, load.start, url)
            make_session(broker.port, BARE_CLIENT_ID, TOPIC_FILTER)
            hub.start()
            hub.wait_mqtt_connected()
            if hub.stop() != 0:
                raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
            for trial in range(TRIALS):
                if trial and hub.stop() != 0:
                    raise BenchError(f"hub did not stop cleanly:\n{hub.log_tail()}")
                rows = baseline_rows(load, trial * rounds, rounds)
                copy_rate = bare_copy(url, f"copy_baseline_{trial}", rows)
                prefill(broker.port, load.messages(trial * rounds, rounds))
                ingest = timed_ingest(
                    hub, count, timeout_s=max(60.0, count / 100), source=lambda: pg_counts(url)
                )
                trials.append((copy_rate, ingest))
        finally:
            if hub is not None:
                hub.stop()
            broker.kill()
            server.remove()
            if saved is None:
                os.environ.pop("GLUCOHUB_STORAGE__URL", None)
            else:
                os.environ["GLUCOHUB_STORAGE__URL"] = saved

    print(
        f"ingest on PostgreSQL: {count} readings of {devices} patients' CGMs, 1 per message, "
        f"QoS 1, pre-filled persistent sessions, into a database already holding {history:,} "
        "readings (server with fsync on)"
    )
    for number, (copy_rate, ingest) in enumerate(trials, 1):
        print(
            f"  trial {number}: bare COPY {copy_rate:8.0f} rows/s; hub durable "
            f"{ingest.durable_rate:6.0f}/s ({ingest.durable_rate / copy_rate:.3f}), sealed "
            f"{ingest.sealed_rate:6.0f}/s ({ingest.sealed_rate / copy_rate:.3f}) "
            f"{ingest.sealed_s:.2f} s after connecting"
        )
    ratios = sorted(ingest.sealed_rate / copy_rate for copy_rate, ingest in trials)
    print(
        f"  hub publish->sealed on PostgreSQL, median of {TRIALS} trials: ratio to bare COPY "
        f"{statistics.median(ratios):.3f} (range {ratios[0]:.3f}-{ratios[-1]:.3f})"
    )


if __name__ == "__main__":
    main()
