"""The `glucohub` command line against real data directories."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.clock import parse_rfc3339
from gateway.model import Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.store import DB_FILENAME
from gateway.units import Unit
from glucohub.cli import main
from glucohub.runtime import run_hub


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def hub_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data dir with two patients, their devices and 12 sealed CGM readings."""
    d = tmp_path / "hub"
    assert run(capsys, "patients", "add", "p1", "--name", "One", "--data-dir", str(d))[0] == 0
    assert run(capsys, "patients", "add", "p2", "--data-dir", str(d))[0] == 0
    for device, patient in (("cgm-1", "p1"), ("cgm-2", "p2")):
        code, _, err = run(
            capsys,
            "devices",
            "add",
            device,
            "--patient",
            patient,
            "--kind",
            "cgm",
            "--transport",
            "mqtt",
            "--data-dir",
            str(d),
        )
        assert code == 0, err
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [
        Reading(
            patient_id=p,
            device_id=dev,
            kind=ReadingKind.CGM_GLUCOSE,
            value=100.0 + i,
            unit=Unit.MG_DL,
            time=now - timedelta(minutes=5 * (6 - i)),
            source=Source.MQTT,
            seq=i,
        )
        for i in range(6)
        for p, dev in (("p1", "cgm-1"), ("p2", "cgm-2"))
    ]
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(d),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "5",
        },
    )

    async def ingest() -> None:
        stop = asyncio.Event()

        async def source(sink, clock) -> None:  # type: ignore[no-untyped-def]
            await sink.submit(origin=Origin(source=Source.MQTT), readings=readings)
            stop.set()

        await run_hub(settings, sources=[source], stop=stop)

    asyncio.run(ingest())
    return d


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in (
        "run",
        "demo",
        "export",
        "ledger",
        "patients",
        "devices",
        "keys",
        "deadletters",
    ):
        assert command in out


def test_export_jsonl_lists_every_reading(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "export", "--data-dir", str(hub_dir))
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 12
    assert set(rows[0]) == {
        "patient_id",
        "device_id",
        "kind",
        "time",
        "value",
        "unit",
        "seq",
        "source",
        "received_at",
    }
    # the hub's clock as it received them: after the sensor dated them, not after now
    received = [datetime.fromisoformat(r["received_at"]) for r in rows]
    assert max(datetime.fromisoformat(r["time"]) for r in rows) < min(received)
    assert max(received) <= datetime.now(UTC)
    assert {(r["device_id"], r["seq"]) for r in rows} == {
        (d, i) for i in range(6) for d in ("cgm-1", "cgm-2")
    }


def test_export_csv_filters_by_patient_and_time(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(
        capsys, "export", "--data-dir", str(hub_dir), "--format", "csv", "--patient", "p2"
    )
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 6 and {r["patient_id"] for r in rows} == {"p2"}
    since = rows[3]["time"]
    _, out, _ = run(
        capsys, "export", "--data-dir", str(hub_dir), "--patient", "p2", "--since", since
    )
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [3, 4, 5]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        # the same JWS as TEXT instead of BLOB still verifies: the bytes are the same
        ("UPDATE batches SET jws = CAST(jws AS TEXT) WHERE seq = 1", None),
        ("UPDATE batches SET jws = 'not a jws' WHERE seq = 1", "FAIL: batch 1: signature"),
        ("UPDATE batches SET jws = 42 WHERE seq = 1", "FAIL: batch 1: stored batch unreadable"),
        ("UPDATE batches SET record_seed = 'x' WHERE seq = 2", "FAIL: batch 2:"),
        ("UPDATE readings SET seq = 9007199254740993 WHERE id = 1", "FAIL: batch 0:"),
    ],
)
def test_ledger_verify_reports_damaged_columns_as_fail_not_a_traceback(
    hub_dir: Path, capsys: pytest.CaptureFixture[str], edit: str, expected: str | None
) -> None:
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute(edit)
    db.commit()
    db.close()
    code, out, err = run(capsys, "ledger", "verify", "--data-dir", str(hub_dir))
    assert "Traceback" not in out + err
    if expected is None:
        assert code == 0 and out.startswith("OK: 3 batches"), out
    else:
        assert code == 1 and out.startswith(expected), out


def test_ledger_verify_passes_then_catches_an_edited_reading(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "ledger", "verify", "--data-dir", str(hub_dir))
    assert code == 0, out
    assert "OK: 3 batches, 12 readings" in out
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute("UPDATE readings SET value = 250 WHERE device_id = 'cgm-2' AND seq = 4")
    db.commit()
    db.close()
    code, out, _ = run(capsys, "ledger", "verify", "--data-dir", str(hub_dir))
    assert code == 1
    # The batch signs a root over salted records: the batch is named, not the reading.
    assert "FAIL: batch 1: stored readings or events differ from the signed ones" in out


def test_ledger_verify_catches_a_deleted_batch(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute("DELETE FROM batches WHERE seq = 1")
    db.commit()
    db.close()
    code, out, _ = run(capsys, "ledger", "verify", "--data-dir", str(hub_dir))
    assert code == 1 and "batch 1 is missing" in out


def test_devices_remove_and_list(hub_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "devices", "remove", "cgm-1", "--data-dir", str(hub_dir))[0] == 0
    _, out, _ = run(capsys, "devices", "list", "--data-dir", str(hub_dir))
    lines = {line.split("\t")[0]: line for line in out.splitlines()}
    assert "removed" in lines["cgm-1"] and "active" in lines["cgm-2"]


def test_registry_errors_are_one_line_with_exit_2(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(
        capsys,
        "devices",
        "add",
        "cgm-9",
        "--patient",
        "nobody",
        "--kind",
        "cgm",
        "--transport",
        "ble",
        "--data-dir",
        str(hub_dir),
    )
    assert code == 2
    assert err.count("\n") == 1 and "unknown patient 'nobody'" in err


def test_bad_config_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[dashboard]\nport = 'x'\n")
    code, _, err = run(capsys, "patients", "list", "--config", str(config))
    assert code == 2 and "dashboard.port" in err


def test_keys_are_private_and_show_prints_public_halves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "keys-hub"
    code, out, _ = run(capsys, "keys", "init", "--data-dir", str(d))
    assert code == 0 and out.count("created") == 2
    for pem in (d / "keys").glob("*.pem"):
        assert stat.S_IMODE(os.stat(pem).st_mode) == 0o600
    code, out, _ = run(capsys, "keys", "show", "--data-dir", str(d))
    log_line, batch_line = out.splitlines()
    assert log_line.startswith("log-key: glucohub.local/glucohub-local+")
    jwk = json.loads(batch_line.removeprefix("batch-key: "))
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert "PRIVATE" not in out


def test_deadletters_lists_reasons(hub_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "deadletters", "--data-dir", str(hub_dir), "--format", "jsonl")
    assert code == 0 and out == ""  # nothing was refused in the fixture


def test_gatt_decode_prints_the_heart_rate(capsys: pytest.CaptureFixture[str]) -> None:
    # flags 0x16: uint8 rate, contact detected, RR present; 0x48 = 72 bpm; RR 0x0334 = 820/1024 s
    code, out, _ = run(capsys, "gatt", "decode", "2A37", "16 48 34 03 00 04")
    assert code == 0
    decoded = json.loads(out)
    assert decoded["heart_rate_bpm"] == 72
    assert decoded["rr_intervals_s"] == [820 / 1024, 1.0]


def test_ble_scan_without_bluetooth_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/none")
    code, _, err = run(capsys, "ble", "scan", "--timeout", "0.5")
    assert code == 2
    assert err.count("\n") == 1 and "Bluetooth is not available" in err


def test_users_add_reads_the_password_from_stdin(
    hub_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("correct horse battery\n"))
    code, out, err = run(
        capsys,
        "users",
        "add",
        "nurse1",
        "--role",
        "clinician",
        "--password-stdin",
        "--data-dir",
        str(hub_dir),
    )
    assert code == 0, err
    assert "correct horse" not in out + err
    monkeypatch.setattr("sys.stdin", io.StringIO("another one here\n"))
    code, _, err = run(
        capsys,
        "users",
        "add",
        "nurse1",
        "--role",
        "clinician",
        "--password-stdin",
        "--data-dir",
        str(hub_dir),
    )
    assert code == 2 and err.count("\n") == 1
    # The name is taken: said before any password is asked for (here: no terminal to ask).
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(
        capsys, "users", "add", "nurse1", "--role", "clinician", "--data-dir", str(hub_dir)
    )
    assert (code, out) == (2, "")
    assert err == "glucohub: user 'nurse1' already exists\n"


def test_report_html_has_the_agp_chart(
    hub_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_file = tmp_path / "report.html"
    code, _, err = run(
        capsys,
        "report",
        "--data-dir",
        str(hub_dir),
        "--patient",
        "p1",
        "--format",
        "html",
        "--out",
        str(out_file),
    )
    assert code == 0, err
    html = out_file.read_text()
    assert "<svg" in html
    assert "time in range" in html.lower()


def test_report_for_an_unknown_patient(hub_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "report", "--data-dir", str(hub_dir), "--patient", "nobody")
    assert code == 2 and "unknown patient" in err


def test_consent_from_the_cli_is_sealed_into_the_ledger(
    hub_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password\n"))
    run(
        capsys,
        "users",
        "add",
        "dr-who",
        "--role",
        "clinician",
        "--password-stdin",
        "--data-dir",
        str(hub_dir),
    )
    code, out, _ = run(
        capsys, "users", "grant", "dr-who", "--patient", "p1", "--data-dir", str(hub_dir)
    )
    assert code == 0 and "dr-who may see p1" in out
    code, out, _ = run(
        capsys, "users", "revoke", "dr-who", "--patient", "p1", "--data-dir", str(hub_dir)
    )
    assert code == 0
    # The next run of the hub seals the two consent events; verify checks them.
    settings = load_settings(
        None, {"GLUCOHUB_STORAGE__DATA_DIR": str(hub_dir), "GLUCOHUB_DASHBOARD__ENABLED": "false"}
    )
    stop = asyncio.Event()
    stop.set()
    asyncio.run(run_hub(settings, stop=stop))
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    bodies = [
        json.loads(r[0])
        for r in db.execute(
            "SELECT body FROM ledger_events WHERE batch_seq IS NOT NULL ORDER BY id"
        )
    ]
    db.close()
    assert [(b["type"], b["event"], b["clinician"]) for b in bodies] == [
        ("consent", "consent_granted", "dr-who"),
        ("consent", "consent_revoked", "dr-who"),
    ]
    code, out, _ = run(capsys, "ledger", "verify", "--data-dir", str(hub_dir))
    assert code == 0, out


@pytest.fixture
def registry_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A data dir whose registry holds one patient, p1 (Ann Example)."""
    d = tmp_path / "hub"
    assert (
        run(capsys, "patients", "add", "p1", "--name", "Ann Example", "--data-dir", str(d))[0] == 0
    )
    return d


def users(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    *argv: str,
    password: str = "a long enough password",
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return run(capsys, "users", *argv, "--data-dir", str(data_dir))


@pytest.mark.parametrize(
    "argv",
    [
        ("add", "nope", "--role", "patient", "--patient", "NOPE", "--password-stdin"),
        ("grant", "dr-who", "--patient", "NOPE"),
    ],
)
def test_users_refuse_an_unknown_patient(
    registry_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
) -> None:
    code, _, err = users(
        capsys,
        monkeypatch,
        registry_dir,
        "add",
        "dr-who",
        "--role",
        "clinician",
        "--password-stdin",
    )
    assert code == 0, err
    code, out, err = users(capsys, monkeypatch, registry_dir, *argv)
    assert code == 2 and out == ""
    assert err == "glucohub: unknown patient 'NOPE'; add the patient first\n"


@pytest.mark.parametrize(
    "password", ["password", "12345678", "ann-smith", "Ann Example", "p1p1p1p1"]
)
def test_users_refuse_weak_passwords_in_one_line(
    registry_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    password: str,
) -> None:
    add = ("add", "ann-smith", "--role", "patient", "--patient", "p1", "--password-stdin")
    code, _, err = users(capsys, monkeypatch, registry_dir, *add, password=password)
    assert code == 2 and err.count("\n") == 1 and err.startswith("glucohub: ")
    assert "Traceback" not in err and repr(password) not in err
    assert users(capsys, monkeypatch, registry_dir, *add)[0] == 0
    passwd = ("passwd", "ann-smith", "--password-stdin")
    code, _, err = users(capsys, monkeypatch, registry_dir, *passwd, password=password)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err


def test_tokens_are_listed_and_revoked_one_by_one(
    registry_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = users(
        capsys,
        monkeypatch,
        registry_dir,
        "add",
        "dr-who",
        "--role",
        "clinician",
        "--password-stdin",
    )
    assert code == 0, err
    code, first, _ = users(capsys, monkeypatch, registry_dir, "token", "dr-who", "--label", "ehr")
    assert code == 0
    code, second, _ = users(
        capsys,
        monkeypatch,
        registry_dir,
        "token",
        "dr-who",
        "--label",
        "lab",
        "--expires-days",
        "7",
    )
    assert code == 0
    code, listing, _ = users(capsys, monkeypatch, registry_dir, "tokens", "dr-who")
    assert code == 0
    assert first.strip() not in listing and second.strip() not in listing
    lines = listing.strip().splitlines()
    assert lines[0].split() == ["id", "label", "created", "expires", "last-used", "state"]
    rows = [line.split() for line in lines[1:]]
    assert [(r[1], r[4], r[5]) for r in rows] == [
        ("ehr", "never", "active"),
        ("lab", "never", "active"),
    ]
    created, expires = (parse_rfc3339(rows[1][i]) for i in (2, 3))
    assert expires - created == timedelta(days=7)
    assert parse_rfc3339(rows[0][3]) - parse_rfc3339(rows[0][2]) == timedelta(days=90)
    code, out, _ = users(capsys, monkeypatch, registry_dir, "revoke-token", rows[0][0])
    assert code == 0 and rows[0][0] in out
    code, listing, _ = users(capsys, monkeypatch, registry_dir, "tokens", "dr-who")
    assert [line.split()[5] for line in listing.strip().splitlines()[1:]] == ["revoked", "active"]
    code, _, err = users(capsys, monkeypatch, registry_dir, "revoke-token", "12345")
    assert code == 2 and err == "glucohub: no token 12345\n"
    code, _, err = users(
        capsys, monkeypatch, registry_dir, "token", "dr-who", "--expires-days", "0"
    )
    assert code == 2 and err.count("\n") == 1
