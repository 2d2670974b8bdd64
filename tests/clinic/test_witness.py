"""The clinic's verification decisions on real hubs' items (pure: no broker, no database)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.clinic.witness import (
    Accept,
    AcceptedCheckpoint,
    Alarm,
    AlarmKind,
    CheckpointVerdict,
    Duplicate,
    EnrolledHub,
    EnrolmentError,
    Neighbours,
    Refusal,
    UncheckedCheckpoint,
    VerifiedBatch,
    VerifiedCheckpoint,
    enrolled_hub,
    judge_batch,
    judge_checkpoint,
    leaves_from,
    open_batch_item,
    open_checkpoint_item,
    read_checkpoint_item,
    tree_at,
)
from glucohub.simulate import SimulatedHub
from ledger.rfc6962 import CompactTree
from tests.clinic.hubs import copy_hub, make_hub, produce


def _enrolled(hub: SimulatedHub) -> EnrolledHub:
    return enrolled_hub(*hub.enrolment)


def _split(items: list[tuple[str, bytes]]) -> tuple[list[bytes], list[bytes]]:
    batches = [p for t, p in items if t.endswith("/batches")]
    checkpoints = [p for t, p in items if t.endswith("/checkpoints")]
    return batches, checkpoints


def _batch(hub: EnrolledHub, payload: bytes) -> VerifiedBatch:
    opened = open_batch_item(hub, payload)
    assert isinstance(opened, VerifiedBatch), opened
    return opened


def _checkpoint(hub: EnrolledHub, payload: bytes) -> VerifiedCheckpoint:
    opened = open_checkpoint_item(hub, payload)
    assert isinstance(opened, VerifiedCheckpoint), opened
    return opened


def test_a_hubs_batch_opens_with_its_enrolled_keys_and_carries_its_patients_records(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path, "h1", patients=3)
    batches, checkpoints = _split(produce(hub, 2))
    enrolled = _enrolled(hub)
    first = _batch(enrolled, batches[0])
    assert (first.hub_id, first.batch_seq, first.prev_batch_hash) == ("h1", 0, "")
    assert sorted(str(r.patient_id) for r in first.records) == ["h1-p0", "h1-p1", "h1-p2"]
    assert all(json.loads(r.canonical)["kind"] == "cgm_glucose" for r in first.records)
    assert [_checkpoint(enrolled, c).size for c in checkpoints] == [1, 2]


def test_a_changed_record_another_hubs_key_or_a_forged_note_is_refused_as_bad_signature(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path, "h1")
    other = make_hub(tmp_path, "h2")
    batches, checkpoints = _split(produce(hub, 1))
    view = json.loads(batches[0])
    view["records"][0]["record"]["value"] = 40.0  # a dangerous low that never happened
    tampered = json.dumps(view).encode()
    for enrolled, payload in (
        (_enrolled(hub), tampered),
        (enrolled_hub("h1", other.enrolment[1], hub.enrolment[2]), batches[0]),
    ):
        refusal = open_batch_item(enrolled, payload)
        assert isinstance(refusal, Refusal)
        assert refusal.alarm is AlarmKind.BAD_SIGNATURE
    note = checkpoints[0].decode().replace("\n1\n", "\n2\n", 1)
    refused = open_checkpoint_item(_enrolled(hub), note.encode())
    assert isinstance(refused, Refusal) and refused.alarm is AlarmKind.BAD_SIGNATURE


def test_a_checkpoint_read_unchecked_says_what_it_says_opened_whatever_its_signature(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path, "h1")
    _, checkpoints = _split(produce(hub, 2))
    enrolled = _enrolled(hub)
    opened = _checkpoint(enrolled, checkpoints[1])
    read = read_checkpoint_item(enrolled, checkpoints[1])
    assert read == UncheckedCheckpoint(size=2, root_hash=opened.root_hash, note=opened.note)
    # a signature nobody checked: read as it states, refused when opened
    text = checkpoints[1].decode()
    forged = (text[:-10] + ("A" if text[-10] != "A" else "B") + text[-9:]).encode()
    refused = open_checkpoint_item(enrolled, forged)
    assert isinstance(refused, Refusal) and "signature" in refused.detail
    assert read_checkpoint_item(enrolled, forged) == UncheckedCheckpoint(
        size=2, root_hash=opened.root_hash, note=forged.decode()
    )
    # what does not parse as this hub's checkpoint is left to open_checkpoint_item
    other = _enrolled(make_hub(tmp_path, "h2"))
    for payload, who in (
        (checkpoints[1], other),
        (b"glucohub.local/h1\n2\n", enrolled),
        (b"\xff\n\n", enrolled),
        (text.replace("\n2\n", "\n02\n", 1).encode(), enrolled),
    ):
        assert read_checkpoint_item(who, payload) is None


def test_enrolment_refuses_a_log_key_of_another_hub(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, "h1")
    with pytest.raises(EnrolmentError, match=r"glucohub\.local/h1"):
        enrolled_hub("h9", hub.enrolment[1], hub.enrolment[2])


def test_batches_arriving_out_of_order_are_accepted_and_their_links_checked_later(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path, "h1")
    enrolled = _enrolled(hub)
    b0, b1, b2 = (_batch(enrolled, p) for p in _split(produce(hub, 3))[0])
    nothing = Neighbours(same_seq_jws=None, previous_jws=None, next_prev_hash=None)
    assert judge_batch(b2, nothing) == Accept(linked=False, links_next=False)
    # batch 1 arrives with 0 missing and 2 stored: its successor's link is checked now
    after = Neighbours(same_seq_jws=None, previous_jws=None, next_prev_hash=b2.prev_batch_hash)
    assert judge_batch(b1, after) == Accept(linked=False, links_next=True)
    both = Neighbours(same_seq_jws=None, previous_jws=b0.jws, next_prev_hash=b2.prev_batch_hash)
    assert judge_batch(b1, both) == Accept(linked=True, links_next=True)
    again = Neighbours(same_seq_jws=b1.jws, previous_jws=b0.jws, next_prev_hash=None)
    assert judge_batch(b1, again) == Duplicate()


def test_a_second_batch_under_one_seq_is_a_fork_and_a_wrong_link_a_chain_break(
    tmp_path: Path,
) -> None:
    hub = make_hub(tmp_path, "h1")
    produce(hub, 1)
    twin = copy_hub(hub, tmp_path / "twin")
    mine = _split(produce(hub, 2, start_minute=10))[0]
    theirs = _split(produce(twin, 1, start_minute=20))[0]
    enrolled = _enrolled(hub)
    b1, b2 = _batch(enrolled, mine[0]), _batch(enrolled, mine[1])
    t1 = _batch(enrolled, theirs[0])
    assert (b1.batch_seq, t1.batch_seq) == (1, 1)
    fork = judge_batch(t1, Neighbours(same_seq_jws=b1.jws, previous_jws=None, next_prev_hash=None))
    assert isinstance(fork, Alarm) and fork.kind is AlarmKind.FORK
    # b2 follows b1, not t1: with t1 stored as its predecessor, the chain is broken
    broken = judge_batch(
        b2, Neighbours(same_seq_jws=None, previous_jws=t1.jws, next_prev_hash=None)
    )
    assert isinstance(broken, Alarm) and broken.kind is AlarmKind.CHAIN_BREAK


def test_checkpoints_wait_for_their_batches_then_roll_back_or_fork_by_size(tmp_path: Path) -> None:
    hub = make_hub(tmp_path, "h1")
    items = produce(hub, 2)
    backup = copy_hub(hub, tmp_path / "backup")  # the log at size 2
    items += produce(hub, 2, start_minute=10)
    enrolled = _enrolled(hub)
    batches, notes = _split(items)
    leaves = [_batch(enrolled, p).leaf_hash for p in batches]
    cps = [_checkpoint(enrolled, n) for n in notes]
    assert [c.size for c in cps] == [1, 2, 3, 4]

    def accepted(index: int) -> AcceptedCheckpoint:
        tree = CompactTree()
        tree.extend(leaves[: index + 1])
        return AcceptedCheckpoint(size=index + 1, root_hash=cps[index].root_hash, tree=tree)

    def judge(index: int, held: AcceptedCheckpoint | None, stored: int) -> object:
        size = cps[index].size
        start = leaves_from(size, held)
        tree = tree_at(size, held, leaves[start:stored])
        return judge_checkpoint(cps[index], held, tree)

    assert judge(2, None, stored=2) is CheckpointVerdict.PENDING
    assert judge(2, accepted(1), stored=2) is CheckpointVerdict.PENDING
    assert judge(2, accepted(1), stored=4) is CheckpointVerdict.ACCEPT
    assert judge(3, accepted(0), stored=4) is CheckpointVerdict.ACCEPT
    assert judge(3, accepted(3), stored=4) is CheckpointVerdict.DUPLICATE
    assert judge(0, accepted(3), stored=4) is CheckpointVerdict.STALE
    # the restored backup seals its own batch 2 and signs size 3 with another root
    restored = _checkpoint(enrolled, _split(produce(backup, 1, start_minute=30))[1][0])
    assert restored.size == 3
    rollback = judge_checkpoint(restored, accepted(3), tree_at(3, accepted(3), leaves))
    assert isinstance(rollback, Alarm) and rollback.kind is AlarmKind.ROLLBACK
    fork = judge_checkpoint(restored, accepted(2), tree_at(3, accepted(2), []))
    assert isinstance(fork, Alarm) and fork.kind is AlarmKind.FORK
    fork = judge_checkpoint(restored, accepted(1), tree_at(3, accepted(1), leaves[2:]))
    assert isinstance(fork, Alarm) and fork.kind is AlarmKind.FORK
    # two notes of one size disagree: a fork even before the batches are there
    both = judge_checkpoint(restored, None, None, pending_root=cps[2].root_hash)
    assert isinstance(both, Alarm) and both.kind is AlarmKind.FORK
