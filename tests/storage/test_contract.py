"""The storage contract: what every backend must do, run on SQLite and on PostgreSQL.

Expected values are written out by hand from the contract (gateway/store.py docstrings),
never read back from one backend to check the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.errors import RegistryError, StorageError
from gateway.model import (
    Alert,
    AlertKind,
    AlertLevel,
    AlertState,
    Device,
    DeviceEvent,
    DeviceEventKind,
    DeviceKind,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import DeadLetter, Origin, RejectReason
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.storage.contract import (
    DEAD_LETTER_PREFIX_BYTES,
    Message,
    Unsealable,
)
from gateway.units import Unit
from tests.storage.conftest import AnyStore, Backend

T0 = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)


def cgm(seq: int | None, value: float = 99.0, minutes: int = 0, **kw: object) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=T0 + timedelta(minutes=minutes),
        source=Source.MQTT,
        seq=seq,
        original_value=5.5,
        original_unit=Unit.MMOL_L,
        **kw,  # type: ignore[arg-type]
    )


def meter(value: float, minutes: int) -> Reading:
    return Reading(
        patient_id="p2",
        device_id="meter-2",
        kind=ReadingKind.GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=T0 + timedelta(minutes=minutes),
        source=Source.BLE,
    )


def canonical_cgm(seq: int, value: str = "99", time: str = "2026-11-24T08:00:00.000Z") -> str:
    return (
        '{"device_id":"cgm-1","kind":"cgm_glucose","original_unit":"mmol/L",'
        f'"original_value":5.5,"patient_id":"p1","seq":{seq},"source":"mqtt","status":[],'
        f'"time":"{time}","unit":"mg/dL","value":{value}}}'
    )


# -- registry ------------------------------------------------------------------------------


def test_registry_round_trip(backend: Backend) -> None:
    store = backend.open()
    store.add_patient(Patient(patient_id="zed", display_name="Zed", timezone="Europe/Paris"))
    store.add_patient(Patient(patient_id="Amy", display_name="Amy", simulated=True))
    store.add_device(
        Device(device_id="m", patient_id="zed", kind=DeviceKind.METER, transport=Transport.BLE)
    )
    assert [p.patient_id for p in store.list_patients()] == ["Amy", "zed"]  # byte order
    assert store.get_patient("Amy") == Patient(
        patient_id="Amy", display_name="Amy", timezone="UTC", simulated=True
    )
    assert store.get_patient("nobody") is None
    assert store.get_device("m") == Device(
        device_id="m", patient_id="zed", kind=DeviceKind.METER, transport=Transport.BLE
    )
    assert list(store.device_map()) == ["m"]
    assert store.list_devices("Amy") == []


def test_registry_refusals(store: AnyStore) -> None:
    with pytest.raises(RegistryError, match="already exists"):
        store.add_patient(Patient(patient_id="p1", display_name="Again"))
    with pytest.raises(RegistryError, match="unknown patient"):
        store.add_device(
            Device(
                device_id="x", patient_id="nobody", kind=DeviceKind.CGM, transport=Transport.MQTT
            )
        )
    with pytest.raises(RegistryError, match="already exists"):
        store.add_device(
            Device(device_id="cgm-1", patient_id="p2", kind=DeviceKind.CGM, transport=Transport.BLE)
        )
    store.remove_device("cgm-1")
    assert store.device_map()["cgm-1"].active is False
    with pytest.raises(RegistryError, match="no active device"):
        store.remove_device("cgm-1")


def test_a_removed_device_paired_again_is_active_with_its_history(store: AnyStore) -> None:
    """A meter removed (a flat battery, a lost bond) and paired again: the same device id,
    active again, its earlier readings still its own; nobody else can take its id."""
    store.write([cgm(1), cgm(2, minutes=5)])
    store.remove_device("cgm-1")
    again = Device(
        device_id="cgm-1",
        patient_id="p1",
        kind=DeviceKind.CGM,
        transport=Transport.BLE,
        name="Sensor after a battery change",
        address="AA:BB:CC:DD:EE:01",
    )
    with pytest.raises(RegistryError, match="already exists"):  # not as another patient's
        store.add_device(dataclasses.replace(again, patient_id="p2"))
    store.add_device(again)
    assert store.get_device("cgm-1") == again  # active, with the new name and address
    assert [r.seq for r in store.readings(patient_id="p1")] == [1, 2]
    store.write([cgm(3, minutes=10)])
    assert [r.seq for r in store.readings(patient_id="p1")] == [1, 2, 3]
    with pytest.raises(RegistryError, match="already exists"):  # active: not twice
        store.add_device(again)


def test_a_device_added_by_another_connection_is_seen(backend: Backend, store: AnyStore) -> None:
    assert "late" not in store.device_map()
    other = backend.open()
    other.add_device(
        Device(device_id="late", patient_id="p2", kind=DeviceKind.METER, transport=Transport.BLE)
    )
    assert store.device_map()["late"].patient_id == "p2"


# -- ingest --------------------------------------------------------------------------------


def test_a_replay_is_counted_as_a_duplicate_and_not_stored_twice(store: AnyStore) -> None:
    first = store.write([cgm(1), cgm(2, minutes=5)])
    again = store.write([cgm(2, minutes=5), cgm(3, minutes=10)])
    assert (len(first.stored), first.duplicates) == (2, 0)
    assert (again.stored, again.duplicates, again.dead_letters) == ((cgm(3, minutes=10),), 1, 0)
    assert [r.seq for r in store.readings()] == [1, 2, 3]
    assert store.count_readings() == 3


def test_a_large_write_stores_every_reading_once_in_input_order(store: AnyStore) -> None:
    # 1,000 = 3 x 256 + 128 + 64 + 32 + 8: every statement size the SQLite writer uses.
    seqs = [(n * 7919) % 1000 for n in range(1000)]  # a permutation of 0..999
    readings = [cgm(seq, 40.0 + seq % 300, minutes=seq) for seq in seqs]
    result = store.write(readings)
    assert (len(result.stored), result.duplicates) == (1000, 0)
    rows, bad = store.unsealed_for_seal(1000)
    assert bad == []
    assert [r.time for r in rows] == [
        f"{(T0 + timedelta(minutes=seq)).strftime('%Y-%m-%dT%H:%M')}:00.000Z" for seq in seqs
    ]
    assert [r.seq for r in store.readings()] == list(range(1000))  # by time
    again = store.write([*readings[500:], cgm(1000, minutes=1000)])
    assert (again.stored, again.duplicates) == ((cgm(1000, minutes=1000),), 500)
    assert store.count_readings() == 1001


def test_a_repeat_within_one_write_is_stored_once(store: AnyStore) -> None:
    result = store.write([cgm(7), cgm(7)])
    assert (len(result.stored), result.duplicates) == (1, 1)
    assert store.count_readings() == 1


def test_a_conflict_refuses_its_whole_message(store: AnyStore) -> None:
    store.write([cgm(1, 99.0)])
    origin = Origin(source=Source.MQTT, topic="glucohub/cgm-1", raw=b'{"x":1}')
    result = store.write_messages(
        [
            Message(origin=origin, readings=(cgm(5, minutes=25), cgm(1, 120.0))),
            Message(origin=None, readings=(cgm(6, minutes=30),)),
        ],
        now=NOW,
    )
    # The first message is refused whole (seq 5 too); the second is stored.
    assert result.stored == (cgm(6, minutes=30),)
    assert result.duplicates == 0
    assert result.dead_letters == 1 and result.events == 1
    assert list(result.refused) == [0]
    assert result.refused[0].reason is RejectReason.CONFLICT
    assert [r.seq for r in store.readings()] == [1, 6]
    [letter] = store.dead_letters()
    assert (letter.reason, letter.topic, letter.device_id) == (
        "conflict",
        "glucohub/cgm-1",
        "cgm-1",
    )
    assert letter.payload == b'{"x":1}' and letter.received_at == "2026-11-24T09:00:00.000Z"
    assert letter.detail == (
        "cgm_glucose seq 1 of device 'cgm-1' is already stored as 99 mg/dL at "
        "2026-11-24T08:00:00.000Z; refused 120 mg/dL at 2026-11-24T08:00:00.000Z "
        "(a device whose counter reset?) (reading 1)"
    )
    [event] = store.device_events("p1")
    assert (event.kind, event.seq, event.time) == (DeviceEventKind.SEQ_CONFLICT, 1, NOW)
    assert store.dead_letter_counts() == {RejectReason.CONFLICT: 1}


def test_an_unstorable_message_becomes_a_dead_letter_and_the_rest_is_stored(
    store: AnyStore,
) -> None:
    bad_status = cgm(2, minutes=5, status=("a,b",))
    not_utf8 = cgm(3, minutes=10, status=("\udc80",))  # a lone surrogate: no UTF-8
    result = store.write([cgm(1), bad_status, not_utf8, cgm(4, minutes=15)])
    assert result.stored == (cgm(1), cgm(4, minutes=15))
    assert sorted(result.refused) == [1, 2]
    assert {d.reason for d in result.refused.values()} == {RejectReason.UNSTORABLE}
    assert [r.seq for r in store.readings()] == [1, 4]
    assert [d.reason for d in store.dead_letters()] == ["unstorable", "unstorable"]
    assert store.count_unsealed() == 2


def test_an_unstorable_reading_refuses_its_whole_message(store: AnyStore) -> None:
    origin = Origin(source=Source.MQTT, topic="glucohub/cgm-1", raw=b"[...]")
    result = store.write_messages(
        [Message(origin=origin, readings=(cgm(5), cgm(6, minutes=5, status=("x,y",))))],
        now=NOW,
    )
    assert result.stored == () and list(result.refused) == [0]
    assert store.count_readings() == 0
    [letter] = store.dead_letters()
    assert (letter.reason, letter.payload) == ("unstorable", b"[...]")
    assert letter.detail.startswith("ValueError: status flag 'x,y' cannot be stored")


def test_events_and_dead_letters_commit_with_the_readings(store: AnyStore) -> None:
    raw = bytes(range(256)) * 20  # 5120 bytes
    letter = DeadLetter(
        received_at=NOW,
        origin=Origin(source=Source.MQTT, topic="t/\x00nul", raw=raw, device_id="cgm-1"),
        reason=RejectReason.MALFORMED,
        detail="bad JSON",
    )
    warmup = DeviceEvent(
        patient_id="p1",
        device_id="cgm-1",
        kind=DeviceEventKind.SENSOR_WARMUP,
        time=T0,
        detail="2 h",
        seq=9,
    )
    result = store.write([cgm(1)], [warmup], [letter])
    assert (result.events, result.dead_letters) == (1, 1)
    assert store.device_events() == [warmup]
    assert store.device_events("p2") == []
    [stored] = store.dead_letters()
    assert stored.payload == raw[:DEAD_LETTER_PREFIX_BYTES]
    assert (stored.payload_bytes, stored.truncated) == (5120, True)
    assert stored.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert stored.topic.startswith("t/") and stored.topic.endswith("nul")


# -- queries -------------------------------------------------------------------------------


def test_queries_by_patient_time_and_kind(store: AnyStore) -> None:
    store.write([cgm(1, 100.0, 0), cgm(2, 110.0, 5), cgm(3, 120.0, 10), meter(150.0, 7)])
    assert [r.value for r in store.readings(patient_id="p1")] == [100.0, 110.0, 120.0]
    assert [r.value for r in store.readings()] == [100.0, 110.0, 150.0, 120.0]  # time order
    window = store.readings(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=10))
    assert [r.value for r in window] == [110.0, 150.0]  # since inclusive, until exclusive
    assert [r.value for r in store.readings(kinds=[ReadingKind.GLUCOSE])] == [150.0]
    latest = store.latest_reading("p1", [ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE])
    assert latest == cgm(3, 120.0, 10)
    assert store.latest_reading("p2", [ReadingKind.CGM_GLUCOSE]) is None
    assert store.last_seq("cgm-1") == 3 and store.last_seq("meter-2") is None
    assert store.last_time("meter-2") == T0 + timedelta(minutes=7)
    assert store.last_time("nothing") is None


def test_times_keep_milliseconds_only(store: AnyStore) -> None:
    precise = T0 + timedelta(microseconds=123_456)
    store.write([dataclasses.replace(cgm(1), time=precise)])
    [back] = store.readings()
    assert back.time == T0 + timedelta(milliseconds=123)
    # A bound within the same millisecond still finds it, as the stored value is truncated.
    assert len(list(store.readings(since=T0 + timedelta(microseconds=123_900)))) == 1


def test_reading_points_are_the_times_and_values_of_one_kind(store: AnyStore) -> None:
    late = T0 + timedelta(minutes=10, microseconds=123_456)
    store.write(
        [cgm(1, 100.0, 0), cgm(2, 110.0, 5), dataclasses.replace(cgm(3, 120.0), time=late),
         cgm(4, 130.0, 5), meter(150.0, 7)]
    )  # fmt: skip
    since = T0 + timedelta(minutes=5)
    points = store.reading_points(patient_id="p1", since=since, kind=ReadingKind.CGM_GLUCOSE)
    # from `since` on (inclusive), in time order and then as written; milliseconds kept
    assert points == [
        (T0 + timedelta(minutes=5), 110.0),
        (T0 + timedelta(minutes=5), 130.0),
        (T0 + timedelta(minutes=10, milliseconds=123), 120.0),
    ]
    assert all(time.tzinfo is UTC for time, _ in points)
    assert store.reading_points(patient_id="p1", since=T0, kind=ReadingKind.GLUCOSE) == []
    meter_points = store.reading_points(patient_id="p2", since=T0, kind=ReadingKind.GLUCOSE)
    assert meter_points == [(T0 + timedelta(minutes=7), 150.0)]


# -- sealing -------------------------------------------------------------------------------


def sealer_for(store: AnyStore, tmp_path: Path) -> Sealer:
    keys_dir = tmp_path / "keys-home"
    init_keys(keys_dir, None)
    return Sealer(store, load_keys(keys_dir, "hub-1", None), hub_id="hub-1", forward=True)  # type: ignore[arg-type]


def test_the_sealing_cycle(store: AnyStore, tmp_path: Path) -> None:
    store.write([cgm(2, 100.0, 5), cgm(1, 99.0, 0), meter(150.0, 7)])
    store.add_ledger_event("p1", {"type": "consent", "event": "consent_granted", "n": 1.0})
    rows, bad = store.unsealed_for_seal(10)
    assert bad == []
    # Id order (the order written), each as RFC 8785 text.
    assert [r.canonical for r in rows][:2] == [
        canonical_cgm(2, "100", "2026-11-24T08:05:00.000Z"),
        canonical_cgm(1),
    ]
    assert [r.time for r in rows] == [
        "2026-11-24T08:05:00.000Z",
        "2026-11-24T08:00:00.000Z",
        "2026-11-24T08:07:00.000Z",
    ]
    sealer = sealer_for(store, tmp_path)
    outcome = sealer.seal(10, NOW)
    assert outcome is not None and outcome.records == 4 and outcome.tree_size == 1
    assert store.count_unsealed() == 0 and store.count_unsealed_events() == 0
    records = store.batch_records(0)
    assert records.patients == ["p1", "p1", "p2", "p1"]
    assert records.canonical[:2] == [
        canonical_cgm(2, "100", "2026-11-24T08:05:00.000Z").encode(),
        canonical_cgm(1).encode(),
    ]
    assert records.canonical[3] == b'{"event":"consent_granted","n":1,"type":"consent"}'
    assert records.reading_count == 3 and records.seed is not None
    batch = store.batch(0)
    assert batch is not None and batch.reading_count == 3
    assert (batch.first_time, batch.last_time) == (T0, T0 + timedelta(minutes=7))
    assert store.last_batch() == batch and list(store.batches()) == [batch]
    assert store.batch_seqs() == [0] and store.leaf_hashes() == [batch.leaf_hash]
    assert [r.seq for r in store.batch_readings(0)] == [2, 1, None]
    assert store.batch_events(0) == [{"type": "consent", "event": "consent_granted", "n": 1}]
    [mine] = store.patient_batches("p2", 5)
    assert (mine.reading_count, mine.first_time) == (1, T0 + timedelta(minutes=7))
    tree = store.tree_state()
    assert tree is not None and tree[0] == 1
    latest = store.latest_checkpoint()
    assert latest is not None and latest[0] == 1 and latest[2].startswith("glucohub.local/hub-1")
    # The batch and its checkpoint were queued for upstream, in that order.
    assert [topic for _, topic, _ in store.outbox_pending(10)] == [
        "glucohub/v1/hubs/hub-1/batches",
        "glucohub/v1/hubs/hub-1/checkpoints",
    ]
    # Nothing left: no empty batch.
    assert sealer.seal(10, NOW) is None


def test_a_batch_naming_an_id_already_sealed_is_refused(store: AnyStore, tmp_path: Path) -> None:
    store.write([cgm(1)])
    sealer = sealer_for(store, tmp_path)
    first = sealer.seal(10, NOW)
    assert first is not None
    [row_id] = [r[0] for r in store.batch_reading_rows(0)]
    again = dataclasses.replace(first.batch, seq=1)
    with pytest.raises(StorageError, match="batch 1"):
        store.record_sealed_batch(
            batch=again,
            reading_ids=[row_id],
            event_ids=[],
            tree_size=2,
            compact_tree=b"",
            record_seed=b"s" * 32,
            outbox=None,
        )
    assert store.batch_seqs() == [0]  # nothing of the refused batch was kept


def test_quarantined_records_leave_the_unsealed_set(store: AnyStore) -> None:
    store.write([cgm(1), cgm(2, minutes=5)])
    [first, second] = [r.row_id for r in store.unsealed_for_seal(10)[0]]
    store.quarantine([Unsealable("reading", first, "p1", "test: not sealable")], NOW)
    assert store.count_unsealed() == 1
    assert store.quarantined() == [Unsealable("reading", first, "p1", "test: not sealable")]
    assert store.count_quarantined() == 1
    assert [r.row_id for r in store.unsealed_for_seal(10)[0]] == [second]


# -- checkpoints and cosignatures ----------------------------------------------------------


def test_checkpoints_and_cosignatures(store: AnyStore) -> None:
    store.persist_checkpoint(3, b"r" * 32, NOW)
    store.persist_checkpoint(3, b"r" * 32, NOW)  # the same root again: fine
    with pytest.raises(StorageError, match="different root"):
        store.persist_checkpoint(3, b"x" * 32, NOW)
    assert store.unsigned_checkpoints() == [(3, b"r" * 32)]
    assert store.latest_checkpoint() is None
    store.record_checkpoint_note(3, "note 3", "up/checkpoints", NOW)
    with pytest.raises(StorageError, match="already signed"):
        store.record_checkpoint_note(3, "other", None, NOW)
    assert store.latest_checkpoint() == (3, b"r" * 32, "note 3")
    assert store.recent_checkpoints(5) == [(3, b"r" * 32)]
    assert store.checkpoint_root(3) == b"r" * 32 and store.checkpoint_root(4) is None
    store.add_cosignature(3, "wb", "— wb line", NOW)
    store.add_cosignature(3, "Wa", "— Wa line", NOW)
    store.add_cosignature(3, "wb", "— wb line 2", NOW)
    assert store.cosignatures(3) == ["— Wa line", "— wb line 2"]


# -- alerts, ledger events, outbox ---------------------------------------------------------


def alert(state: AlertState, minutes: int) -> Alert:
    return Alert(
        alert_id="a1",
        patient_id="p1",
        kind=AlertKind.LOW,
        level=AlertLevel.WARNING,
        state=state,
        raised_at=T0,
        updated_at=T0 + timedelta(minutes=minutes, microseconds=999),
        message="low",
        glucose_mg_dl=65.0,
        resolved_at=T0 + timedelta(minutes=minutes) if state is AlertState.RESOLVED else None,
    )


def test_alerts_are_upserted_and_every_transition_is_a_ledger_event(store: AnyStore) -> None:
    store.record_alerts([alert(AlertState.RAISED, 0)], {"p1": '{"s":1}'})
    assert [a.state for a in store.alerts(open_only=True)] == [AlertState.RAISED]
    store.record_alerts([alert(AlertState.RESOLVED, 20)], {"p1": '{"s":2}'})
    [back] = store.alerts("p1")
    assert back.state is AlertState.RESOLVED
    assert back.updated_at == T0 + timedelta(minutes=20)  # milliseconds kept
    assert back.resolved_at == T0 + timedelta(minutes=20)
    assert store.alerts(open_only=True) == [] and store.alerts("p2") == []
    assert store.alert_engine_states() == {"p1": '{"s":2}'}
    assert store.count_unsealed_events() == 2
    events, bad = store.unsealed_events_for_seal(10)
    assert bad == [] and [e.patient_id for e in events] == ["p1", "p1"]
    assert events[1].canonical == (
        '{"acknowledged_at":null,"acknowledged_by":null,"alert_id":"a1","glucose_mg_dl":65,'
        '"kind":"low","level":"warning","message":"low","patient_acknowledged_at":null,'
        '"patient_acknowledged_by":null,"patient_id":"p1","raised_at":"2026-11-24T08:00:00.000Z",'
        '"resolved_at":"2026-11-24T08:20:00.000Z","state":"resolved","type":"alert",'
        '"updated_at":"2026-11-24T08:20:00.000Z"}'
    )


def test_the_outbox(store: AnyStore) -> None:
    store.persist_checkpoint(1, b"r" * 32, NOW)
    store.record_checkpoint_note(1, "n1", "up/a", NOW)
    store.persist_checkpoint(2, b"s" * 32, NOW)
    store.record_checkpoint_note(2, "n2", "up/b", NOW)
    pending = store.outbox_pending(10)
    assert [(t, p) for _, t, p in pending] == [("up/a", b"n1"), ("up/b", b"n2")]
    store.outbox_mark_sent(pending[0][0], NOW)
    store.outbox_mark_sent(pending[0][0], NOW)  # twice: harmless
    assert [t for _, t, _ in store.outbox_pending(10)] == ["up/b"]
    assert store.outbox_pending(0) == []


def test_a_read_only_store_reads_what_the_writer_wrote(backend: Backend, store: AnyStore) -> None:
    store.write([cgm(1)])
    reader = backend.open(read_only=True)
    assert [r.seq for r in reader.readings()] == [1]
    assert reader.count_unsealed() == 1
