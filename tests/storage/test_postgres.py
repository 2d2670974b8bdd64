"""What only the PostgreSQL backend has to show: concurrent writers and a sealer, monthly
partitions, records byte-identical to SQLite's, schema versions, and a server restart."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import errors as pg_errors

from gateway import verify
from gateway.clock import parse_rfc3339, to_rfc3339
from gateway.errors import PermanentStorageError, StorageError, TransientStorageError
from gateway.model import (
    CANONICAL_UNIT,
    Device,
    DeviceKind,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.storage.postgres_connection import storage_error
from gateway.storage.postgres_events import insert_ledger_event, last_consent_event
from gateway.storage.postgres_migrations import SCHEMA_VERSION
from gateway.storage.postgres_store import (
    PostgresStore,
    _pg_reading_row,
    _pg_row,
    _stored_time,
)
from gateway.storage.rows import reading_to_row
from gateway.storage.sqlite_migrations import SchemaTooNew, SchemaTooOld
from gateway.store import Store
from gateway.units import Unit
from tests.storage.conftest import register
from tests.support.postgres import Postgres

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def reading(device: str, seq: int | None, time: datetime, value: float = 100.0) -> Reading:
    return Reading(
        patient_id="p1",
        device_id=device,
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=time,
        source=Source.MQTT,
        seq=seq,
    )


def sealer(store: Store | PostgresStore, home: Path) -> Sealer:
    init_keys(home, None)
    keys = load_keys(home, "hub-1", None)
    return Sealer(store, keys, hub_id="hub-1", forward=False)  # type: ignore[arg-type]


Opener = Callable[..., PostgresStore]


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Opener]:
    """Opens PostgresStores on this test's database (each its own connection), all closed
    at the end."""
    opened: list[PostgresStore] = []

    def open_store(url: str = postgres_url, **kw: object) -> PostgresStore:
        store = PostgresStore(url, **kw)  # type: ignore[arg-type]
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def sql(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url, autocommit=True) as db:
        cursor = db.execute(query.encode())
        return cursor.fetchall() if cursor.description else []


# -- concurrency ---------------------------------------------------------------------------


@pytest.mark.slow
def test_concurrent_writers_and_a_sealer_store_and_seal_every_reading_exactly_once(
    pg: Opener, postgres_url: str, tmp_path: Path
) -> None:
    setup = pg()
    register(setup)
    for n in range(2):
        setup.add_device(
            Device(
                device_id=f"w{n}", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT
            )
        )
    writes, per_write = 40, 25
    done = threading.Event()
    failures: list[BaseException] = []
    duplicates: list[int] = []

    def write(n: int) -> None:
        store = pg()
        try:
            for w in range(writes):
                base = w * per_write
                times = [T0 + timedelta(seconds=base + i) for i in range(per_write)]
                own = [reading(f"w{n}", base + i, times[i]) for i in range(per_write)]
                # Both writers also deliver the same cgm-1 readings, in opposite orders.
                shared = [reading("cgm-1", base + i, times[i]) for i in range(per_write)]
                batch = own + shared if n == 0 else shared[::-1] + own
                duplicates.append(store.write(batch).duplicates)
        except BaseException as exc:
            failures.append(exc)
        finally:
            store.close()

    def seal() -> None:
        store = pg()
        try:
            s = sealer(store, tmp_path / "keys")
            while not done.is_set():
                s.seal(37, NOW)  # small batches: many seals while the writers write
            while s.seal(37, NOW) is not None:
                pass
        except BaseException as exc:
            failures.append(exc)
        finally:
            store.close()

    writers = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    sealing = threading.Thread(target=seal)
    sealing.start()
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    sealing.join()
    assert failures == []
    assert sum(duplicates) == writes * per_write  # each shared reading stored by one writer
    total = 3 * writes * per_write
    assert setup.count_readings() == total and setup.count_unsealed() == 0
    batches = list(setup.batches())
    assert len(batches) > 3  # sealing really ran alongside the writers
    assert sum(b.reading_count for b in batches) == total
    sealed: list[bytes] = []
    for b in batches:
        records = setup.batch_records(b.seq)
        assert records.reading_count == b.reading_count
        sealed += records.canonical[: records.reading_count]
    assert len(set(sealed)) == total  # each reading in exactly one batch, none twice


@pytest.mark.slow
def test_two_writers_delivering_the_same_readings_in_opposite_orders_never_deadlock(
    pg: Opener,
) -> None:
    register(pg())
    rounds, size = 20, 300
    start = threading.Barrier(2)
    failures: list[BaseException] = []
    duplicates: list[int] = []

    def write(n: int) -> None:
        store = pg()
        for w in range(rounds):
            same = [
                reading("cgm-1", w * size + i, T0 + timedelta(seconds=w * size + i))
                for i in range(size)
            ]
            start.wait()  # both writes at once
            try:
                duplicates.append(store.write(same if n == 0 else same[::-1]).duplicates)
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert sum(duplicates) == rounds * size
    assert pg().count_readings() == rounds * size


# -- partitions ----------------------------------------------------------------------------


def test_readings_land_in_monthly_partitions(pg: Opener, postgres_url: str) -> None:
    store = pg()
    register(store)
    last_ms_of_2026 = datetime(2026, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    store.write(
        [
            reading("cgm-1", 1, datetime(2026, 11, 30, 23, 0, tzinfo=UTC)),
            reading("cgm-1", 2, last_ms_of_2026),
            reading("cgm-1", 3, datetime(2027, 1, 1, tzinfo=UTC)),
        ]
    )
    children = sql(
        postgres_url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'readings'::regclass ORDER BY c.relname",
    )
    assert children == [("readings_2026_11",), ("readings_2026_12",), ("readings_2027_01",)]
    placed = sql(postgres_url, "SELECT seq, tableoid::regclass::text FROM readings ORDER BY seq")
    assert placed == [(1, "readings_2026_11"), (2, "readings_2026_12"), (3, "readings_2027_01")]
    # Each month has the dashboard's indexes (patient+time, unsealed, batch) and the key.
    indexed = sql(
        postgres_url,
        "SELECT count(*) FROM pg_indexes WHERE tablename = 'readings_2026_12' AND ("
        "indexdef LIKE '%(patient_id, \"time\")%' OR indexdef LIKE '%WHERE (batch_seq IS NULL)%'"
        " OR indexdef LIKE '%(batch_seq)' OR indexdef LIKE '%UNIQUE%(id, \"time\")%')",
    )
    assert indexed == [(4,)]


def test_retention_drops_a_month_and_a_replay_does_not_bring_it_back(
    pg: Opener, postgres_url: str
) -> None:
    store = pg()
    register(store)
    old = reading("cgm-1", 1, datetime(2026, 10, 5, tzinfo=UTC))
    store.write([old, reading("cgm-1", 2, T0)])
    sql(postgres_url, "DROP TABLE readings_2026_10")
    assert [r.seq for r in store.readings()] == [2]
    again = store.write([old])
    assert (again.stored, again.duplicates) == ((), 1)
    assert store.count_readings() == 1


# -- the same records as SQLite ------------------------------------------------------------


def awkward_readings(count: int) -> list[Reading]:
    """Values, times and texts where two spellings of one reading could differ."""
    rng = random.Random(12)
    values = [0.0, 1.0, 5.55, 99.99999999999999, 1e-7, 123456789.125, 1e21, 2.0**53 + 2, 1 / 3]
    texts = ["plain", 'quote"and\\slash', "tab\there", "ünïcödé", "emoji 🩸", "\u2028"]
    out: list[Reading] = []
    for i in range(count):
        micro = rng.randrange(1_000_000)
        kind = rng.choice(list(ReadingKind))
        out.append(
            Reading(
                patient_id="p1",
                device_id="cgm-1",
                kind=kind,
                value=rng.choice(values) * rng.choice([1, -1]) + (i if i % 3 == 0 else 0),
                unit=CANONICAL_UNIT[kind],
                time=T0 + timedelta(seconds=i * 61, microseconds=micro),
                source=rng.choice(list(Source)),
                seq=rng.choice([None, i, 2**40 + i]),
                original_value=rng.choice([None, rng.uniform(-1e6, 1e6)]),
                original_unit=rng.choice([None, Unit.MMOL_L]),
                status=tuple(rng.sample(texts, rng.randrange(3))),
            )
        )
    return out


def test_sealed_records_are_byte_identical_to_sqlite(
    pg: Opener, postgres_url: str, tmp_path: Path
) -> None:
    inputs = awkward_readings(300)
    lite = Store(tmp_path / "lite")
    pgs = pg()
    for store in (lite, pgs):
        register(store)
        store.add_ledger_event("p1", {"type": "note", "x": 1.5, "s": "ünï\u2028"})
        result = store.write(inputs[:150])
        assert len(result.stored) == 150
        store.write(inputs[150:])
    lite_rows, _ = lite.unsealed_for_seal(1000)
    pg_rows, _ = pgs.unsealed_for_seal(1000)
    assert len(pg_rows) == 300
    assert [(r.time, r.canonical) for r in pg_rows] == [(r.time, r.canonical) for r in lite_rows]
    for store, home in ((lite, tmp_path / "k1"), (pgs, tmp_path / "k2")):
        s = sealer(store, home)
        while s.seal(120, NOW) is not None:
            pass
    for seq in (0, 1, 2):
        mine, theirs = pgs.batch_records(seq), lite.batch_records(seq)
        assert (mine.patients, mine.canonical, mine.reading_times) == (
            theirs.patients,
            theirs.canonical,
            theirs.reading_times,
        )
    assert [r.time for r in pgs.readings()] == [r.time for r in lite.readings()]


# -- schema versions -----------------------------------------------------------------------


def test_a_database_from_newer_code_is_refused_in_one_line(pg: Opener, postgres_url: str) -> None:
    pg()
    sql(
        postgres_url,
        f"INSERT INTO schema_migrations VALUES ({SCHEMA_VERSION + 1}, 'from the future', now())",
    )
    for read_only in (False, True):
        with pytest.raises(SchemaTooNew) as caught:
            pg(read_only=read_only)
        message = str(caught.value)
        assert "\n" not in message
        assert f"schema version {SCHEMA_VERSION + 1}, newer than this Glucohub's" in message


def test_a_read_only_open_never_migrates(pg: Opener, postgres_url: str) -> None:
    with pytest.raises(SchemaTooOld, match="run `glucohub migrate` first"):
        pg(read_only=True)
    assert sql(postgres_url, "SELECT to_regclass('schema_migrations')") == [(None,)]


def test_two_processes_migrating_at_once_apply_each_migration_once(
    pg: Opener, postgres_url: str
) -> None:
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            pg()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = sql(postgres_url, "SELECT version FROM schema_migrations ORDER BY version")
    assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]


def test_a_password_never_appears_in_a_message(pg: Opener, postgres_server: Postgres) -> None:
    url = f"postgresql://glucohub_test:s3cret@127.0.0.1:{postgres_server.port}/no_such_db"
    with pytest.raises(StorageError) as caught:
        pg(url)
    assert "s3cret" not in str(caught.value)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (pg_errors.SerializationFailure, True),
        (pg_errors.DeadlockDetected, True),
        (pg_errors.LockNotAvailable, True),
        (pg_errors.AdminShutdown, True),
        (pg_errors.ConnectionFailure, True),
        (pg_errors.QueryCanceled, True),
        (pg_errors.DiskFull, False),
        (pg_errors.UniqueViolation, False),
        (pg_errors.UndefinedTable, False),
        (pg_errors.InsufficientPrivilege, False),
    ],
)
def test_errors_say_whether_a_retry_may_help(error: type[psycopg.Error], transient: bool) -> None:
    mapped = storage_error(error("boom"))
    assert isinstance(mapped, TransientStorageError if transient else PermanentStorageError)


def test_a_lock_timeout_is_transient_and_leaves_no_transaction_open(
    pg: Opener, postgres_url: str
) -> None:
    store = pg()
    register(store)
    sql(
        postgres_url, "ALTER DATABASE " + postgres_url.rsplit("/", 1)[1] + " SET lock_timeout = 200"
    )
    store.close()
    store = pg()
    with psycopg.connect(postgres_url) as holder:
        holder.execute("LOCK TABLE alerts IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(TransientStorageError, match="55P03"):
            store.alerts()
        holder.rollback()
    assert store.alerts() == []  # the same store works on: nothing left half-open


def test_a_missing_table_is_permanent_and_the_store_works_on(pg: Opener, postgres_url: str) -> None:
    store = pg()
    register(store)
    sql(postgres_url, "DROP TABLE outbox")
    with pytest.raises(PermanentStorageError, match="42P01"):
        store.outbox_pending(5)
    assert [p.patient_id for p in store.list_patients()] == ["p1", "p2"]


def test_a_server_restart_between_calls_is_transient_then_reconnects(
    pg: Opener, postgres_server: Postgres, postgres_url: str
) -> None:
    store = pg()
    register(store)
    store.write([reading("cgm-1", 1, T0)])
    postgres_server.restart()
    try:
        count = store.count_readings()
    except TransientStorageError:
        count = store.count_readings()  # the next call reconnects
    assert count == 1
    result = store.write([reading("cgm-1", 2, T0 + timedelta(minutes=5))])
    assert len(result.stored) == 1
    assert [r.seq for r in store.readings()] == [1, 2]


def test_a_write_while_the_server_is_down_is_transient_and_stores_nothing(
    pg: Opener, postgres_server: Postgres, postgres_url: str
) -> None:
    store = pg()
    register(store)
    postgres_server.stop()
    try:
        with pytest.raises(TransientStorageError):
            store.write([reading("cgm-1", 1, T0)])
        with pytest.raises(TransientStorageError):
            store.count_readings()  # reconnecting fails too, and says so
    finally:
        postgres_server.start()
    assert store.count_readings() == 0
    assert len(store.write([reading("cgm-1", 1, T0)]).stored) == 1


class _CommitsLateAfterReading:
    """The store as the sealer sees it, with another writer's transaction (holding a lower
    id) committing just after the sealer read the unsealed rows."""

    def __init__(self, store: PostgresStore, late: psycopg.Connection[tuple[object, ...]]):
        self._store = store
        self._late = late

    def unsealed_for_seal(self, limit: int) -> object:
        rows = self._store.unsealed_for_seal(limit)
        if not self._late.closed:
            self._late.commit()
            self._late.close()
        return rows

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_a_lower_id_committing_late_is_sealed_by_the_next_batch(
    pg: Opener, postgres_url: str, tmp_path: Path
) -> None:
    store = pg()
    register(store)
    store.write([reading("cgm-1", 0, T0)])  # makes the month's partition
    late = psycopg.connect(postgres_url)
    row = late.execute(
        "INSERT INTO reading_keys (device_id, dedupe_key, time, value, unit) "
        "VALUES ('cgm-1', 'seq:cgm_glucose:1', %s, 100, 'mg/dL') RETURNING id",
        (T0 + timedelta(minutes=1),),
    ).fetchone()
    assert row is not None
    late.execute(
        "INSERT INTO readings (id, patient_id, device_id, kind, value, unit, time, seq, source, "
        "status, dedupe_key) VALUES (%s, 'p1', 'cgm-1', 'cgm_glucose', 100, 'mg/dL', %s, 1, "
        "'mqtt', '', 'seq:cgm_glucose:1')",
        (row[0], T0 + timedelta(minutes=1)),
    )
    store.write([reading("cgm-1", 2, T0 + timedelta(minutes=2))])  # a higher id, committed
    s = sealer(_CommitsLateAfterReading(store, late), tmp_path / "keys")  # type: ignore[arg-type]
    first = s.seal(100, NOW)
    assert first is not None and first.batch.reading_count == 2  # seq 0 and 2, not seq 1
    assert [r.seq for r in store.batch_readings(0)] == [0, 2]
    assert store.count_unsealed() == 1
    second = s.seal(100, NOW)
    assert second is not None and [r.seq for r in store.batch_readings(1)] == [1]
    assert store.count_unsealed() == 0


def test_an_event_that_is_not_json_is_quarantined_and_the_rest_sealed(
    pg: Opener, postgres_url: str, tmp_path: Path
) -> None:
    store = pg()
    register(store)
    store.write([reading("cgm-1", 1, T0)])
    sql(postgres_url, "INSERT INTO ledger_events (patient_id, body) VALUES ('p1', '{not json')")
    store.add_ledger_event("p1", {"type": "note"})
    outcome = sealer(store, tmp_path / "keys").seal(10, NOW)
    assert outcome is not None and outcome.records == 2  # the reading and the good event
    [item] = store.quarantined()
    assert (item.record, item.patient_id) == ("event", "p1")
    assert store.count_unsealed_events() == 0
    assert store.batch_events(0) == [{"type": "note"}]


def test_the_last_consent_event_of_a_patient_and_clinician(postgres_url: str, pg: Opener) -> None:
    pg()  # the schema
    with psycopg.connect(postgres_url, autocommit=True) as db:
        assert last_consent_event(db, "p1", "dr") is None
        with db.transaction():
            insert_ledger_event(
                db, "p1", {"type": "consent", "event": "consent_granted", "clinician": "dr"}
            )
            insert_ledger_event(
                db, "p1", {"type": "consent", "event": "consent_granted", "clinician": "other"}
            )
        db.execute("INSERT INTO ledger_events (patient_id, body) VALUES ('p1', '\"consent\" {')")
        assert last_consent_event(db, "p1", "dr") == "consent_granted"
        insert_ledger_event(
            db, "p1", {"type": "consent", "event": "consent_revoked", "clinician": "dr"}
        )
        assert last_consent_event(db, "p1", "dr") == "consent_revoked"
        assert last_consent_event(db, "p2", "dr") is None


def test_ledger_verification_passes_on_postgresql_and_catches_an_edited_reading(
    pg: Opener, postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = pg()
    register(store)
    data_dir = tmp_path / "data"
    init_keys(data_dir, None)
    s = Sealer(store, load_keys(data_dir, "hub-1", None), hub_id="hub-1", forward=False)  # type: ignore[arg-type]
    for w in range(3):
        store.write(
            [reading("cgm-1", w * 10 + i, T0 + timedelta(minutes=w * 10 + i)) for i in range(10)]
        )
        store.add_ledger_event("p1", {"type": "note", "w": w})
        s.seal(100, NOW)
    report = verify.verify_data_dir(data_dir, "hub-1", storage_url=postgres_url)
    assert report.ok and (report.batches, report.readings) == (3, 30), report.message
    sql(postgres_url, "UPDATE readings SET value = 250 WHERE seq = 13")
    report = verify.verify_data_dir(data_dir, "hub-1", storage_url=postgres_url)
    assert not report.ok and "batch 1" in report.message, report.message


def test_a_new_month_does_not_wait_for_readers_of_the_old_ones(
    pg: Opener, postgres_url: str
) -> None:
    register(pg())
    database = postgres_url.rsplit("/", 1)[1]
    sql(postgres_url, f"ALTER DATABASE {database} SET lock_timeout = 1000")
    store = pg()
    store.write([reading("cgm-1", 1, T0)])
    with psycopg.connect(postgres_url) as reader:
        reader.execute("SELECT count(*) FROM readings")  # a dashboard's open transaction
        result = store.write([reading("cgm-1", 2, datetime(2027, 3, 1, tzinfo=UTC))])
        reader.rollback()
    assert len(result.stored) == 1


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(2999, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_a_stored_time_is_the_instant_of_its_rfc3339_text(value: datetime) -> None:
    # The instant SQLite keeps as text: what the readings' PostgreSQL columns must hold too.
    stored = _stored_time(value)
    assert stored == parse_rfc3339(to_rfc3339(value))
    assert stored.tzinfo is UTC
    assert stored.microsecond % 1000 == 0 and value - stored < timedelta(milliseconds=1)


@pytest.mark.parametrize(
    "reading",
    [
        Reading(
            patient_id="p1",
            device_id="cgm-1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=101.0,
            unit=Unit.MG_DL,
            time=T0,
            source=Source.BLE,
            seq=7,
            status=("sensor_temperature_high", "device_battery_low"),
        ),
        Reading(
            patient_id="p1",
            device_id="meter-1",
            kind=ReadingKind.GLUCOSE,
            value=99.0,
            unit=Unit.MG_DL,
            time=T0 + timedelta(microseconds=1500),
            source=Source.HTTP,
            original_value=5.5,
            original_unit=Unit.MMOL_L,
        ),
        Reading(
            patient_id="p2",
            device_id="hr-1",
            kind=ReadingKind.HEART_RATE,
            value=61.0,
            unit=Unit.BPM,
            time=T0,
            source=Source.VIRTUAL,
        ),
    ],
    ids=["seq-and-status", "mmol-no-seq", "heart-rate"],
)
def test_a_readings_postgresql_row_is_its_sqlite_row_less_the_sqlite_columns(
    reading: Reading,
) -> None:
    time = _stored_time(reading.time)
    assert _pg_reading_row(reading, time, NOW) == _pg_row(reading_to_row(reading), time, NOW)
