import dataclasses
import hashlib
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.errors import RegistryError
from gateway.model import (
    Device,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import DeadLetter, Origin, RejectReason
from gateway.shapes import (
    reading_to_json,
)
from gateway.storage.contract import (
    DEAD_LETTER_PREFIX_BYTES,
    Message,
)
from gateway.storage.rows import (
    reading_canonical_from_row,
    reading_from_row,
    reading_json_from_row,
    reading_to_row,
)
from gateway.storage.sqlite_migrations import migrate
from gateway.store import (
    DB_FILENAME,
    Store,
)
from gateway.units import Unit
from ledger.jcs import canonicalize

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def cgm(seq: int | None, value: float = 100.0, minutes: int = 0) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=T0 + timedelta(minutes=minutes),
        source=Source.MQTT,
        seq=seq,
        original_value=round(value / 18.01559, 2),
        original_unit=Unit.MMOL_L,
    )


def test_readings_round_trip_with_original_unit(store: Store) -> None:
    store.write([cgm(1, 99.0)])
    [back] = store.readings(patient_id="p1")
    assert back == cgm(1, 99.0)
    assert back.original_unit is Unit.MMOL_L


def test_replayed_sequence_numbers_are_dropped(store: Store) -> None:
    first = store.write([cgm(1), cgm(2)])
    again = store.write([cgm(2), cgm(3)])
    assert len(first.stored) == 2 and first.duplicates == 0
    assert len(again.stored) == 1 and again.duplicates == 1
    assert [r.seq for r in store.readings()] == [1, 2, 3]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 30), max_size=12), min_size=1, max_size=8))
def test_each_write_reports_exactly_the_readings_it_added(
    tmp_path_factory: pytest.TempPathFactory, writes: list[list[int]]
) -> None:
    """Whatever mix of new sequence numbers, replays and repeats within one write."""
    store = Store(tmp_path_factory.mktemp("store"))
    store.add_patient(Patient(patient_id="p1", display_name="One"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    seen: set[int] = set()
    for seqs in writes:
        result = store.write([cgm(seq, minutes=seq) for seq in seqs])
        new: list[int] = []
        for seq in seqs:
            if seq not in seen:
                seen.add(seq)
                new.append(seq)
        assert [r.seq for r in result.stored] == new
        assert result.duplicates == len(seqs) - len(new)
    assert sorted(r.seq for r in store.readings()) == sorted(seen)
    store.close()


def test_without_seq_time_kind_and_value_identify_a_reading(store: Store) -> None:
    store.write([cgm(None, 100.0), cgm(None, 100.0), cgm(None, 101.0)])
    assert store.count_readings() == 2


def test_dead_letters_keep_raw_bytes(store: Store) -> None:
    letter = DeadLetter(
        received_at=T0,
        origin=Origin(source=Source.MQTT, topic="glucohub/v1/p1/x/readings", raw=b"\xff{bad"),
        reason=RejectReason.MALFORMED,
        detail="not JSON",
    )
    store.write([], dead_letters=[letter])
    [stored] = store.dead_letters()
    assert stored.payload == b"\xff{bad"
    assert stored.reason == "malformed"
    assert store.dead_letter_counts() == {RejectReason.MALFORMED: 1}


def test_data_survives_reopening(data_dir: Path, store: Store) -> None:
    store.write([cgm(7)])
    store.close()
    reopened = Store(data_dir)
    assert [r.seq for r in reopened.readings()] == [7]
    reopened.close()


def test_database_is_in_wal_mode_with_full_sync(store: Store) -> None:
    assert store._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_registry_refuses_duplicates_and_unknown_patients(store: Store) -> None:
    with pytest.raises(RegistryError, match="already exists"):
        store.add_patient(Patient(patient_id="p1", display_name="again"))
    with pytest.raises(RegistryError, match="unknown patient"):
        store.add_device(
            Device(device_id="x", patient_id="nobody", kind=DeviceKind.CGM, transport=Transport.BLE)
        )


def test_removing_a_device_keeps_it_listed_as_removed(store: Store) -> None:
    store.remove_device("cgm-1")
    device = store.get_device("cgm-1")
    assert device is not None and not device.active
    with pytest.raises(RegistryError):
        store.remove_device("cgm-1")


def test_time_window_queries(store: Store) -> None:
    store.write([cgm(i, minutes=5 * i) for i in range(12)])
    window = list(
        store.readings(
            patient_id="p1", since=T0 + timedelta(minutes=10), until=T0 + timedelta(minutes=30)
        )
    )
    assert [r.seq for r in window] == [2, 3, 4, 5]
    latest = store.latest_reading("p1", [ReadingKind.CGM_GLUCOSE])
    assert latest is not None and latest.seq == 11
    assert store.last_seq("cgm-1") == 11


def test_database_file_is_not_world_readable(data_dir: Path, store: Store) -> None:
    mode = stat.S_IMODE(os.stat(store.path).st_mode)
    assert mode & stat.S_IROTH == 0, oct(mode)


# The sealing hot path writes canonical JSON for stored rows directly; it must equal the
# generic RFC 8785 canonicalisation of the same reading, for any value a reading can hold.
texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@given(
    device=texts,
    value=st.floats(min_value=10, max_value=1000, allow_nan=False),
    original=st.one_of(
        st.none(),
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: abs(v) < 1e300),
    ),
    seq=st.one_of(st.none(), st.integers(min_value=0, max_value=2**53)),
    status=st.lists(texts.filter(lambda t: "," not in t), max_size=3),
)
def test_fast_canonical_rows_equal_rfc8785(
    tmp_path_factory: pytest.TempPathFactory,
    device: str,
    value: float,
    original: float | None,
    seq: int | None,
    status: list[str],
) -> None:
    reading = Reading(
        patient_id='p"1\\',
        device_id=device,
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=T0,
        source=Source.MQTT,
        seq=seq,
        original_value=original,
        original_unit=Unit.MMOL_L if original is not None else None,
        status=tuple(status),
    )
    row = (1, *reading_to_row(reading)[:6], *reading_to_row(reading)[7:12])
    assert reading_canonical_from_row(row) == canonicalize(reading_json_from_row(row)).decode()
    assert reading_json_from_row(row) == reading_to_json(reading)


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (2.0**53, "9007199254740992"),  # repr would say 9007199254740992.0
        (2.0**53 + 2, "9007199254740994"),
        (2.0**60, "1152921504606847000"),  # ECMAScript: shortest digits, then zeros
        (1e16, "10000000000000000"),
        (0.1, "0.1"),
        (1e-5, "0.00001"),
        (1.5e300, "1.5e+300"),
    ],
)
def test_fast_canonical_numbers_at_the_edges_of_its_shortcuts(number: float, text: str) -> None:
    """ECMAScript Number-to-String (RFC 8785 §3.2.2.3) at the edges of exact integers."""
    reading = Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=100.0,
        unit=Unit.MG_DL,
        time=T0,
        source=Source.MQTT,
        original_value=number,
        original_unit=Unit.MMOL_L,
    )
    row = (1, *reading_to_row(reading)[:6], *reading_to_row(reading)[7:12])
    assert f'"original_value":{text},' in reading_canonical_from_row(row)


def test_device_map_sees_devices_changed_by_another_process(data_dir: Path, store: Store) -> None:
    """The hub caches its device registry; `glucohub devices add/remove` run meanwhile
    from another process (another connection) must still be seen on the next chunk."""
    assert set(store.device_map()) == {"cgm-1", "meter-2"}
    other = Store(data_dir)
    other.add_device(
        Device(
            device_id="hr-3", patient_id="p2", kind=DeviceKind.HEART_RATE, transport=Transport.BLE
        )
    )
    other.remove_device("cgm-1")
    other.close()
    devices = store.device_map()
    assert set(devices) == {"cgm-1", "meter-2", "hr-3"}
    assert not devices["cgm-1"].active
    store.add_device(
        Device(device_id="scale-4", patient_id="p1", kind=DeviceKind.SCALE, transport=Transport.BLE)
    )
    assert "scale-4" in store.device_map()


def test_a_database_from_before_patient_acknowledgements_gains_their_columns(
    tmp_path: Path,
) -> None:
    import sqlite3

    from gateway.model import Alert, AlertKind, AlertLevel, AlertState

    db = sqlite3.connect(tmp_path / DB_FILENAME, isolation_level=None)
    migrate(db, T0, upto=3)  # migration 4 adds the columns
    db.close()
    store = Store(tmp_path)
    alert = Alert(
        alert_id="al_1",
        patient_id="p1",
        kind=AlertKind.URGENT_LOW,
        level=AlertLevel.URGENT,
        state=AlertState.RAISED,
        raised_at=T0,
        updated_at=T0,
        message="low",
        patient_acknowledged_by="ann",
        patient_acknowledged_at=T0,
    )
    store.record_alerts([alert], {})
    assert store.alerts("p1") == [alert]
    store.close()


# --- conflicts, unstorable records, bounded dead letters ----------------------------------


def test_an_identical_replay_is_a_duplicate_but_a_different_reading_is_a_conflict(
    store: Store,
) -> None:
    """Identity under a known (device, kind, seq): the same time, value and unit."""
    store.write([cgm(1, 100.0), cgm(2, 120.0, minutes=5)])
    replay = store.write([cgm(1, 100.0)])
    assert replay.duplicates == 1 and not replay.refused
    assert store.dead_letters() == []

    # The device's counter reset: seq 1 again, days later, another value.
    reset = store.write([cgm(1, 140.0, minutes=3000), cgm(7, 130.0, minutes=3005)])
    assert [r.seq for r in reset.stored] == [7]
    assert reset.duplicates == 0 and len(reset.refused) == 1
    [letter] = store.dead_letters()
    assert letter.reason == "conflict" and letter.device_id == "cgm-1"
    assert "100" in letter.detail and "140" in letter.detail
    assert json.loads(letter.payload)["value"] == 140  # the refused reading is kept
    [event] = store.device_events("p1")
    assert event.kind is DeviceEventKind.SEQ_CONFLICT and event.device_id == "cgm-1"
    assert event.seq == 1
    assert [(r.seq, r.value) for r in store.readings()] == [(1, 100.0), (2, 120.0), (7, 130.0)]
    assert store.dead_letter_counts() == {RejectReason.CONFLICT: 1}


def test_a_conflict_refuses_its_whole_message(store: Store) -> None:
    store.write([cgm(1, 100.0)])
    origin = Origin(source=Source.MQTT, topic="glucohub/v1/p1/cgm-1/readings", raw=b"[...]")
    result = store.write_messages(
        [
            Message(origin=origin, readings=(cgm(5, 90.0, minutes=10), cgm(1, 101.0))),
            Message(origin=origin, readings=(cgm(6, 95.0, minutes=15),)),
        ]
    )
    assert [r.seq for r in result.stored] == [6]
    assert list(result.refused) == [0]
    [letter] = store.dead_letters()
    assert letter.payload == b"[...]" and "reading 1" in letter.detail
    assert sorted(r.seq for r in store.readings()) == [1, 6]


def test_a_reading_that_cannot_be_sealed_becomes_an_unstorable_dead_letter(
    store: Store,
) -> None:
    """Defence in depth: a seq no canonical JSON can hold, or a status flag holding the
    separator, reaches the store from a source that skipped validation."""
    huge = cgm(2**60, 100.0)
    comma = dataclasses.replace(cgm(3, 100.0, minutes=5), status=("low,battery",))
    result = store.write([cgm(1, 100.0), huge, comma, cgm(4, 100.0, minutes=10)])
    assert [r.seq for r in result.stored] == [1, 4]
    assert sorted(result.refused) == [1, 2]
    letters = store.dead_letters()
    assert [d.reason for d in letters] == ["unstorable", "unstorable"]
    assert str(2**60) in letters[0].detail
    assert [u.row_id for u in store.unsealed_for_seal(10)[0]] == [r[0] for r in _ids(store)]
    for unsealed in store.unsealed_for_seal(10)[0]:
        canonicalize(json.loads(unsealed.canonical))


def _ids(store: Store) -> list[tuple[int]]:
    return store._db.execute("SELECT id FROM readings ORDER BY id").fetchall()


def test_a_big_dead_letter_keeps_a_prefix_with_the_length_and_hash_of_the_whole(
    store: Store,
) -> None:
    raw = os.urandom(1024) * 1024  # 1 MiB
    letter = DeadLetter(
        received_at=T0,
        origin=Origin(source=Source.MQTT, topic="glucohub/v1/p1/cgm-1/readings", raw=raw),
        reason=RejectReason.OVERSIZED,
        detail="1048576 bytes > 65536",
    )
    store.write([], dead_letters=[letter])
    [stored] = store.dead_letters()
    assert stored.payload == raw[:DEAD_LETTER_PREFIX_BYTES] and DEAD_LETTER_PREFIX_BYTES == 4096
    assert stored.payload_bytes == len(raw)
    assert stored.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert os.path.getsize(store.path) + os.path.getsize(f"{store.path}-wal") < 512 * 1024


def test_dead_letters_stored_before_the_length_columns_still_list(data_dir: Path) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(data_dir / DB_FILENAME, isolation_level=None)
    migrate(db, T0, upto=4)  # migration 5 adds the length and hash columns
    db.execute(
        "INSERT INTO dead_letters (received_at, source, topic, reason, detail, payload) "
        "VALUES ('2026-01-01T00:00:00.000Z', 'mqtt', 't', 'malformed', 'x', X'ff00')"
    )
    db.close()
    store = Store(data_dir)
    [old] = store.dead_letters()
    assert (old.payload, old.payload_bytes) == (b"\xff\x00", 2)
    assert old.payload_sha256 == hashlib.sha256(b"\xff\x00").hexdigest()
    store.close()


def test_status_flags_stored_before_the_token_rule_still_read_and_seal_the_same() -> None:
    """A row stored with "a,b" (two flags, or one with a comma) reads as two flags, as it
    was sealed: existing batches keep verifying."""
    row = (1, "p1", "cgm-1", "cgm_glucose", 100.0, "mg/dL", "2026-01-01T00:00:00.000Z", 1,
           "mqtt", 100.0, "mg/dL", "low,battery")  # fmt: skip
    assert reading_from_row(row).status == ("low", "battery")
    assert reading_canonical_from_row(row) == canonicalize(reading_json_from_row(row)).decode()
    assert '"status":["low","battery"]' in reading_canonical_from_row(row)
