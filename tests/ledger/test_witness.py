"""The witness: the pure decision core, then a real witness process against a fake log."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.cosignature import CosignatureVerifier, verify_cosignature
from ledger.errors import MalformedNote, WitnessAlarm
from ledger.note import NoteSigner
from ledger.rfc6962 import EMPTY_ROOT, consistency_proof, root
from ledger.witness import (
    WitnessState,
    check,
    generate_witness_key,
    load_state,
    open_log_checkpoint,
    parse_consistency_response,
    save_state,
)

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "hub.example/log"


def leaves(n: int, tag: str = "a") -> list[bytes]:
    return [f"{tag}-batch-{i}".encode() for i in range(n)]


def cp_of(data: list[bytes], origin: str = ORIGIN) -> Checkpoint:
    return Checkpoint(origin=origin, size=len(data), root_hash=root(data))


def state_of(data: list[bytes]) -> WitnessState:
    return WitnessState(origin=ORIGIN, size=len(data), root_hash=root(data))


# --- pure core --------------------------------------------------------------------------------


def test_first_checkpoint_is_trusted_on_first_use() -> None:
    s = check(None, cp_of(leaves(5)), [])
    assert (s.origin, s.size, s.root_hash) == (ORIGIN, 5, root(leaves(5)))
    assert s.cosigned_size == -1


def test_empty_tree_must_have_the_empty_root() -> None:
    assert check(None, cp_of([]), []).root_hash == EMPTY_ROOT
    with pytest.raises(WitnessAlarm) as exc:
        check(None, Checkpoint(origin=ORIGIN, size=0, root_hash=b"\x01" * 32), [])
    assert exc.value.kind == "inconsistent"


def test_growth_with_a_valid_proof_is_accepted() -> None:
    data = leaves(13)
    s = check(state_of(data[:6]), cp_of(data), consistency_proof(data, 6))
    assert (s.size, s.root_hash) == (13, root(data))


def test_growth_from_empty_needs_no_proof() -> None:
    data = leaves(3)
    assert check(state_of([]), cp_of(data), []).size == 3


def test_same_checkpoint_again_changes_nothing() -> None:
    s = replace_cosigned(state_of(leaves(4)), 4)
    assert check(s, cp_of(leaves(4)), []) is s


def replace_cosigned(s: WitnessState, n: int) -> WitnessState:
    return WitnessState(origin=s.origin, size=s.size, root_hash=s.root_hash, cosigned_size=n)


def test_rollback_alarm() -> None:
    with pytest.raises(WitnessAlarm) as exc:
        check(state_of(leaves(8)), cp_of(leaves(7)), [])
    assert exc.value.kind == "rollback"
    assert "8" in exc.value.detail and "7" in exc.value.detail


def test_fork_alarm_two_roots_for_one_size() -> None:
    with pytest.raises(WitnessAlarm) as exc:
        check(state_of(leaves(8)), cp_of(leaves(8, "b")), [])
    assert exc.value.kind == "fork"
    assert root(leaves(8)).hex() in exc.value.detail


def test_inconsistent_alarm_for_a_rewritten_history() -> None:
    # The log rewrote leaf 2 and grew: its own honest proof does not link to our old root.
    old = leaves(6)
    new = leaves(10)
    new[2] = b"rewritten"
    with pytest.raises(WitnessAlarm) as exc:
        check(state_of(old), cp_of(new), consistency_proof(new, 6))
    assert exc.value.kind == "inconsistent"


def test_inconsistent_alarm_for_a_corrupt_or_missing_proof() -> None:
    data = leaves(10)
    proof = consistency_proof(data, 6)
    bad = [proof[0], bytes(32), *proof[2:]]
    for p in (bad, [], proof[:-1], [*proof, proof[0]]):
        with pytest.raises(WitnessAlarm) as exc:
            check(state_of(data[:6]), cp_of(data), p)
        assert exc.value.kind == "inconsistent"


def test_origin_change_is_an_alarm() -> None:
    with pytest.raises(WitnessAlarm) as exc:
        check(state_of(leaves(3)), cp_of(leaves(3), origin="other.example/log"), [])
    assert exc.value.kind == "inconsistent"


def test_bad_log_signature_is_an_alarm() -> None:
    log = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    impostor = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    note = sign_checkpoint(cp_of(leaves(3)), impostor)
    with pytest.raises(WitnessAlarm) as exc:
        open_log_checkpoint(note, log.verifier())
    assert exc.value.kind == "bad_signature"
    good = sign_checkpoint(cp_of(leaves(3)), log)
    assert open_log_checkpoint(good, log.verifier()) == cp_of(leaves(3))
    with pytest.raises(WitnessAlarm):
        open_log_checkpoint(good.replace("\n3\n", "\n4\n"), log.verifier())


def test_consistency_response_parsing() -> None:
    data = leaves(10)
    proof = consistency_proof(data, 6)
    body = json.dumps(
        {"old_size": 6, "new_size": 10, "proof": [base64.b64encode(h).decode() for h in proof]}
    ).encode()
    assert parse_consistency_response(body, 6, 10) == proof
    for bad in (b"not json", b"{}", body.replace(b'"new_size": 10', b'"new_size": 11')):
        with pytest.raises(WitnessAlarm):
            parse_consistency_response(bad, 6, 10)


def test_state_round_trip_and_corruption(tmp_path: Path) -> None:
    assert load_state(tmp_path) is None
    s = replace_cosigned(state_of(leaves(9)), 9)
    save_state(tmp_path, s)
    assert load_state(tmp_path) == s
    assert stat.S_IMODE(os.stat(tmp_path / "state.json").st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary left behind
    (tmp_path / "state.json").write_text('{"origin": "o", "size": -1}')
    with pytest.raises(MalformedNote):
        load_state(tmp_path)


def test_generate_witness_key(tmp_path: Path) -> None:
    path = tmp_path / "w.pem"
    key = generate_witness_key(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    loaded = load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    assert loaded.public_key().public_bytes_raw() == key.public_key().public_bytes_raw()
    with pytest.raises(FileExistsError):  # never overwrites a key
        generate_witness_key(path)


# --- a real witness process against a fake log in another process ------------------------------


@dataclass
class FakeLog:
    root: Path
    url: str
    signer: NoteSigner

    def publish(self, data: list[bytes], *, signer: NoteSigner | None = None) -> None:
        note = sign_checkpoint(cp_of(data), signer or self.signer)
        tmp = self.root / "checkpoint.tmp"
        tmp.write_text(note, "utf-8")
        tmp.replace(self.root / "checkpoint")

    def prove(self, data: list[bytes], old: int) -> None:
        proof = [base64.b64encode(h).decode() for h in consistency_proof(data, old)]
        body = {"old_size": old, "new_size": len(data), "proof": proof}
        (self.root / f"consistency_{old}_{len(data)}.json").write_text(json.dumps(body))

    def cosignatures(self) -> list[str]:
        path = self.root / "cosignatures.txt"
        return path.read_text("utf-8").splitlines(keepends=True) if path.exists() else []


@pytest.fixture
def fake_log(tmp_path: Path) -> Iterator[FakeLog]:
    root_dir = tmp_path / "log"
    root_dir.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("fake_log_server.py")), str(root_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        url = f"http://127.0.0.1:{int(line.split()[1])}/log"
        yield FakeLog(root_dir, url, NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def witness_argv(log: FakeLog, tmp_path: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ledger.witness",
        "--log-url",
        log.url,
        "--log-key",
        log.signer.verifier_key(),
        "--state-dir",
        str(tmp_path / "wstate"),
        "--key-file",
        str(tmp_path / "witness.pem"),
        "--name",
        "witness.example/w1",
        "--timeout",
        "5",
        *extra,
    ]


def run_witness(log: FakeLog, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        witness_argv(log, tmp_path, "--once"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env=env,
        check=False,
    )


def witness_verifier(tmp_path: Path) -> CosignatureVerifier:
    key = load_pem_private_key((tmp_path / "witness.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return CosignatureVerifier("witness.example/w1", key.public_key())


def test_normal_growth_is_cosigned_and_posted(fake_log: FakeLog, tmp_path: Path) -> None:
    data = leaves(20)
    fake_log.publish(data[:3])
    first = run_witness(fake_log, tmp_path)
    assert first.returncode == 0, first.stderr
    assert stat.S_IMODE(os.stat(tmp_path / "witness.pem").st_mode) == 0o600  # created 0600
    v = witness_verifier(tmp_path)
    [line] = fake_log.cosignatures()
    verify_cosignature(cp_of(data[:3]), line, v)

    fake_log.publish(data[:11])
    fake_log.prove(data[:11], 3)
    second = run_witness(fake_log, tmp_path)
    assert second.returncode == 0, second.stderr
    lines = fake_log.cosignatures()
    assert len(lines) == 2
    verify_cosignature(cp_of(data[:11]), lines[1], v)

    # nothing new: no third cosignature
    assert run_witness(fake_log, tmp_path).returncode == 0
    assert len(fake_log.cosignatures()) == 2
    state = load_state(tmp_path / "wstate")
    assert state is not None and (state.size, state.cosigned_size) == (11, 11)


def test_rollback_exits_3_with_alarm_and_stays_alarmed(fake_log: FakeLog, tmp_path: Path) -> None:
    data = leaves(9)
    fake_log.publish(data)
    assert run_witness(fake_log, tmp_path).returncode == 0
    fake_log.publish(data[:5])  # an older, honestly signed checkpoint
    res = run_witness(fake_log, tmp_path)
    assert res.returncode == 3
    assert "CRITICAL glucohub.witness WITNESS ALARM rollback" in res.stderr
    alarm = json.loads((tmp_path / "wstate" / "alarm.json").read_text())
    assert alarm["kind"] == "rollback"
    # even with the log back to normal, the witness refuses until an operator clears the alarm
    fake_log.publish(data)
    again = run_witness(fake_log, tmp_path)
    assert again.returncode == 3
    assert "WITNESS ALARM still raised" in again.stderr
    assert len(fake_log.cosignatures()) == 1


def test_fork_across_a_restart_is_caught(fake_log: FakeLog, tmp_path: Path) -> None:
    fake_log.publish(leaves(6))
    assert run_witness(fake_log, tmp_path).returncode == 0  # process 1 exits; state on disk
    fake_log.publish(leaves(6, "b"))  # same size, another history
    res = run_witness(fake_log, tmp_path)  # process 2
    assert res.returncode == 3
    assert "WITNESS ALARM fork" in res.stderr
    assert len(fake_log.cosignatures()) == 1


def test_inconsistent_growth_exits_3(fake_log: FakeLog, tmp_path: Path) -> None:
    fake_log.publish(leaves(6))
    assert run_witness(fake_log, tmp_path).returncode == 0
    rewritten = leaves(12, "b")
    fake_log.publish(rewritten)
    fake_log.prove(rewritten, 6)
    res = run_witness(fake_log, tmp_path)
    assert res.returncode == 3
    assert "WITNESS ALARM inconsistent" in res.stderr


def test_bad_log_signature_exits_3(fake_log: FakeLog, tmp_path: Path) -> None:
    fake_log.publish(leaves(4), signer=NoteSigner(ORIGIN, Ed25519PrivateKey.generate()))
    res = run_witness(fake_log, tmp_path)
    assert res.returncode == 3
    assert "WITNESS ALARM bad_signature" in res.stderr
    assert fake_log.cosignatures() == []


def test_unreachable_log_is_not_an_alarm(fake_log: FakeLog, tmp_path: Path) -> None:
    res = run_witness(fake_log, tmp_path)  # no checkpoint file yet: 404
    assert res.returncode == 1
    assert "ALARM" not in res.stderr
    assert not (tmp_path / "wstate" / "alarm.json").exists()


def test_bad_log_key_is_a_usage_error(fake_log: FakeLog, tmp_path: Path) -> None:
    argv = witness_argv(fake_log, tmp_path, "--once")
    argv[argv.index("--log-key") + 1] = "not-a-key"
    res = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=REPO, check=False)
    assert res.returncode == 2


def test_long_running_witness_cosigns_growth_then_stops_on_fork(
    fake_log: FakeLog, tmp_path: Path
) -> None:
    data = leaves(30)
    fake_log.publish(data[:4])
    proc = subprocess.Popen(
        witness_argv(fake_log, tmp_path, "--interval", "0.05"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        wait_for(lambda: len(fake_log.cosignatures()) == 1)
        fake_log.prove(data[:17], 4)
        fake_log.publish(data[:17])
        wait_for(lambda: len(fake_log.cosignatures()) == 2)
        verify_cosignature(cp_of(data[:17]), fake_log.cosignatures()[1], witness_verifier(tmp_path))
        fake_log.publish(leaves(17, "evil"))
        assert proc.wait(timeout=60) == 3  # the loop ends itself on the alarm
        assert proc.stderr is not None
        assert "WITNESS ALARM fork" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def wait_for(cond: object, deadline_s: float = 60.0) -> None:
    # A generous deadline for a real process, not a speed assertion.
    assert callable(cond)
    end = time.monotonic() + deadline_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.02)
