"""Issue 3's command line: bundles and proofs a third party verifies without the database,
and a witness process cosigning the live hub's log."""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.request
from pathlib import Path

import pytest

from gateway.settings import load_settings
from glucohub.cli import main
from glucohub.runtime import Running, run_hub
from tests.gateway.test_cli import hub_dir as hub_dir  # the fixture, re-exported


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out + err


def public_keys(capsys: pytest.CaptureFixture[str], data_dir: Path) -> tuple[str, str]:
    _, out = run(capsys, "keys", "show", "--data-dir", str(data_dir))
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    return lines["log-key"], lines["batch-key"]


def test_bundle_verifies_without_the_database(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_key, batch_key = public_keys(capsys, hub_dir)
    bundle = tmp_path / "ledger.jsonl"
    code, out = run(capsys, "ledger", "export", "--data-dir", str(hub_dir), "--out", str(bundle))
    assert code == 0, out
    (hub_dir / "glucohub.sqlite3").rename(tmp_path / "moved-away.sqlite3")
    code, out = run(
        capsys,
        "ledger",
        "verify",
        "--bundle",
        str(bundle),
        "--log-key",
        log_key,
        "--batch-key",
        batch_key,
    )
    assert code == 0, out
    assert "OK: 3 batches, 12 readings" in out


def tamper(bundle: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    lines = bundle.read_text().splitlines(keepends=True)
    edited = bundle.with_name("edited.jsonl")
    edited.write_text("".join(edit(lines)))
    return edited


@pytest.mark.parametrize(
    ("name", "edit", "expect"),
    [
        ("delete a batch", lambda ls: ls[:2] + ls[3:], "batch 1"),
        ("duplicate a batch", lambda ls: [*ls[:2], ls[1], *ls[2:]], "batch 1"),
        ("reorder batches", lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], "batch 0"),
    ],
)
def test_tampered_bundles_fail_naming_the_batch(
    hub_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    edit,
    expect: str,  # type: ignore[no-untyped-def]
) -> None:
    log_key, batch_key = public_keys(capsys, hub_dir)
    bundle = tmp_path / "ledger.jsonl"
    run(capsys, "ledger", "export", "--data-dir", str(hub_dir), "--out", str(bundle))
    code, out = run(
        capsys,
        "ledger",
        "verify",
        "--bundle",
        str(tamper(bundle, edit)),
        "--log-key",
        log_key,
        "--batch-key",
        batch_key,
    )
    assert code == 1, name
    assert "FAIL" in out and expect in out, out


def test_edited_reading_in_a_bundle_fails(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_key, batch_key = public_keys(capsys, hub_dir)
    bundle = tmp_path / "ledger.jsonl"
    run(capsys, "ledger", "export", "--data-dir", str(hub_dir), "--out", str(bundle))

    def edit(lines: list[str]) -> list[str]:
        record = json.loads(lines[2])
        assert record["records"][0]["record"]["kind"] == "cgm_glucose"
        record["records"][0]["record"]["value"] = 42
        return [lines[0], lines[1], json.dumps(record) + "\n", *lines[3:]]

    code, out = run(
        capsys,
        "ledger",
        "verify",
        "--bundle",
        str(tamper(bundle, edit)),
        "--log-key",
        log_key,
        "--batch-key",
        batch_key,
    )
    assert code == 1 and "batch 1" in out


def test_inclusion_proof_round_trip(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log_key, batch_key = public_keys(capsys, hub_dir)
    proof = tmp_path / "proof.json"
    code, out = run(
        capsys,
        "ledger",
        "prove",
        "--data-dir",
        str(hub_dir),
        "--batch",
        "2",
        "--out",
        str(proof),
        "--patient",
        "p1",
    )
    assert code == 0, out
    # Batch 2 holds one reading of each patient; the proof carries p1's only.
    assert '"p2"' not in proof.read_text()
    code, out = run(
        capsys, "ledger", "check-proof", str(proof), "--log-key", log_key, "--batch-key", batch_key
    )
    assert code == 0, out
    assert "batch 2 is in the checkpointed log of 3, 1 disclosed records verify" in out
    code, out = run(capsys, "ledger", "check-proof", str(proof), "--log-key", log_key)
    assert code == 0, out  # the log vouches for the JWS: its records check without the JWK
    original = proof.read_text()
    doc = json.loads(original)
    doc["records"][0]["record"]["value"] = 250
    proof.write_text(json.dumps(doc))
    code, out = run(capsys, "ledger", "check-proof", str(proof), "--log-key", log_key)
    assert code == 1 and "FAIL: batch 2: disclosed record 0" in out
    doc = json.loads(original)
    doc["leaf_index"] = 1
    proof.write_text(json.dumps(doc))
    code, out = run(capsys, "ledger", "check-proof", str(proof), "--log-key", log_key)
    assert code == 1 and "FAIL: batch 1: batch is not in the checkpointed log" in out


def test_proof_for_a_missing_batch_is_refused(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(
        capsys,
        "ledger",
        "prove",
        "--data-dir",
        str(hub_dir),
        "--batch",
        "9",
        "--out",
        str(tmp_path / "p.json"),
    )
    assert code == 2 and "not covered" in out


async def test_a_witness_process_cosigns_the_live_hub(hub_dir: Path, tmp_path: Path) -> None:
    witness_dir = tmp_path / "witness"
    key_file = tmp_path / "witness.pem"
    printer = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "glucohub",
        "witness",
        "--log-url",
        "x",
        "--log-key",
        "x",
        "--state-dir",
        str(witness_dir),
        "--key-file",
        str(key_file),
        "--print-vkey",
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await printer.communicate()
    assert printer.returncode == 0
    vkey = out.decode().strip()
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(hub_dir),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__WITNESS_KEYS": vkey,
        },
    )
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    hub = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
    running = await asyncio.wait_for(ready, 20)
    try:
        log_url = f"{running.url}/log"
        log_key = running.keys.log_verifier_key
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "glucohub",
            "witness",
            "--log-url",
            log_url,
            "--log-key",
            log_key,
            "--state-dir",
            str(witness_dir),
            "--key-file",
            str(key_file),
            "--once",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, output.decode()
        note = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"{log_url}/checkpoint", timeout=10).read().decode()
        )
        signers = [line.split(" ")[1] for line in note.splitlines() if line.startswith("— ")]
        assert signers == [running.keys.log_name, "witness.local/glucohub"]
    finally:
        stop.set()
        await asyncio.wait_for(hub, 30)


async def test_the_dashboard_proof_file_checks_offline(hub_dir: Path) -> None:
    from gateway.pipeline import Writer
    from gateway.sealing import load_keys
    from gateway.services import Reader, StoreLedgerView
    from ledger.proof import check_inclusion_bundle

    keys = load_keys(hub_dir, "glucohub-local", None)
    reader = Reader(hub_dir)
    writer = await Writer.open(hub_dir)
    try:
        view = StoreLedgerView(reader, keys, lambda fn: writer.run(fn, writer.store))
        proof = await view.inclusion_proof_file(1, {"p1"})
        assert proof is not None and proof.patients == {"p1"}
        report = check_inclusion_bundle(proof.text, keys.log_verifier_key, batch_jwk=keys.batch_jwk)
        assert report.batch_seq == 1 and report.tree_size == 3
        # Batch 1 holds p2, p1, p2, p1, p2: p1's two readings are disclosed, at 1 and 3.
        assert [(r.index, r.record["patient_id"]) for r in report.records] == [
            (1, "p1"),
            (3, "p1"),
        ]
        assert await view.inclusion_proof_file(1, {"nobody"}) is None
    finally:
        await asyncio.to_thread(reader.close)
        await writer.close()
