"""The clinic's decisions about one hub's upstream items (pure: no broker, no database).

The clinic is a witness of every enrolled hub. An item is first *opened*: a batch view's JWS
must verify with the hub's enrolled batch key and every record must hash to the signed
records root; a checkpoint note must verify with the enrolled log key. Then it is *judged*
against what the clinic already holds of that hub (the caller reads those facts inside the
transaction that will store the outcome, under the hub's row lock):

- a batch under a stored seq: the same JWS is a redelivery, another JWS a fork;
- a batch and a stored neighbour (seq - 1 or seq + 1) must link by `prev_batch_hash`, or the
  chain is broken. A batch whose predecessor is not stored yet is still accepted (it is
  signed by the enrolled key): a shared subscription hands one hub's batches to several
  workers, out of order. Its link is checked when the predecessor arrives;
- a checkpoint of size n is accepted when the clinic holds batches 0..n-1 and their leaf
  hashes give its root: the clinic recomputes the tree (extending the one of the accepted
  checkpoint), which implies consistency with every checkpoint accepted before. Without
  those leaves it waits (pending). A root that differs at a size below the accepted one is
  a rollback; at the accepted size or above, a fork.

Bad signatures and unknown hubs are alarms too, but do not stop a hub: anyone who can
publish to the broker can produce them, whereas a fork, rollback or chain break is signed
by the hub's own key and stops it until an admin resolves the alarm.

A checkpoint followed in the same group of items by a larger one of the same hub may be
*read* instead (`read_checkpoint_item`: its note parsed, its signature not checked) and
judged like an opened one. If it is accepted and then replaced by a later accepted
checkpoint of the group, it is never stored: its root equals the clinic's own tree at its
size, so it says nothing the clinic has not checked, and it is acknowledged as
superseded without its signature verified. Any other outcome (stored as the accepted or a
pending checkpoint, an alarm, a dead letter) waits for its signature, and a bad one makes
it the bad-signature dead letter it would have been
(`gateway.storage.postgres_clinic_group`).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.sealing import log_origin
from ledger.batch import batch_hash
from ledger.checkpoint import open_checkpoint, parse_checkpoint
from ledger.errors import LedgerError
from ledger.jcs import canonical_value
from ledger.keys import jwk_public_key
from ledger.note import NoteVerifier, unverified_text
from ledger.records import OpenedView, read_batch_view
from ledger.rfc6962 import CompactTree, leaf_hash


class AlarmKind(StrEnum):
    BAD_SIGNATURE = "bad_signature"
    UNKNOWN_HUB = "unknown_hub"
    CHAIN_BREAK = "chain_break"
    ROLLBACK = "rollback"
    FORK = "fork"

    @property
    def stops_hub(self) -> bool:
        return self in (AlarmKind.CHAIN_BREAK, AlarmKind.ROLLBACK, AlarmKind.FORK)


class EnrolmentError(ValueError):
    """An admin's enrolment input is not a usable key pair for that hub."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolledHub:
    hub_id: str
    batch_key: Ed25519PublicKey
    log_verifier: NoteVerifier
    stopped: bool = False


def enrolled_hub(
    hub_id: str, batch_jwk: str, log_vkey: str, *, stopped: bool = False
) -> EnrolledHub:
    """Parse the keys an admin enrols (`glucohub keys show` on the hub prints them)."""
    try:
        jwk = json.loads(batch_jwk)
        key = jwk_public_key(jwk)
        verifier = NoteVerifier.parse(log_vkey.strip())
    except (ValueError, LedgerError) as exc:
        raise EnrolmentError(f"hub {hub_id}: {exc}") from None
    if verifier.name != log_origin(hub_id):
        raise EnrolmentError(
            f"hub {hub_id}: the log key is named {verifier.name!r}, expected {log_origin(hub_id)!r}"
        )
    return EnrolledHub(hub_id=hub_id, batch_key=key, log_verifier=verifier, stopped=stopped)


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """An item not stored as data: dead-lettered with `reason`, and alarmed when `alarm`."""

    reason: str
    detail: str
    alarm: AlarmKind | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClinicRecord:
    index: int
    patient_id: str | None
    canonical: str  # RFC 8785 text, exactly what the hub committed to
    # Format 2: the salt its leaf in the records tree hashes (the hub sends each record's,
    # never the batch's seed); the clinic discloses records on with it. None: format 1.
    salt: bytes | None = None
    # `canonical` parsed, when verification has it (`jcs.canonical_value`); None: parse it.
    value: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedBatch:
    hub_id: str
    batch_seq: int
    jws: str
    leaf_hash: bytes
    prev_batch_hash: str  # base64url SHA-256 of batch seq-1's JWS; "" for batch 0
    records: tuple[ClinicRecord, ...]


def open_batch_item(hub: EnrolledHub, payload: bytes) -> VerifiedBatch | Refusal:
    """Verify a batch view (`gateway.sealing.batch_message`) against the enrolled key."""
    try:
        view = read_batch_view(payload, hub.batch_key)
        records = _records(view)
    except LedgerError as exc:
        return Refusal(reason="bad_signature", detail=str(exc), alarm=AlarmKind.BAD_SIGNATURE)
    opened = view.payload
    if opened.hub_id != hub.hub_id:
        detail = f"batch signed for hub {opened.hub_id!r} arrived on hub {hub.hub_id!r}'s topic"
        return Refusal(reason="bad_signature", detail=detail, alarm=AlarmKind.BAD_SIGNATURE)
    return VerifiedBatch(
        hub_id=hub.hub_id,
        batch_seq=opened.batch_seq,
        jws=view.jws,
        leaf_hash=leaf_hash(batch_hash(view.jws.encode("ascii"))),
        prev_batch_hash=opened.prev_batch_hash,
        records=records,
    )


def _records(view: OpenedView) -> tuple[ClinicRecord, ...]:
    # Format 1 batches carry their records inline; format 2 discloses them beside the JWS,
    # and their canonical bytes are the ones the records root was just recomputed from.
    opened = view.payload
    salts: list[bytes | None]
    if opened.records_root is not None:
        canonical, values = view.canonical, view.values
        indices: list[int] = view.indices
        salts = list(view.salts)
    else:
        pairs = [canonical_value(item) for item in (*opened.readings, *opened.events)]
        canonical, values = [c for c, _ in pairs], [v for _, v in pairs]
        indices = list(range(len(pairs)))
        salts = [None] * len(pairs)
    out = []
    for index, text, value, salt in zip(indices, canonical, values, salts, strict=True):
        patient = value.get("patient_id") if isinstance(value, dict) else None
        out.append(
            ClinicRecord(
                index=index,
                patient_id=patient if isinstance(patient, str) else None,
                canonical=text.decode("utf-8"),
                salt=salt,
                value=value,
            )
        )
    return tuple(out)


def chain_hash(jws: str) -> str:
    """What the next batch's `prev_batch_hash` must be."""
    return base64.urlsafe_b64encode(batch_hash(jws.encode("ascii"))).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Neighbours:
    """What the clinic holds around a batch's seq (JWS and prev hash of stored batches)."""

    same_seq_jws: str | None
    previous_jws: str | None  # batch seq - 1
    next_prev_hash: str | None  # batch seq + 1's prev_batch_hash


@dataclass(frozen=True, slots=True, kw_only=True)
class Accept:
    linked: bool  # its link to the predecessor was checked (or it is batch 0)
    links_next: bool  # the stored successor's link is now checked too


@dataclass(frozen=True, slots=True, kw_only=True)
class Duplicate:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Alarm:
    kind: AlarmKind
    detail: str


def judge_batch(batch: VerifiedBatch, held: Neighbours) -> Accept | Duplicate | Alarm:
    seq = batch.batch_seq
    if held.same_seq_jws is not None:
        if held.same_seq_jws == batch.jws:
            return Duplicate()
        return Alarm(kind=AlarmKind.FORK, detail=f"two different batches signed as seq {seq}")
    if seq == 0 and batch.prev_batch_hash:
        return Alarm(kind=AlarmKind.CHAIN_BREAK, detail="batch 0 names a predecessor")
    if held.previous_jws is not None and chain_hash(held.previous_jws) != batch.prev_batch_hash:
        return Alarm(
            kind=AlarmKind.CHAIN_BREAK, detail=f"batch {seq} does not link to batch {seq - 1}"
        )
    if held.next_prev_hash is not None and held.next_prev_hash != chain_hash(batch.jws):
        return Alarm(
            kind=AlarmKind.CHAIN_BREAK, detail=f"batch {seq + 1} does not link to batch {seq}"
        )
    return Accept(
        linked=seq == 0 or held.previous_jws is not None, links_next=held.next_prev_hash is not None
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedCheckpoint:
    size: int
    root_hash: bytes
    note: str


def open_checkpoint_item(hub: EnrolledHub, payload: bytes) -> VerifiedCheckpoint | Refusal:
    try:
        checkpoint = open_checkpoint(payload, hub.log_verifier, origin=log_origin(hub.hub_id))
    except LedgerError as exc:
        return Refusal(reason="bad_signature", detail=str(exc), alarm=AlarmKind.BAD_SIGNATURE)
    return VerifiedCheckpoint(
        size=checkpoint.size, root_hash=checkpoint.root_hash, note=payload.decode("utf-8")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class UncheckedCheckpoint:
    """A checkpoint note as `read_checkpoint_item` parsed it: its signature NOT verified."""

    size: int
    root_hash: bytes
    note: str


def read_checkpoint_item(hub: EnrolledHub, payload: bytes) -> UncheckedCheckpoint | None:
    """What `open_checkpoint_item` returns when the note's signature verifies (the same
    size, root and note text), without verifying it; None for a note whose text does not
    parse as the hub's checkpoint (`open_checkpoint_item` refuses it with its reason)."""
    try:
        note = payload.decode("utf-8")
        checkpoint = parse_checkpoint(unverified_text(note))
    except (UnicodeDecodeError, LedgerError):
        return None
    if checkpoint.origin != log_origin(hub.hub_id):
        return None
    return UncheckedCheckpoint(size=checkpoint.size, root_hash=checkpoint.root_hash, note=note)


class CheckpointVerdict(StrEnum):
    ACCEPT = "accepted"  # the new latest checkpoint of the hub
    STALE = "stale"  # an older one, consistent with what is held: a redelivery
    DUPLICATE = "duplicate"
    PENDING = "pending"  # the clinic lacks some of its batches: decide when they arrive


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedCheckpoint:
    size: int
    root_hash: bytes
    tree: CompactTree  # the hub's tree at `size`, built from the clinic's own leaves


def leaves_from(size: int, accepted: AcceptedCheckpoint | None) -> int:
    """The first seq whose leaf `tree_at` needs: a newer checkpoint extends the accepted
    tree (the usual case: a batch or two); an older one is rebuilt from leaf 0."""
    return accepted.size if accepted is not None and size >= accepted.size else 0


def tree_at(
    size: int, accepted: AcceptedCheckpoint | None, leaf_hashes: Sequence[bytes]
) -> CompactTree | None:
    """The hub's tree at `size` from the stored leaf hashes of seqs `leaves_from(...)` up
    (stopping at the first missing seq), or None when a batch below `size` is missing."""
    start = leaves_from(size, accepted)
    if len(leaf_hashes) < size - start:
        return None
    tree = accepted.tree.copy() if accepted is not None and start > 0 else CompactTree()
    tree.extend(leaf_hashes[: size - start])
    return tree


def judge_checkpoint(
    checkpoint: VerifiedCheckpoint | UncheckedCheckpoint,
    accepted: AcceptedCheckpoint | None,
    tree: CompactTree | None,
    pending_root: bytes | None = None,
) -> CheckpointVerdict | Alarm:
    """`tree`: the clinic's tree at the checkpoint's size (`tree_at`), None when a batch is
    missing; `pending_root`: the root of a pending checkpoint of the same size. An
    unchecked checkpoint is judged as if its signature verified."""
    size, root = checkpoint.size, checkpoint.root_hash
    if accepted is not None and size == accepted.size:
        if root == accepted.root_hash:
            return CheckpointVerdict.DUPLICATE
        return Alarm(kind=AlarmKind.FORK, detail=f"two different checkpoints of size {size}")
    if pending_root is not None and pending_root != root:
        return Alarm(kind=AlarmKind.FORK, detail=f"two different checkpoints of size {size}")
    if tree is None:
        return CheckpointVerdict.PENDING
    if tree.root() != root:
        if accepted is not None and size < accepted.size:
            return Alarm(
                kind=AlarmKind.ROLLBACK,
                detail=f"a checkpoint of size {size} whose log differs from the one accepted at"
                f" size {accepted.size}",
            )
        return Alarm(
            kind=AlarmKind.FORK,
            detail=f"the checkpoint of size {size} does not match the batches the hub sent",
        )
    if accepted is not None and size < accepted.size:
        return CheckpointVerdict.STALE
    return CheckpointVerdict.ACCEPT
