"""The clinic archive on a real PostgreSQL: what is stored, refused and alarmed, item by item
(the calls a worker makes for each MQTT message, without the broker)."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.errors import InputError
from gateway.storage.postgres_clinic import ClinicArchive
from glucohub.simulate import SimulatedHub
from tests.clinic.hubs import copy_hub, make_hub, produce

NOW = datetime(2026, 3, 2, tzinfo=UTC)

Open = Callable[[], ClinicArchive]


@pytest.fixture
def open_archive(postgres_url: str) -> Iterator[Open]:
    """Archives (one per simulated worker) on a fresh database, closed after the test."""
    opened: list[ClinicArchive] = []

    def make() -> ClinicArchive:
        opened.append(ClinicArchive(postgres_url))
        return opened[-1]

    yield make
    for archive in opened:
        archive.close()


def _hub_of(topic: str) -> tuple[str, str]:
    parts = topic.split("/")
    return parts[3], parts[4]


def _deliver(archive: ClinicArchive, items: list[tuple[str, bytes]]) -> list[str]:
    outcomes = []
    for topic, payload in items:
        hub_id, kind = _hub_of(topic)
        outcomes.append(archive.handle(hub_id, kind, topic, payload, NOW).outcome)
    return outcomes


def _enrol(archive: ClinicArchive, hub: SimulatedHub) -> None:
    archive.enrol(*hub.enrolment, NOW)


def _records(items: list[tuple[str, bytes]]) -> list[dict[str, Any]]:
    out = []
    for topic, payload in items:
        if topic.endswith("/batches"):
            out += [r["record"] for r in json.loads(payload)["records"]]
    return out


def _stored(archive: ClinicArchive, hub_id: str) -> list[dict[str, Any]]:
    rows = archive.rows(
        "SELECT canonical FROM clinic_records WHERE hub_id = %s ORDER BY batch_seq, record_index",
        (hub_id,),
    )
    return [json.loads(r[0]) for r in rows]


def _alarms(archive: ClinicArchive, hub_id: str) -> set[str]:
    return {a.kind for a in archive.alarms(open_only=True) if a.hub_id == hub_id}


def _state(archive: ClinicArchive, hub_id: str) -> str:
    return next(h.state for h in archive.hubs() if h.hub_id == hub_id)


def test_items_shuffled_and_repeated_are_stored_once_linked_and_checkpointed(
    tmp_path: Path, open_archive: Open
) -> None:
    hub = make_hub(tmp_path, "h1", patients=3)
    items = produce(hub, 6)
    archive = open_archive()
    _enrol(archive, hub)
    shuffled = items + items[:5]  # redeliveries too
    random.Random(3).shuffle(shuffled)
    _deliver(archive, shuffled)
    assert _stored(archive, "h1") == _records(items)
    assert len(_records(items)) == 18  # 6 batches of one reading for each of 3 patients
    assert archive.rows("SELECT count(*) FROM clinic_batches WHERE NOT linked") == [(0,)]
    [row] = archive.hubs()
    assert (row.batches, row.checkpoint_size, row.state, row.open_alarms) == (6, 6, "active", 0)
    assert archive.counts()["pending_checkpoints"] == 0
    assert archive.counts()["dead_letters"] == 0


def test_a_checkpoint_before_its_batches_waits_then_is_accepted(
    tmp_path: Path, open_archive: Open
) -> None:
    hub = make_hub(tmp_path, "h1")
    items = produce(hub, 3)
    checkpoints = [i for i in items if i[0].endswith("/checkpoints")]
    batches = [i for i in items if i[0].endswith("/batches")]
    archive = open_archive()
    _enrol(archive, hub)
    assert _deliver(archive, [checkpoints[-1]]) == ["pending"]
    assert archive.hubs()[0].checkpoint_size is None
    assert _deliver(archive, batches) == ["stored"] * 3
    assert archive.hubs()[0].checkpoint_size == 3
    assert archive.counts()["pending_checkpoints"] == 0


def test_two_workers_at_once_store_every_batch_once(tmp_path: Path, open_archive: Open) -> None:
    hubs = [make_hub(tmp_path, f"h{i}") for i in range(4)]
    items = [item for hub in hubs for item in produce(hub, 8)]
    first = open_archive()
    second = open_archive()
    for hub in hubs:
        _enrol(first, hub)
    random.Random(5).shuffle(items)
    # Both workers get every item (the worst case of redelivery), in different orders.
    threads = [
        threading.Thread(target=_deliver, args=(first, items)),
        threading.Thread(target=_deliver, args=(second, list(reversed(items)))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for hub in hubs:
        expected = _records([i for i in items if i[0].split("/")[3] == hub.hub_id])
        assert sorted(map(json.dumps, _stored(first, hub.hub_id))) == sorted(
            map(json.dumps, expected)
        )
    assert first.counts()["batches"] == 32
    assert first.rows("SELECT count(*) FROM clinic_batches WHERE NOT linked") == [(0,)]
    assert {h.checkpoint_size for h in first.hubs()} == {8}
    assert first.alarms() == []


def test_a_tampered_batch_is_dead_lettered_and_alarmed_and_the_genuine_one_stored(
    tmp_path: Path, open_archive: Open
) -> None:
    hub = make_hub(tmp_path, "h1")
    items = produce(hub, 2)
    topic, payload = items[0]
    view = json.loads(payload)
    view["records"][0]["record"]["value"] = 39.0
    archive = open_archive()
    _enrol(archive, hub)
    assert _deliver(archive, [(topic, json.dumps(view).encode())]) == ["dead_letter"]
    _deliver(archive, items)
    assert _stored(archive, "h1") == _records(items)
    assert 39.0 not in [r["value"] for r in _stored(archive, "h1")]
    assert _alarms(archive, "h1") == {"bad_signature"}
    assert _state(archive, "h1") == "active"  # anyone can publish garbage: the hub goes on
    [(reason, raw)] = archive.rows("SELECT reason, payload FROM clinic_dead_letters")
    assert reason == "bad_signature" and json.loads(raw) == view


def test_an_unknown_hubs_items_are_dead_lettered_and_alarmed(
    tmp_path: Path, open_archive: Open
) -> None:
    stranger = make_hub(tmp_path, "stranger")
    items = produce(stranger, 2)
    archive = open_archive()
    assert _deliver(archive, items) == ["dead_letter"] * 4
    assert archive.counts()["batches"] == 0 and archive.counts()["records"] == 0
    [alarm] = archive.alarms()
    assert (alarm.hub_id, alarm.kind, alarm.occurrences) == ("stranger", "unknown_hub", 4)
    assert archive.counts()["dead_letters"] == 4


def test_a_hub_restored_from_an_old_backup_raises_rollback_and_stops(
    tmp_path: Path, open_archive: Open
) -> None:
    hub = make_hub(tmp_path, "h1")
    items = produce(hub, 2)
    backup = copy_hub(hub, tmp_path / "backup")  # taken at size 2
    items += produce(hub, 2, start_minute=10)
    archive = open_archive()
    _enrol(archive, hub)
    _deliver(archive, items)
    assert archive.hubs()[0].checkpoint_size == 4
    # The backup is restored and the hub goes on from size 2: batch 2 again, checkpoint 3.
    restored = produce(backup, 1, start_minute=30)
    restored_cp = [i for i in restored if i[0].endswith("/checkpoints")]
    assert _deliver(archive, restored_cp) == ["dead_letter"]
    assert _alarms(archive, "h1") == {"rollback"}
    assert _state(archive, "h1") == "stopped"
    _deliver(archive, restored)  # its batch 2 too: evidence, raised while stopped
    assert _alarms(archive, "h1") == {"rollback", "fork"}
    later = produce(hub, 1, start_minute=40)  # even genuine items wait for an admin
    assert _deliver(archive, later)[0] == "dead_letter"
    assert _stored(archive, "h1") == _records(items)
    # the admin resolves it: what the hub sent meanwhile is replayed, not lost
    assert archive.resolve("h1", "admin", NOW) == (2, 2)
    assert _stored(archive, "h1") == _records(items + later)
    assert archive.hubs()[0].checkpoint_size == 5
    assert _deliver(archive, later) == ["duplicate", "duplicate"]


def test_two_data_directories_with_one_key_raise_fork(tmp_path: Path, open_archive: Open) -> None:
    hub = make_hub(tmp_path, "h1")
    items = produce(hub, 2)
    twin = copy_hub(hub, tmp_path / "twin")
    mine = produce(hub, 1, start_minute=10)
    theirs = produce(twin, 1, start_minute=20)
    archive = open_archive()
    _enrol(archive, hub)
    _deliver(archive, items + mine)
    assert _deliver(archive, theirs) == ["dead_letter", "dead_letter"]
    assert _alarms(archive, "h1") == {"fork"}
    assert _state(archive, "h1") == "stopped"
    assert _stored(archive, "h1") == _records(items + mine)
    assert archive.hubs()[0].checkpoint_size == 3


def test_resolving_replays_held_items_once_even_when_one_of_them_stops_the_hub_again(
    tmp_path: Path, open_archive: Open
) -> None:
    hub = make_hub(tmp_path, "h1")
    first = produce(hub, 2)
    twin = copy_hub(hub, tmp_path / "twin")
    mine = produce(hub, 3, start_minute=10)  # batches 2, 3, 4 and checkpoints 3, 4, 5
    theirs = produce(twin, 1, start_minute=20)  # another batch 2 and checkpoint 3
    archive = open_archive()
    _enrol(archive, hub)
    _deliver(archive, first)
    # two checkpoints of size 3 with different roots: a fork, the hub stops
    assert _deliver(archive, [theirs[1], mine[1]]) == ["pending", "dead_letter"]
    assert _alarms(archive, "h1") == {"fork"}
    b2, b3, b4 = mine[0], mine[2], mine[4]
    held = [b3, theirs[0], b4, b2]
    assert _deliver(archive, held) == ["dead_letter"] * 4
    # replay: b3 is stored, the twin's batch 2 does not link to it (chain break, the hub
    # stops again), so b4 and b2 are held again for the next decision, not replayed forever
    assert archive.resolve("h1", "admin", NOW) == (1, 4)
    assert _alarms(archive, "h1") == {"chain_break"}
    assert _state(archive, "h1") == "stopped"
    assert [r[0] for r in archive.rows("SELECT batch_seq FROM clinic_batches ORDER BY 1")] == [
        0,
        1,
        3,
    ]
    assert archive.resolve("h1", "admin", NOW) == (1, 2)
    assert _stored(archive, "h1") == _records(first + mine)
    # with batch 2 stored, the twin's pending checkpoint of size 3 is proven not to match
    assert _alarms(archive, "h1") == {"fork"}
    assert archive.counts()["pending_checkpoints"] == 0


def test_enrolling_the_same_keys_again_in_another_spelling_is_no_change(
    tmp_path: Path, open_archive: Open
) -> None:
    hub, other = make_hub(tmp_path, "h1"), make_hub(tmp_path, "h2")
    hub_id, jwk, vkey = hub.enrolment
    archive = open_archive()
    archive.enrol(hub_id, jwk, vkey, NOW)
    _deliver(archive, produce(hub, 1))
    spaced = json.dumps(json.loads(jwk), indent=2)  # as a person might paste it
    archive.enrol(hub_id, spaced, vkey + "\n", NOW)
    with pytest.raises(InputError, match="other keys"):
        archive.enrol(hub_id, other.enrolment[1], vkey, NOW)
    assert archive.hubs()[0].batches == 1
