"""Ledger exports for third parties: the self-contained bundle and one-batch proofs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway.disclosure import disclosed_for
from gateway.errors import InputError, StorageError
from gateway.sealing import load_public_keys
from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from ledger import rfc6962
from ledger.bundle import BundleBatch, write_bundle
from ledger.note import add_signatures
from ledger.proof import make_inclusion_bundle
from ledger.records import disclose


def _public(data_dir: Path, hub_id: str) -> tuple[dict[str, Any], str]:
    keys = load_public_keys(data_dir, hub_id)
    if keys is None:
        raise StorageError(f"no ledger keys in {data_dir}; nothing was ever sealed")
    jwk = json.loads((data_dir / "keys" / "batch-key.jwk").read_text())
    return jwk, keys[1]


def _latest_checkpoint(store: HubStorage) -> tuple[int, str]:
    latest = store.latest_checkpoint()
    if latest is None:
        raise StorageError("the ledger has no signed checkpoint yet")
    size, _, note = latest
    return size, add_signatures(note, store.cosignatures(size))


def export_bundle(data_dir: Path, hub_id: str, out: Path, *, storage_url: str = "") -> int:
    """Write every batch covered by the latest checkpoint with all its records (the whole
    hub's health data: for the operator to hand to a verifying site); return the number of
    batches."""
    jwk, vkey = _public(data_dir, hub_id)
    store = open_storage(data_dir, storage_url, read_only=True)
    try:
        size, note = _latest_checkpoint(store)
        pruned = sorted(store.pruned_batch_seqs(0, size))
        if pruned:
            raise InputError(
                f"{len(pruned)} batches (first {pruned[0]}) had their readings removed by "
                "retention (storage.retention_days): a bundle needs every record; the clinic "
                "received each batch with its records upstream"
            )
        jws_list = _bundle_batches(store, size)
        tmp = out.with_name(out.name + ".tmp")
        try:
            with tmp.open("w", encoding="utf-8") as handle:
                write_bundle(
                    handle.write,
                    log_vkey=vkey,
                    batch_jwk=jwk,
                    jws_list=jws_list,
                    checkpoint_note=note,
                )
            tmp.replace(out)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write the bundle to {out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    return size


def _bundle_batches(store: HubStorage, size: int) -> Iterator[BundleBatch]:
    for batch in store.batches(limit=size):
        records = store.batch_records(batch.seq)
        if records.seed is None:  # format 1: the records are in the JWS
            yield batch.jws
        else:
            every = disclose(
                records.seed, records.canonical, range(len(records.canonical)), with_paths=False
            )
            yield batch.jws, every


def prove_batch(
    data_dir: Path,
    hub_id: str,
    seq: int,
    out: Path,
    patient: str | None = None,
    *,
    storage_url: str = "",
) -> int:
    """Write an offline inclusion proof for batch `seq`, with `patient`'s records of it when
    given; return the tree size it proves to."""
    store = open_storage(data_dir, storage_url, read_only=True)
    try:
        size, note = _latest_checkpoint(store)
        if not 0 <= seq < size:
            raise InputError(f"batch {seq} is not covered by the latest checkpoint (size {size})")
        leaves = store.leaf_hashes(0, size)
        batch = next(iter(store.batches(since_seq=seq, limit=1)))
        proof = rfc6962.inclusion_proof_from_hashes(leaves, seq)
        records = []
        if patient is not None:
            found = disclosed_for(batch.jws, store.batch_records(seq), {patient})
            if found is None:
                raise InputError(f"batch {seq} holds no record of patient {patient!r}")
            records = found
        body = make_inclusion_bundle(batch.jws, seq, size, proof, note, records)
        try:
            out.write_text(body)
        except OSError as exc:
            raise InputError(f"cannot write the proof to {out}: {exc.strerror or exc}") from None
    finally:
        store.close()
    return size


def read_batch_key(text: str) -> dict[str, Any]:
    """A batch key given on the command line: the JWK JSON itself, or a file holding it."""
    candidate = text.strip()
    if not candidate.startswith("{"):
        path = Path(candidate)
        if not path.exists():
            raise InputError(f"--batch-key is neither JWK JSON nor an existing file: {text!r}")
        try:
            candidate = path.read_text().strip().removeprefix("batch-key:").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"--batch-key: cannot read {text!r}: {exc}") from None
    try:
        jwk = json.loads(candidate)
    except json.JSONDecodeError as exc:
        raise InputError(f"--batch-key is not valid JSON: {exc}") from None
    if not isinstance(jwk, dict):
        raise InputError("--batch-key must be a JSON object (an Ed25519 JWK)")
    return jwk
