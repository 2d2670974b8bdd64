"""The ledger's exception tree: one base, each class carrying the fields that locate the fault.

Append-only: two helpers add classes here; do not reorder or rename existing ones.
"""

from __future__ import annotations

from typing import Literal

WitnessAlarmKind = Literal["rollback", "fork", "bad_signature", "inconsistent"]


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class ProofError(LedgerError):
    """A Merkle proof (or its parameters) is malformed or does not verify."""


class RootMismatch(ProofError):
    """A proof recomputed a root different from the one it was checked against."""

    def __init__(self, expected_root: bytes, actual_root: bytes, what: str = "root") -> None:
        super().__init__(
            f"{what} mismatch: expected {expected_root.hex()}, computed {actual_root.hex()}"
        )
        self.expected_root = expected_root
        self.actual_root = actual_root
        self.what = what


class BadSignature(LedgerError):
    """A signature by the named key is missing or does not verify."""

    def __init__(self, key_name: str, reason: str = "signature does not verify") -> None:
        super().__init__(f"key {key_name!r}: {reason}")
        self.key_name = key_name
        self.reason = reason


class MalformedNote(LedgerError):
    """A signed note, verifier key, checkpoint or cosignature line is not well formed."""


class MalformedJws(LedgerError):
    """A JWS compact serialisation is not well formed."""


class BatchVerificationError(LedgerError):
    """A sealed batch failed verification; batch_seq names the first bad batch."""

    def __init__(self, batch_seq: int, reason: str) -> None:
        super().__init__(f"batch {batch_seq}: {reason}")
        self.batch_seq = batch_seq
        self.reason = reason


class BundleError(LedgerError):
    """An exported bundle failed verification; batch_seq is None when no batch is to blame."""

    def __init__(self, batch_seq: int | None, reason: str) -> None:
        where = "bundle" if batch_seq is None else f"batch {batch_seq}"
        super().__init__(f"{where}: {reason}")
        self.batch_seq = batch_seq
        self.reason = reason


class WitnessAlarm(LedgerError):
    """The log misbehaved: rolled back, forked, signed badly or gave an inconsistent proof."""

    def __init__(self, kind: WitnessAlarmKind, detail: str) -> None:
        super().__init__(f"WITNESS ALARM {kind}: {detail}")
        self.kind: WitnessAlarmKind = kind
        self.detail = detail


class CanonicalizationError(LedgerError):
    """A value has no RFC 8785 canonical JSON form; path locates it ("$.readings[3].value")."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class KeyFileError(LedgerError):
    """A key file cannot be written or read (exists already, wrong passphrase, not Ed25519)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"key file {path}: {reason}")
        self.path = path
        self.reason = reason


class MalformedKey(LedgerError):
    """A JWK (or raw public key) is not a well-formed Ed25519 public key."""


class TileError(LedgerError):
    """A tlog-tiles path, tile or entry bundle is malformed or outside the tree (A1)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"tile {path!r}: {reason}")
        self.path = path
        self.reason = reason


class MalformedBatch(LedgerError):
    """A signed batch payload is not the JSON object the batch format defines (A2)."""


class RecordError(LedgerError):
    """A disclosed batch record does not match what its batch signed; index None when no
    single record is to blame."""

    def __init__(self, index: int | None, reason: str) -> None:
        where = "records" if index is None else f"record {index}"
        super().__init__(f"{where}: {reason}")
        self.index = index
        self.reason = reason
