"""A consent change and its ledger event are one transaction: a process killed between the
two leaves both or neither; a grant whose event went missing is repaired when it is given
again; the dashboard's consent changes are durable before the reply and sealed within
batch_max_seconds."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from gateway.model import Patient
from gateway.settings import load_settings
from gateway.store import DB_FILENAME, Store
from glucohub import accounts as hub_accounts
from glucohub.cli import main
from glucohub.runtime import Running, run_hub
from tests.dashboards.test_real_hub import CSRF_RE, META_RE

PASSWORD = "a long enough password"
MAX_SECONDS = 0.5
ROOT = Path(__file__).resolve().parent.parent.parent
GRANT = ("users", "grant", "dr", "--patient", "p1")

# Runs `glucohub` with every SQLite connection traced: the process stops just before it
# writes a ledger event (after the consent row) and says so, for the test to kill it there.
PAUSE_BEFORE_LEDGER_EVENT = r"""
import sqlite3, sys, time

connect = sqlite3.connect

def traced(*args, **kwargs):
    db = connect(*args, **kwargs)

    def pause(sql):
        if sql.lstrip().upper().startswith("INSERT INTO LEDGER_EVENTS"):
            print("between", flush=True)
            time.sleep(120)

    db.set_trace_callback(pause)
    return db

sqlite3.connect = traced
from glucohub.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "hub"
    store = Store(data_dir)
    store.add_patient(Patient(patient_id="p1", display_name="Ann"))
    store.close()
    db = data_dir / DB_FILENAME
    hub_accounts.users_add(db, "dr", "clinician", PASSWORD)
    hub_accounts.users_add(db, "ann", "patient", PASSWORD, patient_id="p1")
    return data_dir


def consent_state(data_dir: Path) -> tuple[int, list[str]]:
    """The grant rows of (p1, dr) and the kinds of their consent ledger events."""
    db = sqlite3.connect(data_dir / DB_FILENAME)
    try:
        grants = db.execute(
            "SELECT COUNT(*) FROM dash_grants WHERE patient_id = 'p1' AND clinician = 'dr'"
        ).fetchone()[0]
        bodies = [json.loads(r[0]) for r in db.execute("SELECT body FROM ledger_events")]
    finally:
        db.close()
    events = [
        b["event"]
        for b in bodies
        if b.get("type") == "consent" and (b["patient_id"], b["clinician"]) == ("p1", "dr")
    ]
    return int(grants), events


def glucohub(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def test_a_grant_killed_before_its_ledger_event_leaves_neither(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", PAUSE_BEFORE_LEDGER_EVENT, *GRANT, "--data-dir", str(hub_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == "between\n"  # the grant row is written by now
            child.send_signal(signal.SIGKILL)
        finally:
            child.kill()
            child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert consent_state(hub_dir) == (0, [])  # neither: the row was not committed alone
    out = glucohub(capsys, *GRANT, "--data-dir", str(hub_dir))
    assert out == "dr may see p1\n"
    assert consent_state(hub_dir) == (1, ["consent_granted"])


def test_a_grant_missing_its_ledger_event_gets_it_when_given_again(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # What a crash between the two transactions of earlier versions left behind.
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute("INSERT INTO dash_grants VALUES ('p1', 'dr', 'cli', '2026-12-01T10:00:00.000Z')")
    db.commit()
    db.close()
    argv = ("users", "grant", "dr", "--patient", "p1", "--data-dir", str(hub_dir))
    out = glucohub(capsys, *argv)
    assert out == "dr may see p1 (unchanged, but the ledger lacked its event: added)\n"
    assert consent_state(hub_dir) == (1, ["consent_granted"])
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    (body,) = db.execute("SELECT body FROM ledger_events").fetchone()
    db.close()
    event = json.loads(body)
    # The grant as it was given, and when the ledger learnt of it.
    assert (event["by"], event["time"]) == ("cli", "2026-12-01T10:00:00.000Z")
    assert event["recorded_at"] > event["time"]
    assert glucohub(capsys, *argv) == "dr may see p1 (unchanged)\n"
    assert consent_state(hub_dir) == (1, ["consent_granted"])


def test_a_revocation_missing_its_ledger_event_gets_it_when_given_again(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    glucohub(capsys, "users", "grant", "dr", "--patient", "p1", "--data-dir", str(hub_dir))
    db = sqlite3.connect(hub_dir / DB_FILENAME)
    db.execute("DELETE FROM dash_grants")  # an earlier version's revoke, killed halfway
    db.commit()
    db.close()
    argv = ("users", "revoke", "dr", "--patient", "p1", "--data-dir", str(hub_dir))
    out = glucohub(capsys, *argv)
    assert out == "dr may no longer see p1 (unchanged, but the ledger lacked its event: added)\n"
    assert consent_state(hub_dir) == (0, ["consent_granted", "consent_revoked"])
    assert glucohub(capsys, *argv) == "dr may no longer see p1 (unchanged)\n"
    assert consent_state(hub_dir) == (0, ["consent_granted", "consent_revoked"])


@pytest.fixture
async def running(hub_dir: Path) -> AsyncIterator[Running]:
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(hub_dir),
            "GLUCOHUB_DASHBOARD__PORT": "0",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": str(MAX_SECONDS),
        },
    )
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()
    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
    yield await asyncio.wait_for(ready, 20)
    stop.set()
    await asyncio.wait_for(task, 30)


async def test_a_dashboard_consent_change_is_durable_with_its_event_and_sealed_soon(
    running: Running, hub_dir: Path
) -> None:
    base = running.url
    assert base is not None
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as ann:
        async with ann.get(f"{base}/login") as page:
            token = CSRF_RE.search(await page.text())
        assert token is not None
        form = {"username": "ann", "password": PASSWORD, "csrf_token": token.group(1)}
        async with ann.post(f"{base}/login", data=form) as response:
            csrf = META_RE.search(await response.text())
        assert csrf is not None
        form = {"clinician": "dr", "csrf_token": csrf.group(1)}
        async with ann.post(f"{base}/consent/grant", data=form) as response:
            assert response.status == 200 and "dr can now see" in await response.text()
        # Durable with its ledger event before the reply (a crash now loses neither).
        assert consent_state(hub_dir) == (1, ["consent_granted"])
        for _ in range(int((MAX_SECONDS + 1.5) / 0.05)):
            batches = await running.read_model.latest_batches(5)
            if batches:
                break
            await asyncio.sleep(0.05)
        assert batches and batches[0].reading_count == 0  # the consent event alone
        assert await running.reader.run(lambda s: s.count_unsealed_events()) == 0
        async with ann.post(f"{base}/consent/revoke", data=form) as response:
            assert response.status == 200 and "dr can no longer see" in await response.text()
        assert consent_state(hub_dir) == (0, ["consent_granted", "consent_revoked"])
