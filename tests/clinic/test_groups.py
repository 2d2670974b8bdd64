"""A worker handles the messages that have arrived as one group: one transaction, then an
acknowledgement for each. Real PostgreSQL; the worker tests also a real Mosquitto."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from device_adapters.mqtt.client import InboundMessage
from gateway.clinic.witness import AlarmKind
from gateway.errors import TransientStorageError
from gateway.settings import load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_clinic_group import Item
from glucohub.clinic import ClinicWorker
from glucohub.simulate import SimulatedHub, forward_until_sent
from tests.clinic.hubs import copy_hub, make_hub, produce
from tests.support.mosquitto import Mosquitto

NOW = datetime(2026, 3, 2, tzinfo=UTC)

# The first two statements that write records fail as a serialization failure (SQLSTATE
# 40001, which a retry may cure) — after the group has written its batches. A sequence,
# because it keeps counting when the failed transaction rolls back.
FAIL_TWICE = """
CREATE SEQUENCE test_record_failures;
CREATE FUNCTION test_fail_twice() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF nextval('test_record_failures') <= 2 THEN
        RAISE EXCEPTION 'injected failure' USING ERRCODE = '40001';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER test_fail_twice BEFORE INSERT ON clinic_records
    FOR EACH STATEMENT EXECUTE FUNCTION test_fail_twice();
"""


@pytest.fixture
def archive(postgres_url: str) -> Iterator[ClinicArchive]:
    opened = ClinicArchive(postgres_url)
    yield opened
    opened.close()


def _items(pairs: list[tuple[str, bytes]]) -> list[Item]:
    out = []
    for topic, payload in pairs:
        parts = topic.split("/")
        out.append(Item(hub_id=parts[3], kind=parts[4], topic=topic, payload=payload))
    return out


def _tampered(batch: tuple[str, bytes]) -> tuple[str, bytes]:
    view = json.loads(batch[1])
    view["records"][0]["record"]["value"] = 39.0
    return batch[0], json.dumps(view).encode()


def _records(pairs: list[tuple[str, bytes]]) -> list[dict[str, object]]:
    return [
        r["record"]
        for topic, payload in pairs
        if topic.endswith("/batches")
        for r in json.loads(payload)["records"]
    ]


def _stored(archive: ClinicArchive, hub_id: str) -> list[dict[str, object]]:
    rows = archive.rows(
        "SELECT canonical FROM clinic_records WHERE hub_id = %s ORDER BY batch_seq, record_index",
        (hub_id,),
    )
    return [json.loads(r[0]) for r in rows]


def test_one_tampered_batch_in_a_group_is_dead_lettered_and_the_others_stored(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    one, two = make_hub(tmp_path, "h1"), make_hub(tmp_path, "h2")
    for hub in (one, two):
        archive.enrol(*hub.enrolment, NOW)
    first, second = produce(one, 3), produce(two, 3)
    bad = _tampered(first[2])  # h1's batch 1 with another glucose value
    group = [*first[:2], *second[:3], bad, *first[2:], *second[3:]]
    outcomes = [h.outcome for h in archive.handle_group(_items(group), NOW)]
    # each hub: batch, checkpoint, batch, checkpoint, batch, checkpoint; each checkpoint
    # but its hub's last is replaced by the next before anything stores it
    assert outcomes == [
        "stored", "superseded", "stored", "superseded", "stored",
        "dead_letter",
        "stored", "superseded", "stored", "accepted", "superseded", "stored", "accepted",
    ]  # fmt: skip
    assert _stored(archive, "h1") == _records(first)
    assert _stored(archive, "h2") == _records(second)
    assert {h.hub_id: (h.batches, h.checkpoint_size, h.state) for h in archive.hubs()} == {
        "h1": (3, 3, "active"),
        "h2": (3, 3, "active"),
    }
    [alarm] = archive.alarms()
    assert (alarm.hub_id, alarm.kind, alarm.occurrences) == ("h1", "bad_signature", 1)
    [(reason, raw)] = archive.rows("SELECT reason, payload FROM clinic_dead_letters")
    assert reason == "bad_signature" and bytes(raw) == bad[1]


def test_a_database_error_mid_group_stores_nothing_and_the_retry_stores_everything_once(
    tmp_path: Path, archive: ClinicArchive, postgres_url: str
) -> None:
    hub = make_hub(tmp_path, "h1", patients=3)
    archive.enrol(*hub.enrolment, NOW)
    items = _items(produce(hub, 4))
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(FAIL_TWICE.encode())
    for _ in range(2):
        with pytest.raises(TransientStorageError, match="injected failure"):
            archive.handle_group(items, NOW)
        assert archive.counts()["batches"] == 0  # the group's batches went with it
    # this archive knows the hub's keys now: the checkpoints the group's next one replaces
    # are acknowledged as superseded, only the last one is verified and stored
    assert [h.outcome for h in archive.handle_group(items, NOW)] == [
        *(["stored", "superseded"] * 3), "stored", "accepted",
    ]  # fmt: skip
    assert archive.counts()["records"] == 12
    assert archive.hubs()[0].checkpoint_size == 4
    # the same messages again (a group whose acknowledgements were lost): nothing twice
    assert [h.outcome for h in archive.handle_group(items, NOW)] == [
        "duplicate", "stale", "duplicate", "stale", "duplicate", "stale",
        "duplicate", "duplicate",
    ]  # fmt: skip
    assert archive.counts()["records"] == 12


def test_two_workers_storing_groups_of_many_hubs_at_once_neither_deadlock_nor_double(
    tmp_path: Path, archive: ClinicArchive, postgres_url: str
) -> None:
    hubs = [make_hub(tmp_path, f"h{i}") for i in range(5)]
    for hub in hubs:
        archive.enrol(*hub.enrolment, NOW)
    items = _items([item for hub in hubs for item in produce(hub, 6)])
    other = ClinicArchive(postgres_url)
    # Both get every item, in groups of 12 that span several hubs, in opposite orders: each
    # group locks its hubs in hub order, so neither waits for the other in a cycle (a
    # deadlock would surface here as an error, there is no retry in this test).
    forward = [items[i : i + 12] for i in range(0, len(items), 12)]
    backward = [list(reversed(g)) for g in reversed(forward)]
    errors: list[BaseException] = []

    def deliver(target: ClinicArchive, groups: list[list[Item]]) -> None:
        try:
            for group in groups:
                target.handle_group(group, NOW)
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=deliver, args=(archive, forward)),
        threading.Thread(target=deliver, args=(other, backward)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    assert errors == []
    assert archive.counts()["batches"] == 30 and archive.counts()["records"] == 60
    assert {h.checkpoint_size for h in archive.hubs()} == {6}
    assert archive.rows("SELECT count(*) FROM clinic_batches WHERE NOT linked") == [(0,)]
    assert archive.alarms() == []


def test_a_hub_enrolled_again_is_verified_with_its_new_keys_by_a_worker_that_knew_the_old(
    tmp_path: Path, archive: ClinicArchive, postgres_url: str
) -> None:
    hub = make_hub(tmp_path, "h1")
    impostor = make_hub(tmp_path / "elsewhere", "h1")  # the same id, other keys
    archive.enrol(*impostor.enrolment, NOW)  # an admin pasted the wrong keys
    sent = produce(hub, 1)
    items = _items(sent)
    # this worker has now parsed (and kept) the wrong keys
    assert [h.outcome for h in archive.handle_group(items, NOW)] == ["dead_letter"] * 2
    admin = ClinicArchive(postgres_url)
    admin.enrol(*hub.enrolment, NOW)  # nothing stored yet, so the keys may be replaced
    admin.close()
    assert [h.outcome for h in archive.handle_group(items, NOW)] == ["stored", "accepted"]
    assert _stored(archive, "h1") == _records(sent)


# -- checkpoints a later one of the group replaces -------------------------------------


def _resigned(checkpoint: tuple[str, bytes], *, root: bytes | None = None) -> tuple[str, bytes]:
    """The checkpoint with its signature bytes changed (a forgery by someone who can
    publish on the hub's topic), and with `root` as its root hash if given."""
    text, _, signature = checkpoint[1].decode().rpartition("\n\n")
    name, blob = signature.removeprefix("\u2014 ").rstrip("\n").split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    if root is not None:
        lines = text.split("\n")
        lines[2] = base64.b64encode(root).decode()
        text = "\n".join(lines)
    forged = f"{text}\n\n\u2014 {name} {base64.b64encode(bytes(raw)).decode()}\n"
    return checkpoint[0], forged.encode()


def _warm(archive: ClinicArchive, hub: SimulatedHub) -> list[tuple[str, bytes]]:
    """Enrol the hub and store its batch 0 and checkpoint 1: the archive knows its keys,
    as a running worker does after its first message, so groups are opened in `prepare`
    (a worker's verifying thread), not in `store`."""
    archive.enrol(*hub.enrolment, NOW)
    first = produce(hub, 1)
    assert [h.outcome for h in archive.handle_group(_items(first), NOW)] == [
        "stored",
        "accepted",
    ]
    return first


def _note(archive: ClinicArchive) -> tuple[int, str]:
    [(size, note)] = archive.rows("SELECT size, note FROM clinic_checkpoints")
    return int(size), str(note)


def test_a_replaced_checkpoint_is_superseded_and_only_the_groups_last_is_stored(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    sent = produce(hub, 3, start_minute=10)  # batches 1-3, checkpoints 2-4
    assert [h.outcome for h in archive.handle_group(_items(sent), NOW)] == [
        "stored", "superseded", "stored", "superseded", "stored", "accepted",
    ]  # fmt: skip
    assert _note(archive) == (4, sent[5][1].decode())
    assert archive.alarms() == [] and archive.counts()["dead_letters"] == 0


def test_a_forged_checkpoint_that_states_the_clinics_own_tree_is_only_superseded(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    # Its root is the one the clinic computed from the hub's verified batches, and it is
    # never stored: nothing it says is taken on its word, so it is not verified.
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    b1, c2, b2, c3 = produce(hub, 2, start_minute=10)
    handled = archive.handle_group(_items([b1, _resigned(c2), b2, c3]), NOW)
    assert [h.outcome for h in handled] == ["stored", "superseded", "stored", "accepted"]
    assert _note(archive) == (3, c3[1].decode())
    assert archive.alarms() == []


def test_a_forged_checkpoint_of_another_root_is_a_bad_signature_even_when_replaced(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    b1, c2, b2, c3 = produce(hub, 2, start_minute=10)
    forged = _resigned(c2, root=bytes(32))
    handled = archive.handle_group(_items([b1, forged, b2, c3]), NOW)
    assert [h.outcome for h in handled] == ["stored", "dead_letter", "stored", "accepted"]
    assert handled[1].alarm is AlarmKind.BAD_SIGNATURE
    assert [(a.kind, a.occurrences) for a in archive.alarms()] == [("bad_signature", 1)]
    assert archive.hubs()[0].state == "active"
    [(reason, raw)] = archive.rows("SELECT reason, payload FROM clinic_dead_letters")
    assert (reason, bytes(raw)) == ("bad_signature", forged[1])
    assert _note(archive) == (3, c3[1].decode())


def test_a_signed_fork_among_replaced_checkpoints_still_stops_the_hub(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    twin = copy_hub(hub, tmp_path / "twin")  # the same key and log, at size 1
    b1, c2, b2, c3 = produce(hub, 2, start_minute=10)
    their_c2 = produce(twin, 1, start_minute=20)[1]  # signed, another batch 1 under it
    handled = archive.handle_group(_items([b1, their_c2, c2, b2, c3]), NOW)
    # the fork stops the hub: what follows waits for an admin, dead-lettered
    assert [h.outcome for h in handled] == ["stored"] + ["dead_letter"] * 4
    assert handled[1].alarm is AlarmKind.FORK
    assert {a.kind for a in archive.alarms()} == {"fork"}
    assert archive.hubs()[0].state == "stopped"
    assert _note(archive)[0] == 1


def test_when_the_groups_last_checkpoint_is_refused_the_one_before_is_verified_and_stored(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    b1, c2, b2, c3 = produce(hub, 2, start_minute=10)
    handled = archive.handle_group(_items([b1, c2, b2, _resigned(c3)]), NOW)
    assert [h.outcome for h in handled] == ["stored", "accepted", "stored", "dead_letter"]
    assert _note(archive) == (2, c2[1].decode())
    assert [a.kind for a in archive.alarms()] == ["bad_signature"]


def test_a_replaced_checkpoint_kept_pending_is_verified_first(
    tmp_path: Path, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    _warm(archive, hub)
    b1, c2, b2, c3 = produce(hub, 2, start_minute=10)
    # both checkpoints before their batches: each would be kept pending, so the forged
    # one is verified (and refused) although the group's next checkpoint replaces it
    handled = archive.handle_group(_items([_resigned(c2), c3, b1, b2]), NOW)
    assert [h.outcome for h in handled] == ["dead_letter", "pending", "stored", "stored"]
    assert [a.kind for a in archive.alarms()] == ["bad_signature"]
    assert _note(archive) == (3, c3[1].decode())
    genuine = archive.handle_group(_items([c2, c3]), NOW)  # redelivered: older, the same
    assert [h.outcome for h in genuine] == ["stale", "duplicate"]
    assert archive.counts()["pending_checkpoints"] == 0


# -- through a worker and a real broker --------------------------------------------------


class Acks:
    """Every PUBACK the worker sends, with what the archive held (committed) just then."""

    def __init__(self, url: str) -> None:
        self.db = psycopg.connect(url, autocommit=True)
        self.seen: list[tuple[str, bytes, bool]] = []

    def committed(self, message: InboundMessage) -> bool:
        if message.topic.endswith("/batches"):
            view = json.loads(message.payload)
            row = self.db.execute(
                "SELECT count(*) FROM clinic_batches WHERE batch_seq = %s AND jws = %s",
                (view["batch_seq"], view["jws"]),
            ).fetchone()
            dead = self.db.execute(
                "SELECT count(*) FROM clinic_dead_letters WHERE payload = %s",
                (message.payload,),
            ).fetchone()
            return (row is not None and row[0] == 1) or (dead is not None and dead[0] == 1)
        size = int(message.payload.decode().splitlines()[1])
        row = self.db.execute("SELECT max(size) FROM clinic_checkpoints").fetchone()
        return row is not None and row[0] is not None and row[0] >= size


async def _run_worker(
    tmp_path: Path,
    broker: Mosquitto,
    url: str,
    hubs: list[SimulatedHub],
    extra: list[tuple[str, bytes]],
    until: int,
) -> tuple[ClinicWorker, Acks]:
    """A worker in this process; the hubs forward their outboxes (and `extra` is
    published) through the broker; returns once `until` messages were acknowledged."""
    config = tmp_path / "clinic.toml"
    config.write_text(f'[clinic]\nurl = "{url}"\nmqtt_url = "{broker.url}"\ngroup = "g"\n')
    worker = ClinicWorker(load_settings(config), "group-w1")
    acks = Acks(url)
    connection = worker._connection
    ack = connection.ack

    enough = asyncio.Event()

    def recording(message: InboundMessage) -> bool:
        acks.seen.append((message.topic, message.payload, acks.committed(message)))
        if len(acks.seen) >= until:
            enough.set()
        return ack(message)

    connection.ack = recording  # type: ignore[method-assign]
    running = asyncio.create_task(worker.run())
    try:
        await connection.wait_connected()  # and subscribed: what "consuming" waits for
        await forward_until_sent(hubs, broker.url)
        for topic, payload in extra:
            await connection.publish(topic, payload)
        await asyncio.wait_for(enough.wait(), 30)
        await asyncio.sleep(0.3)  # nothing acknowledged twice
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        acks.db.close()
    return worker, acks


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


@pytest.mark.slow
async def test_a_worker_acknowledges_a_group_only_after_its_commit_even_across_retries(
    tmp_path: Path, broker: Mosquitto, postgres_url: str, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    archive.enrol(*hub.enrolment, NOW)
    sent = produce(hub, 4, sent=False)
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(FAIL_TWICE.encode())
    worker, acks = await _run_worker(tmp_path, broker, postgres_url, [hub], [], until=8)
    assert sorted((t, p) for t, p, _ in acks.seen) == sorted(sent)  # each once
    assert all(committed for _t, _p, committed in acks.seen)
    assert worker.telemetry.value("glucohub_clinic_database_retries_total") == 2
    assert _stored(archive, "h1") == _records(sent)
    assert archive.hubs()[0].checkpoint_size == 4


@pytest.mark.slow
async def test_a_worker_stores_and_acknowledges_a_group_around_a_tampered_batch(
    tmp_path: Path, broker: Mosquitto, postgres_url: str, archive: ClinicArchive
) -> None:
    hub = make_hub(tmp_path, "h1")
    archive.enrol(*hub.enrolment, NOW)
    sent = produce(hub, 3, sent=False)
    bad = _tampered(sent[0])
    worker, acks = await _run_worker(tmp_path, broker, postgres_url, [hub], [bad], until=7)
    assert sorted((t, p) for t, p, _ in acks.seen) == sorted([*sent, bad])
    assert all(committed for _t, _p, committed in acks.seen)
    assert _stored(archive, "h1") == _records(sent)
    assert [(a.kind, a.occurrences) for a in archive.alarms()] == [("bad_signature", 1)]
    [(raw,)] = archive.rows("SELECT payload FROM clinic_dead_letters")
    assert bytes(raw) == bad[1]
    rejected = worker.telemetry.value(
        "glucohub_clinic_rejected_total", kind="batches", reason="bad_signature"
    )
    assert rejected == 1
