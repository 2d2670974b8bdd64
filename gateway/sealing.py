"""Sealing stored readings into the ledger: signed batches, the Merkle tree, checkpoints.

Synchronous; the pipeline runs it on the store's thread. The order of effects makes a
crash at any point safe: the batch, its readings' batch_seq, the tree state and the
checkpoint's (size, root) commit in one transaction; the checkpoint is signed after,
and an unsigned checkpoint found at start-up is signed then. Ed25519 is deterministic,
so re-signing the persisted (size, root) yields the same note: two different
checkpoints for one size cannot exist.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.clock import Clock, SystemClock, parse_rfc3339, to_rfc3339
from gateway.errors import ConfigError
from gateway.model import Batch
from gateway.storage.contract import HubStorage, Unsealable
from gateway.topics import batches_topic, checkpoints_topic
from ledger import keys as ledger_keys
from ledger.batch import seal_records
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.errors import KeyFileError
from ledger.note import NoteSigner, verifier_key
from ledger.records import batch_view_json, disclose, new_seed, record_leaf_hashes
from ledger.rfc6962 import CompactTree

log = logging.getLogger(__name__)

KEYS_DIR = "keys"
BATCH_KEY_FILE = "batch-key.pem"
LOG_KEY_FILE = "log-key.pem"
# Public halves, written beside the private keys so `ledger verify` needs no passphrase.
BATCH_PUBLIC_FILE = "batch-key.jwk"
LOG_PUBLIC_FILE = "log-key.vkey"


def log_origin(hub_id: str) -> str:
    """The checkpoint origin line and signed-note key name of this hub's log."""
    return f"glucohub.local/{hub_id}"


@dataclass(frozen=True, slots=True, kw_only=True)
class HubKeys:
    batch_key: Ed25519PrivateKey
    batch_kid: str
    log_key: Ed25519PrivateKey
    log_name: str

    @property
    def log_verifier_key(self) -> str:
        return verifier_key(self.log_name, self.log_key.public_key())

    @property
    def batch_jwk(self) -> dict[str, str]:
        return ledger_keys.public_jwk(self.batch_key.public_key(), kid=self.batch_kid)


def init_keys(data_dir: Path, passphrase: str | None) -> list[Path]:
    """Create the batch and log keys (0600) if missing; return the files created."""
    directory = data_dir / KEYS_DIR
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    if (directory / LOG_PUBLIC_FILE).exists():
        missing = [n for n in (BATCH_KEY_FILE, LOG_KEY_FILE) if not (directory / n).exists()]
        if missing:
            # New keys would start another log under the old one's name: witnesses would
            # see a bad signature, verifying sites a batch key they do not know.
            raise ConfigError(
                "storage.data_dir",
                f"{directory / missing[0]} is missing but the log's public key is there: "
                "restore the hub's keys (a backup made with --with-keys, or a copy)",
            )
    created: list[Path] = []
    for name in (BATCH_KEY_FILE, LOG_KEY_FILE):
        path = directory / name
        if not path.exists():
            ledger_keys.save_private_key(path, ledger_keys.generate_key(), passphrase or None)
            created.append(path)
    return created


def load_keys(data_dir: Path, hub_id: str, passphrase: str | None) -> HubKeys:
    directory = data_dir / KEYS_DIR
    try:
        batch_key = ledger_keys.load_private_key(directory / BATCH_KEY_FILE, passphrase or None)
        log_key = ledger_keys.load_private_key(directory / LOG_KEY_FILE, passphrase or None)
    except KeyFileError as exc:
        raise ConfigError(
            "storage.data_dir",
            f"ledger keys unusable ({exc}); run `glucohub keys init` "
            "or check ledger.key_passphrase",
        ) from None
    kid = ledger_keys.jwk_thumbprint(ledger_keys.public_jwk(batch_key.public_key()))
    keys = HubKeys(batch_key=batch_key, batch_kid=kid, log_key=log_key, log_name=log_origin(hub_id))
    _write_public(directory / BATCH_PUBLIC_FILE, json.dumps(keys.batch_jwk, sort_keys=True))
    _write_public(directory / LOG_PUBLIC_FILE, keys.log_verifier_key)
    return keys


def _write_public(path: Path, text: str) -> None:
    if not path.exists() or path.read_text().strip() != text:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text + "\n")
        tmp.replace(path)


def load_public_keys(data_dir: Path, hub_id: str) -> tuple[Ed25519PublicKey, str] | None:
    """The batch public key and the log verifier key string, or None if never created."""
    directory = data_dir / KEYS_DIR
    try:
        jwk = json.loads((directory / BATCH_PUBLIC_FILE).read_text())
        vkey = (directory / LOG_PUBLIC_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    if not vkey.startswith(log_origin(hub_id) + "+"):
        raise ConfigError("hub.hub_id", f"the log key in {directory} belongs to another hub id")
    return ledger_keys.jwk_public_key(jwk), vkey


@dataclass(frozen=True, slots=True, kw_only=True)
class SealOutcome:
    batch: Batch
    records: int  # readings and ledger events
    tree_size: int
    root_hash: bytes


def batch_message(batch_seq: int, jws: bytes, seed: bytes, canonical: list[bytes]) -> bytes:
    """The upstream message of a sealed batch: a batch view (`ledger.records`) with every
    record disclosed, so the clinic verifies it with the batch key and stores it."""
    records = disclose(seed, canonical, range(len(canonical)), with_paths=False)
    return batch_view_json(batch_seq, jws, records).encode("utf-8")


def restored_log_hold(
    *,
    tree_size: int,
    published_size: int | None,
    published_root: bytes | None,
    root_at_published: bytes | None,
) -> str | None:
    """Why a hub restored from a backup must not seal yet, or None when it may.

    The next batch gets sequence number `tree_size`. If the hub had published a larger log
    before the backup was restored, that number (and the checkpoints after it) already exist
    with other contents at witnesses and the clinic: sealing would fork the log. So sealing
    waits until the last published size is known, is at most the restored tree's, and the
    restored tree's root at that size (`root_at_published`) is the published root."""
    if published_size is None or published_root is None:
        return (
            f"restored from a backup (log size {tree_size}); the size of the last checkpoint "
            "this hub published is unknown, so sealing is held (readings are stored, "
            "unsealed): give it with `glucohub restore --data-dir DIR --published-size N "
            "--published-root HASH` (or --witness-state FILE, a witness's state.json) and "
            "restart the hub"
        )
    if published_size > tree_size:
        return (
            f"restored from a backup with log size {tree_size}, but this hub had published "
            f"size {published_size}: sealing would reuse batch numbers {tree_size} to "
            f"{published_size - 1} and fork the log, so it stays held (readings are stored, "
            "unsealed); restore a newer backup, or obtain the missing batches"
        )
    if root_at_published != published_root:
        return (
            f"restored from a backup whose log differs from the published one at size "
            f"{published_size} (root mismatch): sealing stays held; check the backup and "
            "the published size and root"
        )
    return None


class Sealer:
    def __init__(
        self,
        store: HubStorage,
        keys: HubKeys,
        *,
        hub_id: str,
        forward: bool,
        clock: Clock | None = None,
        hold: str | None = None,
    ) -> None:
        clock = clock or SystemClock()
        # Set after a restore whose last published checkpoint is not known to match: nothing
        # is sealed (`restored_log_hold`); ingest goes on.
        self.held = hold
        if hold is not None:
            log.critical("SEALING HELD: %s", hold)
        self._store = store
        self._keys = keys
        self._hub_id = hub_id
        self._signer = NoteSigner(keys.log_name, keys.log_key)
        # Upstream topics of the outbox rows sealing adds; None: nothing is forwarded.
        self._batches_topic = batches_topic(hub_id) if forward else None
        self._checkpoints_topic = checkpoints_topic(hub_id) if forward else None
        state = store.tree_state()
        self._tree = CompactTree() if state is None else CompactTree.from_bytes(state[1])
        self.quarantined = store.count_quarantined()
        self.sign_checkpoint(clock.now())  # finishes whatever a crash interrupted

    @property
    def tree_size(self) -> int:
        return self._tree.size

    def seal(self, limit: int, now: datetime, *, sign: bool = True) -> SealOutcome | None:
        """Seal up to `limit` of the oldest unsealed readings, and ledger events, into one
        batch; with `sign`, sign a checkpoint of the new tree too (a backlog signs once, at
        its end). A stored record that cannot be sealed is quarantined first, never sealed,
        and never stops the rest. Nothing while sealing is `held`."""
        if self.held is not None:
            return None
        while True:
            rows, bad_rows = self._store.unsealed_for_seal(limit)
            events, bad_events = self._store.unsealed_events_for_seal(limit)
            if not bad_rows and not bad_events:
                break
            self._quarantine(bad_rows + bad_events, now)
        if not rows and not events:
            return None
        previous = self._store.last_batch()
        seq = 0 if previous is None else previous.seq + 1
        # Stored times are RFC 3339 UTC with milliseconds and "Z": they sort as text.
        times = [row.time for row in rows] or [to_rfc3339(now)]
        first, last = min(times), max(times)
        canonical = [row.canonical.encode("utf-8") for row in rows]
        canonical += [event.canonical.encode("utf-8") for event in events]
        seed = new_seed()
        sealed = seal_records(
            hub_id=self._hub_id,
            batch_seq=seq,
            start=first,
            end=last,
            record_leaf_hashes=record_leaf_hashes(seed, canonical),
            prev_jws=None if previous is None else previous.jws,
            signing_key=self._keys.batch_key,
            kid=self._keys.batch_kid,
        )
        batch = Batch(
            seq=seq,
            reading_count=len(rows),
            first_time=parse_rfc3339(first),
            last_time=parse_rfc3339(last),
            sealed_at=now,
            jws=sealed.jws,
            leaf_hash=sealed.leaf_hash,
        )
        tree = self._tree.copy()
        tree.append(sealed.leaf_hash)
        root = tree.root()
        topic = self._batches_topic
        self._store.record_sealed_batch(
            batch=batch,
            reading_ids=[row.row_id for row in rows],
            event_ids=[event.row_id for event in events],
            tree_size=tree.size,
            compact_tree=tree.to_bytes(),
            record_seed=seed,
            outbox=None
            if topic is None
            else (topic, batch_message(seq, sealed.jws, seed, canonical)),
        )
        self._tree = tree
        if sign:
            self.sign_checkpoint(now)
        return SealOutcome(batch=batch, records=len(canonical), tree_size=tree.size, root_hash=root)

    def _quarantine(self, items: list[Unsealable], now: datetime) -> None:
        self._store.quarantine(items, now)
        self.quarantined = self._store.count_quarantined()
        for item in items:
            log.critical(
                "QUARANTINED stored %s %d of patient %s: it cannot be sealed (%s); it is kept "
                "out of the ledger, everything else is sealed",
                item.record,
                item.row_id,
                item.patient_id,
                item.reason,
            )

    def sign_checkpoint(self, now: datetime) -> int:
        """Sign a checkpoint of the current tree. Its (size, root) is committed first and
        only then signed, so a crash in between leaves a row that the next start signs —
        the same bytes, since Ed25519 is deterministic: one checkpoint per size, ever."""
        if self._tree.size > 0:
            self._store.persist_checkpoint(self._tree.size, self._tree.root(), now)
        return self.sign_pending_checkpoints(now)

    def sign_pending_checkpoints(self, now: datetime) -> int:
        signed = 0
        for size, root in self._store.unsigned_checkpoints():
            checkpoint = Checkpoint(origin=self._keys.log_name, size=size, root_hash=root)
            note = sign_checkpoint(checkpoint, self._signer)
            self._store.record_checkpoint_note(size, note, self._checkpoints_topic, now)
            signed += 1
        return signed
