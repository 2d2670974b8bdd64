"""A group of upstream items judged and stored in one transaction (the clinic worker's hot
path, called by `ClinicArchive`).

The group first locks the rows of every hub it names, in hub order (`ORDER BY hub_id FOR
UPDATE` locks rows in the order it returns them, so two workers never wait on each other in
a cycle), then reads what the judgements need of those hubs in a few set-wise queries: the
accepted checkpoint, the pending ones, and the stored batches around each batch's seq and
under each checkpoint's size. Each item is then judged in arrival order against that state
plus what the group decided before it (a batch stored by item 3 is item 7's neighbour; an
alarm raised by item 3 stops the hub for item 7), exactly as if each had its own
transaction. What the group decided is written at the end: batches and records with `COPY`,
the rest set-wise. Under the hub locks nothing else can change those hubs meanwhile, so the
state read is the truth, and a batch the state does not hold is not in the table.

A checkpoint opened unchecked (`witness.read_checkpoint_item`: a larger one of its hub
follows in the group) is judged as if its signature verified. When the group is judged,
one that was accepted and then replaced by a later accepted checkpoint is acknowledged as
`superseded`: never stored, and its root was the clinic's own tree at its size. Every
other one is verified then; if one fails, the group is judged again from the state read,
with that one refused, so the outcomes are those of verifying every item first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg

from gateway.clinic.projection import patient_parts
from gateway.clinic.witness import (
    Accept,
    AcceptedCheckpoint,
    Alarm,
    AlarmKind,
    CheckpointVerdict,
    Duplicate,
    Neighbours,
    Refusal,
    UncheckedCheckpoint,
    VerifiedBatch,
    VerifiedCheckpoint,
    judge_batch,
    judge_checkpoint,
    leaves_from,
    tree_at,
)
from ledger.rfc6962 import CompactTree

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]

# A dead letter keeps this much of its payload (plus its length and SHA-256).
DEAD_LETTER_MAX_BYTES = 1024 * 1024

# Batches and records are written with binary COPY (a quarter of the text format's client
# CPU); its values must have exactly the columns' types (clinic migration 1).
_BATCH_TYPES = ["text", "int8", "text", "bytea", "text", "int4", "bool", "timestamptz"]
_RECORD_TYPES = ["text", "int8", "int4", "text", "text", "bytea"]
_PART_TYPES = ["text", "text", "int8", "int4", "timestamptz", "timestamptz", "timestamptz"]

UNKNOWN_HUB = "unknown_hub"  # the dead letters' reason for a hub not (yet) enrolled

STOPPED = Refusal(
    reason="hub_stopped",
    detail="the hub is stopped by an alarm until an admin resolves it",
    alarm=None,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One MQTT message of a hub: `kind` is "batches" or "checkpoints"."""

    hub_id: str
    kind: str
    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class Handled:
    """What became of one item: `stored` (its `records`), `duplicate`, `pending`,
    `accepted`, `superseded` (a checkpoint the group's next accepted one replaced before
    anything stored it), `stale`, or `dead_letter` (its `reason`). `alarm`: the alarm
    handling it raised, if any (a stored batch can complete a pending checkpoint that is a
    fork)."""

    outcome: str
    alarm: AlarmKind | None = None
    records: int = 0
    reason: str = ""


Opened = VerifiedBatch | VerifiedCheckpoint | UncheckedCheckpoint | Refusal
# Opens each item with the keys beside it (its hub's as enrolled in its locked row:
# batch_jwk, log_key; None: not opened, None out), reading only a checkpoint a larger one
# among them follows (an UncheckedCheckpoint); one item alone is opened in full.
Opener = Callable[[Sequence[Item], Sequence[tuple[str, str] | None]], list[Opened | None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Prepared:
    """An item opened before the transaction, with the keys it was opened with."""

    batch_jwk: str
    log_key: str
    opened: Opened


@dataclass(frozen=True, slots=True)
class _Stored:
    """A stored batch; `jws` and `prev_batch_hash` None when only its leaf was read (a
    tree rebuilt from leaf 0 needs no more of thousands of batches)."""

    jws: str | None
    prev_batch_hash: str | None
    leaf_hash: bytes


@dataclass(slots=True)
class _NewBatch:
    batch: VerifiedBatch
    linked: bool


@dataclass(slots=True)
class _Pending:
    root_hash: bytes
    note: str
    received_at: datetime


@dataclass(slots=True)
class _Hub:
    """One locked hub as the group sees it: read from the database, plus the group's own
    decisions so far (not written yet)."""

    hub_id: str
    batch_jwk: str
    log_key: str
    stopped: bool
    accepted: AcceptedCheckpoint | None = None
    accepted_note: str = ""
    accepted_changed: bool = False
    accepted_by: int | None = None  # the group's item that `accepted` is, if one is
    pending: dict[int, _Pending] = field(default_factory=dict)
    pending_before: frozenset[int] = frozenset()
    stopped_before: bool = False
    batches: dict[int, _Stored] = field(default_factory=dict)
    new: dict[int, _NewBatch] = field(default_factory=dict)
    # seq ranges [lo, hi) read from the database: whole rows, and leaves (whole rows too)
    read_whole: list[tuple[int, int]] = field(default_factory=list)
    read_leaves: list[tuple[int, int]] = field(default_factory=list)

    def missing(self, lo: int, hi: int, *, whole: bool) -> list[tuple[int, int]]:
        """The parts of seqs [lo, hi) not read from the database yet."""
        gaps, cursor = [], lo
        for start, end in sorted(self.read_whole if whole else self.read_leaves):
            if end <= cursor:
                continue
            if start >= hi:
                break
            if start > cursor:
                gaps.append((cursor, start))
            cursor = max(cursor, end)
            if cursor >= hi:
                break
        if cursor < hi:
            gaps.append((cursor, hi))
        return gaps


class Group:
    """Judge and store a group of items on `db`, inside a transaction the caller opened."""

    def __init__(
        self,
        db: Connection,
        now: datetime,
        *,
        project: Callable[[Sequence[VerifiedBatch]], None] | None = None,
    ) -> None:
        self._project = project
        self._db = db
        self._now = now
        self._hubs: dict[str, _Hub] = {}
        self._dead_letters: list[Row] = []
        self._alarms: dict[tuple[str, str], list[Any]] = {}  # first detail, occurrences
        self._link_stored: list[tuple[str, int]] = []

    def run(
        self, items: Sequence[Item], prepared: Sequence[Prepared | None], opener: Opener
    ) -> list[Handled]:
        """One outcome per item, in order. An item not prepared, or prepared with keys
        other than its hub's locked row holds (enrolled again meanwhile), is opened here
        (before the reads, so they cover it too)."""
        hub_ids = sorted({item.hub_id for item in items})
        self._lock_and_read(hub_ids)
        keys: list[tuple[str, str] | None] = []
        for item, ready in zip(items, prepared, strict=True):
            hub = self._hubs.get(item.hub_id)
            if hub is None or (
                ready is not None
                and (ready.batch_jwk, ready.log_key) == (hub.batch_jwk, hub.log_key)
            ):
                keys.append(None)
            else:
                keys.append((hub.batch_jwk, hub.log_key))
        fresh = opener(items, keys) if any(keys) else [None] * len(items)
        opened_items: list[Opened | None] = []
        for item, ready, hub_keys, opened in zip(items, prepared, keys, fresh, strict=True):
            if hub_keys is not None:
                opened_items.append(opened)
            else:  # an unknown hub's item, or one prepared with the locked row's keys
                opened_items.append(
                    None if ready is None or item.hub_id not in self._hubs else ready.opened
                )
        self._prefetch(items, opened_items)
        out = self._judge(items, opened_items)
        while self._check_unchecked(items, opened_items, out, opener):
            self._hubs, self._dead_letters, self._alarms, self._link_stored = {}, [], {}, []
            self._lock_and_read(hub_ids)
            self._prefetch(items, opened_items)
            out = self._judge(items, opened_items)
        self._write()
        return out

    def _judge(self, items: Sequence[Item], opened_items: Sequence[Opened | None]) -> list[Handled]:
        out = []
        for position, (item, opened) in enumerate(zip(items, opened_items, strict=True)):
            hub = self._hubs.get(item.hub_id)
            if hub is None or opened is None:
                refusal = Refusal(
                    reason=UNKNOWN_HUB,
                    detail=f"no hub {item.hub_id} is enrolled",
                    alarm=AlarmKind.UNKNOWN_HUB,
                )
                out.append(self._refuse(item.hub_id, item, refusal))
            elif isinstance(opened, Refusal):
                out.append(self._refuse(hub.hub_id, item, opened))
            elif isinstance(opened, VerifiedBatch):
                out.append(self._batch(hub, item, opened))
            else:
                out.append(self._checkpoint(hub, item, opened, position))
        return out

    def _check_unchecked(
        self,
        items: Sequence[Item],
        opened_items: list[Opened | None],
        out: list[Handled],
        opener: Opener,
    ) -> bool:
        """Settle the unchecked checkpoints once the group is judged: `superseded` when
        accepted and replaced since, else verified now (kept opened for a next round).
        Whether one failed to verify as it was read (the group must be judged again)."""
        failed = False
        for position, (item, opened) in enumerate(zip(items, opened_items, strict=True)):
            if not isinstance(opened, UncheckedCheckpoint):
                continue
            hub = self._hubs[item.hub_id]  # an unchecked item's hub is enrolled
            if out[position].outcome == CheckpointVerdict.ACCEPT and hub.accepted_by != position:
                out[position] = Handled(outcome="superseded")
                continue
            verified = opener([item], [(hub.batch_jwk, hub.log_key)])[0]
            opened_items[position] = verified
            if not isinstance(verified, VerifiedCheckpoint) or (
                verified.size,
                verified.root_hash,
                verified.note,
            ) != (opened.size, opened.root_hash, opened.note):
                failed = True
        return failed

    # -- reading -------------------------------------------------------------------------

    def _lock_and_read(self, hub_ids: list[str]) -> None:
        rows = self._db.execute(
            "SELECT hub_id, batch_jwk, log_key, state FROM clinic_hubs"
            " WHERE hub_id = ANY(%s) ORDER BY hub_id FOR UPDATE",
            (hub_ids,),
        ).fetchall()
        for hub_id, jwk, log_key, state in rows:
            stopped = state == "stopped"
            self._hubs[hub_id] = _Hub(
                hub_id=hub_id,
                batch_jwk=jwk,
                log_key=log_key,
                stopped=stopped,
                stopped_before=stopped,
            )
        if not self._hubs:
            return
        enrolled = list(self._hubs)
        for hub_id, size, root, tree in self._db.execute(
            "SELECT hub_id, size, root_hash, compact_tree FROM clinic_checkpoints"
            " WHERE hub_id = ANY(%s)",
            (enrolled,),
        ).fetchall():
            self._hubs[hub_id].accepted = AcceptedCheckpoint(
                size=int(size), root_hash=bytes(root), tree=CompactTree.from_bytes(bytes(tree))
            )
        for hub_id, size, root, note, received_at in self._db.execute(
            "SELECT hub_id, size, root_hash, note, received_at FROM clinic_pending_checkpoints"
            " WHERE hub_id = ANY(%s)",
            (enrolled,),
        ).fetchall():
            self._hubs[hub_id].pending[int(size)] = _Pending(bytes(root), note, received_at)
        for hub in self._hubs.values():
            hub.pending_before = frozenset(hub.pending)

    def _prefetch(self, items: Sequence[Item], opened_items: Sequence[Opened | None]) -> None:
        """Read at once the stored batches the items will ask for: each batch's neighbours,
        the leaves under each checkpoint and under the smallest pending one."""
        wanted: list[tuple[_Hub, int, int, bool]] = []
        for item, opened in zip(items, opened_items, strict=True):
            hub = self._hubs.get(item.hub_id)
            if hub is None:
                continue
            if isinstance(opened, VerifiedBatch):
                wanted.append((hub, max(opened.batch_seq - 1, 0), opened.batch_seq + 2, True))
                if hub.pending:
                    size = min(hub.pending)
                    wanted.append((hub, leaves_from(size, hub.accepted), size, False))
            elif isinstance(opened, VerifiedCheckpoint | UncheckedCheckpoint):
                size = opened.size
                wanted.append((hub, leaves_from(size, hub.accepted), size, False))
        self._load(wanted)

    def _load(self, wanted: Sequence[tuple[_Hub, int, int, bool]]) -> None:
        """Read the stored batches of seqs [lo, hi) of each hub not read yet (`whole`: with
        their JWS and link, else their leaf hash only)."""
        ranges: list[tuple[_Hub, int, int, bool]] = []
        for hub, lo, hi, whole in wanted:
            for start, end in hub.missing(lo, hi, whole=whole):
                # noted before the hub's next range, so no two ranges overlap
                (hub.read_whole if whole else hub.read_leaves).append((start, end))
                if whole:
                    hub.read_leaves.append((start, end))
                ranges.append((hub, start, end, whole))
        if not ranges:
            return
        rows = self._db.execute(
            "SELECT b.hub_id, b.batch_seq, CASE WHEN w.whole THEN b.jws END,"
            " CASE WHEN w.whole THEN b.prev_batch_hash END, b.leaf_hash"
            " FROM unnest(%b::text[], %b::bigint[], %b::bigint[], %b::boolean[])"
            " AS w(hub_id, lo, hi, whole) JOIN clinic_batches b"
            " ON b.hub_id = w.hub_id AND b.batch_seq >= w.lo AND b.batch_seq < w.hi",
            (
                [h.hub_id for h, _, _, _ in ranges],
                [lo for _, lo, _, _ in ranges],
                [hi for _, _, hi, _ in ranges],
                [whole for _, _, _, whole in ranges],
            ),
        ).fetchall()
        for hub_id, seq, jws, prev, leaf in rows:
            hub, seq = self._hubs[hub_id], int(seq)
            if seq in hub.new:  # cannot be: the table lacked it when the group stored it
                continue
            if jws is not None or seq not in hub.batches:
                hub.batches[seq] = _Stored(jws, prev, bytes(leaf))

    def _leaves(self, hub: _Hub, start: int, end: int) -> list[bytes]:
        """Leaf hashes of seqs start..end-1, stopping at the first gap."""
        self._load([(hub, start, end, False)])
        leaves: list[bytes] = []
        for seq in range(start, end):
            stored = hub.batches.get(seq)
            if stored is None:
                break
            leaves.append(stored.leaf_hash)
        return leaves

    def _tree_at(self, hub: _Hub, size: int) -> CompactTree | None:
        start = leaves_from(size, hub.accepted)
        return tree_at(size, hub.accepted, self._leaves(hub, start, size))

    # -- judging -------------------------------------------------------------------------

    def _refuse(self, hub_id: str, item: Item, refusal: Refusal) -> Handled:
        payload = item.payload
        self._dead_letters.append(
            (
                self._now,
                item.topic,
                hub_id,
                refusal.reason,
                refusal.detail,
                payload[:DEAD_LETTER_MAX_BYTES],
                len(payload),
                hashlib.sha256(payload).hexdigest(),
            )
        )
        if refusal.alarm is not None:
            self._alarm(hub_id, Alarm(kind=refusal.alarm, detail=refusal.detail))
        return Handled(outcome="dead_letter", alarm=refusal.alarm, reason=refusal.reason)

    def _alarm(self, hub_id: str, alarm: Alarm) -> None:
        # One open alarm per hub and kind; repeats count occurrences.
        raised = self._alarms.setdefault((hub_id, alarm.kind.value), [alarm.detail, 0])
        raised[1] += 1
        hub = self._hubs.get(hub_id)
        if alarm.kind.stops_hub and hub is not None:
            hub.stopped = True

    def _batch(self, hub: _Hub, item: Item, batch: VerifiedBatch) -> Handled:
        seq = batch.batch_seq
        self._load([(hub, max(seq - 1, 0), seq + 2, True)])
        same, previous, successor = (hub.batches.get(s) for s in (seq, seq - 1, seq + 1))
        held = Neighbours(
            same_seq_jws=None if same is None else same.jws,
            previous_jws=None if previous is None else previous.jws,
            next_prev_hash=None if successor is None else successor.prev_batch_hash,
        )
        verdict = judge_batch(batch, held)
        if isinstance(verdict, Duplicate):
            return Handled(outcome="duplicate")
        if isinstance(verdict, Alarm):
            refusal = Refusal(reason=verdict.kind.value, detail=verdict.detail, alarm=verdict.kind)
            return self._refuse(hub.hub_id, item, refusal)
        if hub.stopped:
            return self._refuse(hub.hub_id, item, STOPPED)
        self._store(hub, batch, verdict)
        alarm = self._settle_pending(hub)
        return Handled(outcome="stored", alarm=alarm, records=len(batch.records))

    def _store(self, hub: _Hub, batch: VerifiedBatch, verdict: Accept) -> None:
        seq = batch.batch_seq
        hub.batches[seq] = _Stored(batch.jws, batch.prev_batch_hash, batch.leaf_hash)
        hub.new[seq] = _NewBatch(batch, verdict.linked)
        if verdict.links_next:
            successor = hub.new.get(seq + 1)
            if successor is not None:
                successor.linked = True
            else:
                self._link_stored.append((hub.hub_id, seq + 1))

    def _checkpoint(
        self,
        hub: _Hub,
        item: Item,
        checkpoint: VerifiedCheckpoint | UncheckedCheckpoint,
        position: int,
    ) -> Handled:
        pending = hub.pending.get(checkpoint.size)
        tree = self._tree_at(hub, checkpoint.size)
        pending_root = None if pending is None else pending.root_hash
        verdict = judge_checkpoint(checkpoint, hub.accepted, tree, pending_root)
        if isinstance(verdict, Alarm):
            refusal = Refusal(reason=verdict.kind.value, detail=verdict.detail, alarm=verdict.kind)
            return self._refuse(hub.hub_id, item, refusal)
        if hub.stopped and verdict in (CheckpointVerdict.ACCEPT, CheckpointVerdict.PENDING):
            return self._refuse(hub.hub_id, item, STOPPED)
        self._apply_checkpoint(hub, checkpoint, verdict, tree, position)
        return Handled(outcome=verdict.value)

    def _apply_checkpoint(
        self,
        hub: _Hub,
        checkpoint: VerifiedCheckpoint | UncheckedCheckpoint,
        verdict: CheckpointVerdict,
        tree: CompactTree | None,
        position: int | None,
    ) -> None:
        """`position`: the group's item `checkpoint` is (None: a pending one, stored)."""
        if verdict is CheckpointVerdict.PENDING:
            hub.pending.setdefault(
                checkpoint.size, _Pending(checkpoint.root_hash, checkpoint.note, self._now)
            )
            return
        hub.pending.pop(checkpoint.size, None)
        if verdict is CheckpointVerdict.ACCEPT:
            assert tree is not None  # accepted: the clinic built the tree at this size
            if hub.accepted is None or hub.accepted.size < checkpoint.size:
                hub.accepted = AcceptedCheckpoint(
                    size=checkpoint.size, root_hash=checkpoint.root_hash, tree=tree
                )
                hub.accepted_note = checkpoint.note
                hub.accepted_changed = True
                hub.accepted_by = position

    def _settle_pending(self, hub: _Hub) -> AlarmKind | None:
        """Decide the pending checkpoints a newly stored batch may have completed; returns
        the alarm that raised, if any."""
        raised = None
        for size in sorted(hub.pending):
            held = hub.pending[size]
            checkpoint = VerifiedCheckpoint(size=size, root_hash=held.root_hash, note=held.note)
            tree = self._tree_at(hub, size)
            if tree is None:
                break  # a larger one lacks at least the same batch
            verdict = judge_checkpoint(checkpoint, hub.accepted, tree)
            if isinstance(verdict, Alarm):
                del hub.pending[size]
                self._alarm(hub.hub_id, verdict)
                raised = verdict.kind
                continue
            self._apply_checkpoint(hub, checkpoint, verdict, tree, None)
        return raised

    # -- writing -------------------------------------------------------------------------

    def _write(self) -> None:
        db, now = self._db, self._now
        new = [(hub, n) for hub in self._hubs.values() for n in hub.new.values()]
        if new:
            with db.cursor() as cursor:
                with cursor.copy(
                    "COPY clinic_batches (hub_id, batch_seq, jws, leaf_hash, prev_batch_hash,"
                    " record_count, linked, received_at) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_BATCH_TYPES)
                    for hub, n in new:
                        b = n.batch
                        copy.write_row(
                            (
                                hub.hub_id,
                                b.batch_seq,
                                b.jws,
                                b.leaf_hash,
                                b.prev_batch_hash,
                                len(b.records),
                                n.linked,
                                now,
                            )
                        )
                self._store_records(cursor, [n.batch for _hub, n in new])
                self._store_parts(cursor, [n.batch for _hub, n in new], now)
            if self._project is not None:  # each hub's batches in its log's order
                ordered = sorted(new, key=lambda hn: (hn[0].hub_id, hn[1].batch.batch_seq))
                self._project([n.batch for _hub, n in ordered])
        if self._link_stored:
            db.execute(
                "UPDATE clinic_batches b SET linked = true"
                " FROM unnest(%s::text[], %s::bigint[]) AS w(hub_id, seq)"
                " WHERE b.hub_id = w.hub_id AND b.batch_seq = w.seq",
                ([h for h, _ in self._link_stored], [s for _, s in self._link_stored]),
            )
        self._write_checkpoints()
        if self._alarms:
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO clinic_alarms (hub_id, kind, detail, raised_at, occurrences)"
                    " VALUES (%s, %s, %s, %s, %s)"
                    " ON CONFLICT (hub_id, kind) WHERE resolved_at IS NULL"
                    " DO UPDATE SET occurrences = clinic_alarms.occurrences + excluded.occurrences",
                    [(h, k, d, now, n) for (h, k), (d, n) in self._alarms.items()],
                )
        stopped = [h.hub_id for h in self._hubs.values() if h.stopped and not h.stopped_before]
        if stopped:
            db.execute(
                "UPDATE clinic_hubs SET state = 'stopped' WHERE hub_id = ANY(%s)", (stopped,)
            )
        if self._dead_letters:
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO clinic_dead_letters (received_at, topic, hub_id, reason,"
                    " detail, payload, payload_bytes, payload_sha256)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    self._dead_letters,
                )

    @staticmethod
    def _store_records(cursor: psycopg.Cursor[Row], batches: Sequence[VerifiedBatch]) -> None:
        """The records of newly stored batches (each with its hub and patient)."""
        with cursor.copy(
            "COPY clinic_records (hub_id, batch_seq, record_index, patient_id, canonical, salt)"
            " FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_RECORD_TYPES)
            for b in batches:
                for r in b.records:
                    copy.write_row(
                        (b.hub_id, b.batch_seq, r.index, r.patient_id, r.canonical, r.salt)
                    )

    @staticmethod
    def _store_parts(
        cursor: psycopg.Cursor[Row], batches: Sequence[VerifiedBatch], now: datetime
    ) -> None:
        """Each patient's part of the newly stored batches, for the ledger pages."""
        with cursor.copy(
            "COPY clinic_patient_batches (hub_id, patient_id, batch_seq, readings, first_time,"
            " last_time, received_at) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(_PART_TYPES)
            for b in batches:
                for part in patient_parts(b.records):
                    copy.write_row(
                        (b.hub_id, part.patient_id, b.batch_seq, part.readings, part.first,
                         part.last, now)
                    )  # fmt: skip

    def _write_checkpoints(self) -> None:
        db, now = self._db, self._now
        gone: list[tuple[str, int]] = []
        added: list[Row] = []
        accepted: list[Row] = []
        for hub in self._hubs.values():
            gone += [(hub.hub_id, s) for s in hub.pending_before - hub.pending.keys()]
            added += [
                (hub.hub_id, s, p.root_hash, p.note, p.received_at)
                for s, p in hub.pending.items()
                if s not in hub.pending_before
            ]
            if hub.accepted_changed and hub.accepted is not None:
                a = hub.accepted
                accepted.append(
                    (hub.hub_id, a.size, a.root_hash, hub.accepted_note, a.tree.to_bytes(), now)
                )
        if gone:
            db.execute(
                "DELETE FROM clinic_pending_checkpoints p"
                " USING unnest(%s::text[], %s::bigint[]) AS w(hub_id, size)"
                " WHERE p.hub_id = w.hub_id AND p.size = w.size",
                ([h for h, _ in gone], [s for _, s in gone]),
            )
        with db.cursor() as cursor:
            if added:
                cursor.executemany(
                    "INSERT INTO clinic_pending_checkpoints (hub_id, size, root_hash, note,"
                    " received_at) VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    added,
                )
            if accepted:
                cursor.executemany(
                    "INSERT INTO clinic_checkpoints (hub_id, size, root_hash, note,"
                    " compact_tree, accepted_at) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (hub_id) DO UPDATE SET size = excluded.size,"
                    " root_hash = excluded.root_hash, note = excluded.note,"
                    " compact_tree = excluded.compact_tree, accepted_at = excluded.accepted_at"
                    " WHERE clinic_checkpoints.size < excluded.size",
                    accepted,
                )
