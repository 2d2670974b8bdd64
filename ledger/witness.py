"""A transparency-log witness that another site runs against a Glucohub log.

It polls the log's checkpoint, checks that every new checkpoint is signed by the log and is an
append-only extension of the last one it saw (RFC 6962 consistency proof), records that in a
state file, and returns a C2SP cosignature/v1 line to the log. Anything else is an alarm: a
smaller tree (rollback), two roots for one size (fork), a failing consistency proof
(inconsistent) or a checkpoint the log's key did not sign (bad_signature). An alarm is logged at
CRITICAL on "glucohub.witness", written to <state_dir>/alarm.json, and ends the process with exit
code 3; while alarm.json exists the witness refuses to run (an operator must look first).

Pure core: `WitnessState`, `check`, `open_log_checkpoint`. Thin edge: `run` (stdlib urllib only).

    python -m ledger.witness --log-url http://hub:8080/log --log-key 'NAME+ID+KEY' \\
        --state-dir /var/lib/witness --key-file /var/lib/witness/key.pem --name witness.example/w1
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import logging
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.cosignature import WitnessSigner, cosign
from ledger.errors import BadSignature, LedgerError, MalformedNote, ProofError, WitnessAlarm
from ledger.note import NoteVerifier
from ledger.rfc6962 import EMPTY_ROOT, verify_consistency

__all__ = [
    "EXIT_ALARM",
    "EXIT_ERROR",
    "EXIT_OK",
    "EXIT_USAGE",
    "WitnessState",
    "check",
    "generate_witness_key",
    "load_or_create_witness_key",
    "load_state",
    "main",
    "open_log_checkpoint",
    "parse_consistency_response",
    "run",
    "save_state",
]

log = logging.getLogger("glucohub.witness")

EXIT_OK = 0
EXIT_ERROR = 1  # a --once poll could not complete (log unreachable, cosignature refused)
EXIT_USAGE = 2
EXIT_ALARM = 3

STATE_FILE = "state.json"
ALARM_FILE = "alarm.json"
_MAX_RESPONSE = 1 << 20


# --- pure core -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessState:
    """The largest consistent tree head seen, and how far the log holds our cosignature."""

    origin: str
    size: int
    root_hash: bytes
    cosigned_size: int = -1  # size of the last checkpoint whose cosignature the log accepted

    def to_json(self) -> str:
        return json.dumps(
            {
                "origin": self.origin,
                "size": self.size,
                "root_hash": base64.b64encode(self.root_hash).decode(),
                "cosigned_size": self.cosigned_size,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> WitnessState:
        try:
            obj = json.loads(text)
            origin, size, cosigned = obj["origin"], obj["size"], obj["cosigned_size"]
            root = base64.b64decode(obj["root_hash"], validate=True)
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise MalformedNote(f"witness state is unreadable: {exc}") from exc
        if not (isinstance(origin, str) and _is_int(size) and _is_int(cosigned)):
            raise MalformedNote("witness state has fields of the wrong type")
        if size < 0 or len(root) != 32:
            raise MalformedNote("witness state has an impossible size or root")
        return cls(origin=origin, size=size, root_hash=root, cosigned_size=cosigned)

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(origin=self.origin, size=self.size, root_hash=self.root_hash)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def open_log_checkpoint(note: str | bytes, log_verifier: NoteVerifier) -> Checkpoint:
    """The log's checkpoint if the log's key signed it; otherwise a bad_signature alarm."""
    try:
        return open_checkpoint(note, log_verifier)
    except (BadSignature, MalformedNote) as exc:
        raise WitnessAlarm(
            "bad_signature", f"checkpoint not validly signed by the log: {exc}"
        ) from exc


def check(
    state: WitnessState | None, new_checkpoint: Checkpoint, consistency_proof: Sequence[bytes]
) -> WitnessState:
    """Decide whether `new_checkpoint` may follow `state`; return the new state or raise.

    No state yet: trust on first use (an empty tree must have the empty root). Same size: the
    root must match (else fork). Smaller: rollback. Larger: the proof must show the old tree is
    a prefix of the new one (else inconsistent). An unchanged checkpoint returns `state` itself.
    """
    new = new_checkpoint
    if state is None:
        if new.size == 0 and new.root_hash != EMPTY_ROOT:
            raise WitnessAlarm("inconsistent", "empty tree with a root other than SHA-256('')")
        return WitnessState(origin=new.origin, size=new.size, root_hash=new.root_hash)
    if new.origin != state.origin:
        raise WitnessAlarm(
            "inconsistent", f"origin changed from {state.origin!r} to {new.origin!r}"
        )
    if new.size < state.size:
        raise WitnessAlarm(
            "rollback", f"{new.origin}: tree size went from {state.size} back to {new.size}"
        )
    if new.size == state.size:
        if new.root_hash != state.root_hash:
            raise WitnessAlarm(
                "fork",
                f"{new.origin}: two roots for size {new.size}: "
                f"{state.root_hash.hex()} (seen) and {new.root_hash.hex()} (now)",
            )
        return state
    try:
        verify_consistency(state.size, new.size, state.root_hash, new.root_hash, consistency_proof)
    except ProofError as exc:
        raise WitnessAlarm(
            "inconsistent", f"{new.origin}: size {state.size} -> {new.size} not proven: {exc}"
        ) from exc
    return replace(state, size=new.size, root_hash=new.root_hash)


def parse_consistency_response(body: bytes, old_size: int, new_size: int) -> list[bytes]:
    """{"old_size": M, "new_size": N, "proof": [base64 hashes]} for the sizes asked for."""
    try:
        obj = json.loads(body)
        proof_b64 = obj["proof"]
        if obj["old_size"] != old_size or obj["new_size"] != new_size:
            raise ValueError(f"answers {obj['old_size']}->{obj['new_size']}")
        if not isinstance(proof_b64, list):
            raise ValueError("proof is not a list")
        return [base64.b64decode(h, validate=True) for h in proof_b64]
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise WitnessAlarm(
            "inconsistent", f"unusable consistency proof {old_size}->{new_size}: {exc}"
        ) from exc


# --- files ---------------------------------------------------------------------------------------


def _atomic_write(path: Path, data: bytes) -> None:
    # write a temporary file, fsync it, rename over the old one, fsync the directory: a crash
    # leaves either the old or the new state, never a torn one.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def load_state(state_dir: Path) -> WitnessState | None:
    path = Path(state_dir) / STATE_FILE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    return WitnessState.from_json(text)


def save_state(state_dir: Path, state: WitnessState) -> None:
    _atomic_write(Path(state_dir) / STATE_FILE, state.to_json().encode())


def generate_witness_key(path: Path) -> Ed25519PrivateKey:
    """Create a new Ed25519 key as unencrypted PEM PKCS#8, file mode 0600; never overwrites."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


def load_or_create_witness_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.exists():
        log.info("creating witness key %s", path)
        return generate_witness_key(path)
    key = load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise MalformedNote(f"{path} does not hold an Ed25519 private key")
    return key


# --- the polling edge ----------------------------------------------------------------------------


class _Unreachable(Exception):
    """The log could not be asked (network, HTTP status): retry later, not an alarm."""


def _http(url: str, *, data: bytes | None = None, timeout_s: float) -> bytes:
    headers = {"User-Agent": "glucohub-witness/1"}
    if data is not None:
        headers["Content-Type"] = "text/plain; charset=utf-8"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body: bytes = resp.read(_MAX_RESPONSE + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _Unreachable(f"{url}: {exc}") from exc
    if len(body) > _MAX_RESPONSE:
        raise _Unreachable(f"{url}: response larger than {_MAX_RESPONSE} bytes")
    return body


def _raise_alarm(state_dir: Path, alarm: WitnessAlarm, **evidence: Any) -> int:
    log.critical("WITNESS ALARM %s: %s", alarm.kind, alarm.detail)
    record = {"kind": alarm.kind, "detail": alarm.detail, "time": int(time.time()), **evidence}
    _atomic_write(state_dir / ALARM_FILE, json.dumps(record, sort_keys=True).encode())
    return EXIT_ALARM


def _poll(
    *,
    log_url: str,
    verifier: NoteVerifier,
    signer: WitnessSigner,
    state_dir: Path,
    timeout_s: float,
) -> bool:
    """One poll. Returns True when done (state saved, cosignature delivered if needed)."""
    note = _http(f"{log_url}/checkpoint", timeout_s=timeout_s)
    cp = open_log_checkpoint(note, verifier)
    state = load_state(state_dir)
    proof: list[bytes] = []
    if state is not None and state.origin == cp.origin and cp.size > state.size > 0:
        body = _http(f"{log_url}/consistency?old={state.size}&new={cp.size}", timeout_s=timeout_s)
        proof = parse_consistency_response(body, state.size, cp.size)
    new_state = check(state, cp, proof)
    if new_state != state:
        save_state(state_dir, new_state)  # record before cosigning: never sign unrecorded heads
        log.info("%s: accepted size %d root %s", cp.origin, cp.size, cp.root_hash.hex())
    if new_state.cosigned_size == new_state.size:
        return True
    line = cosign(cp, signer, int(time.time()))
    _http(f"{log_url}/cosignature", data=line.encode(), timeout_s=timeout_s)
    save_state(state_dir, replace(new_state, cosigned_size=new_state.size))
    log.info("%s: cosigned size %d", cp.origin, cp.size)
    return True


def run(
    *,
    log_url: str,
    log_key: str,
    state_dir: Path | str,
    key_file: Path | str,
    interval_s: float = 10.0,
    once: bool = False,
    witness_name: str = "witness.local/glucohub",
    timeout_s: float = 10.0,
) -> int:
    """Poll the log until an alarm (exit 3). With once=True, poll a single time.

    Exit codes: 0 ok, 1 a --once poll could not complete, 2 usage/configuration, 3 alarm.
    """
    state_dir = Path(state_dir)
    log_url = log_url.rstrip("/")
    try:
        verifier = NoteVerifier.parse(log_key)
    except LedgerError as exc:
        log.error("bad --log-key: %s", exc)
        return EXIT_USAGE
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        signer = WitnessSigner(witness_name, load_or_create_witness_key(Path(key_file)))
        load_state(state_dir)
    except (LedgerError, OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        return EXIT_USAGE
    alarm_path = state_dir / ALARM_FILE
    if alarm_path.exists():
        log.critical(
            "WITNESS ALARM still raised (%s): %s; refusing to cosign until an operator removes it",
            alarm_path,
            alarm_path.read_text("utf-8", errors="replace")[:500],
        )
        return EXIT_ALARM
    log.info("witness %s watching %s (%s)", signer.verifier_key(), log_url, verifier.name)
    while True:
        try:
            _poll(
                log_url=log_url,
                verifier=verifier,
                signer=signer,
                state_dir=state_dir,
                timeout_s=timeout_s,
            )
            ok = True
        except WitnessAlarm as alarm:
            return _raise_alarm(state_dir, alarm, log_url=log_url)
        except _Unreachable as exc:
            log.warning("log unreachable, will retry: %s", exc)
            ok = False
        if once:
            return EXIT_OK if ok else EXIT_ERROR
        time.sleep(interval_s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.witness", description="Witness a Glucohub transparency log."
    )
    parser.add_argument("--log-url", required=True, help="base URL, e.g. http://hub:8080/log")
    parser.add_argument("--log-key", required=True, help="the log's verifier key (vkey)")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--key-file", required=True, type=Path, help="created 0600 if missing")
    parser.add_argument("--name", default="witness.local/glucohub", help="witness key name")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between polls")
    parser.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    parser.add_argument("--once", action="store_true", help="poll once and exit")
    parser.add_argument(
        "--print-vkey", action="store_true", help="print the witness's cosignature vkey and exit"
    )
    args = parser.parse_args(argv)
    if args.print_vkey:
        try:
            key = load_or_create_witness_key(args.key_file)
            print(WitnessSigner(args.name, key).verifier_key())
        except (LedgerError, OSError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return EXIT_OK
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO,
            stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s %(message)s",
        )
    try:
        return run(
            log_url=args.log_url,
            log_key=args.log_key,
            state_dir=args.state_dir,
            key_file=args.key_file,
            interval_s=args.interval,
            once=args.once,
            witness_name=args.name,
            timeout_s=args.timeout,
        )
    except KeyboardInterrupt:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
