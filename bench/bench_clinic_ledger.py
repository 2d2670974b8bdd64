"""Each hub's log at the clinic (issue 15): the ledger page and an inclusion proof served by a
clinic dashboard, against baselines measured in the same run on the same server.

- **The ledger page** (`GET /ledger`, the real app over `ArchivedLogs`): HUBS hubs of one
  patient each, BATCHES archived batches per hub of 10 heart-rate readings (11 every sixth,
  with a CGM reading), what a home hub seals every 10 s; a clinician granted every patient,
  and the admin. Baseline: a bare SELECT of the page's 50 batch rows and their patients'
  parts (`clinic_patient_batches`) by primary key (psycopg, no HTTP).
- **An inclusion proof** (`GET /log/hubs/big/batch/1/proof`) against a checkpoint of LONG
  batches (a hub's log of weeks at one batch per 10 s): the first proof of a process reads
  every leaf once (a proof's siblings cover the whole log), later ones only the edges.
  Baseline: a bare SELECT of the hub's LONG leaf hashes in log order and their RFC 6962 root
  (the least work that gives the root from the archive's leaves).

The page's hubs and batches are loaded with COPY (their JWS and leaves are placeholders: the
page lists them, nothing proves them); the big hub's first batches are real (a simulated hub
seals them, the archive verifies them) and the rest of its log is placeholder leaves, under a
checkpoint the hub's real log key signs over all of them. Each served proof is verified
(`check_inclusion_bundle` with that key). The server keeps fsync on.

    .venv/bin/python -m bench bench_clinic_ledger
    .venv/bin/python bench/bench_clinic_ledger.py [HUBS [BATCHES [LONG]]]
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards import accounts as accounts_module
from dashboards.accounts import AccountRules, Role
from dashboards.app import create_app, serve
from gateway.clinic.hub_logs import ArchivedLogs
from gateway.clock import to_rfc3339, utc_now
from gateway.settings import DashboardSettings
from gateway.storage.postgres_clinic import ClinicArchive
from glucohub.accounts import open_account_storage, open_accounts
from glucohub.simulate import SimulatedHub
from ledger import rfc6962
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.note import NoteSigner
from ledger.proof import check_inclusion_bundle
from tests.clinic.hubs import cgm, seal
from tests.dashboards.fakes import (
    FakeAlertControl,
    FakeClock,
    FakeLedger,
    FakeLiveFeed,
    FakeReadModel,
    FakeStatus,
)
from tests.support.postgres import Postgres

DEFAULT_HUBS = 300
DEFAULT_BATCHES = 2_000  # per hub: 5.5 hours at one batch per 10 s
DEFAULT_LONG = 1_000_000  # 116 days at one batch per 10 s
REAL = 4  # real batches at the start of the big hub's log
REQUESTS = 30
WARMUP = 3
PASSWORD = "quartz lantern meadow 7319 violet"
ROW_RE = re.compile(r'<tr data-hub="')


def p95(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=20)[-1]


def ms(samples: Sequence[float]) -> str:
    return f"p50 {statistics.median(samples) * 1000:.1f} ms, p95 {p95(samples) * 1000:.1f} ms"


# -- data ----------------------------------------------------------------------------------


def load_hubs(url: str, hubs: int, batches: int, start: datetime) -> float:
    """HUBS hubs, each with one patient and BATCHES batches of its readings, by COPY."""
    started = time.perf_counter()
    salt = bytes(16)
    parts: list[tuple[object, ...]] = []
    with psycopg.connect(url) as db, db.cursor() as cur:
        with cur.copy(
            "COPY clinic_hubs (hub_id, batch_jwk, log_key, enrolled_at) FROM STDIN"
        ) as copy:
            for h in range(hubs):
                copy.write_row((f"h{h:04d}", "{}", f"h{h:04d}.placeholder+0+AA", start))
        with cur.copy(
            "COPY clinic_checkpoints (hub_id, size, root_hash, note, compact_tree,"
            " accepted_at) FROM STDIN"
        ) as copy:
            for h in range(hubs):
                note = f"glucohub.local/h{h:04d}\n{batches}\nAAAA\n\n— placeholder AAAA\n"
                copy.write_row((f"h{h:04d}", batches, bytes(32), note, b"", start))
        with cur.copy(
            "COPY clinic_batches (hub_id, batch_seq, jws, leaf_hash, prev_batch_hash,"
            " record_count, linked, received_at) FROM STDIN"
        ) as copy:
            for h in range(hubs):
                for s in range(batches):
                    at = start + timedelta(seconds=10 * s, milliseconds=h)
                    leaf = hashlib.sha256(b"%d/%d" % (h, s)).digest()
                    copy.write_row((f"h{h:04d}", s, "x.y.z", leaf, "", 11, True, at))
        with cur.copy(
            "COPY clinic_records (hub_id, batch_seq, record_index, patient_id, canonical,"
            " salt) FROM STDIN"
        ) as copy:
            for h in range(hubs):
                hub = f"h{h:04d}"
                for s in range(batches):
                    at = start + timedelta(seconds=10 * s)
                    count = 11 if s % 6 == 0 else 10
                    part = (hub, f"{hub}-p0", s, count, at, at + timedelta(seconds=count - 1))
                    parts.append((*part, start + timedelta(seconds=10 * s, milliseconds=h)))
                    for i in range(count):
                        record = {
                            "device_id": f"{hub}-p0-hr",
                            "kind": "cgm_glucose" if i == 10 else "heart_rate",
                            "patient_id": f"{hub}-p0",
                            "time": to_rfc3339(at + timedelta(seconds=i)),
                            "value": 70 + i,
                        }
                        text = json.dumps(record, sort_keys=True, separators=(",", ":"))
                        copy.write_row((hub, s, i, f"{hub}-p0", text, salt))
        with cur.copy(
            "COPY clinic_patient_batches (hub_id, patient_id, batch_seq, readings,"
            " first_time, last_time, received_at) FROM STDIN"
        ) as copy:
            for row in parts:
                copy.write_row(row)
    with psycopg.connect(url, autocommit=True) as db:
        db.execute("VACUUM ANALYZE")  # as autovacuum leaves an insert-mostly table
    return time.perf_counter() - started


def load_long_log(url: str, hub: SimulatedHub, long: int, now: datetime) -> float:
    """The big hub: REAL real batches, placeholder leaves up to LONG, a real checkpoint."""
    started = time.perf_counter()
    items = []
    for step in range(REAL):
        items += seal(
            hub, [cgm(hub, 0, 100.0 + step, now - timedelta(minutes=REAL - step), step)], now
        )
    archive = ClinicArchive(url)
    try:
        archive.enrol(*hub.enrolment, now)
        for topic, payload in items:
            parts = topic.split("/")
            archive.handle(parts[3], parts[4], topic, payload, now)
        leaves = [bytes(r[0]) for r in archive.rows(
            "SELECT leaf_hash FROM clinic_batches WHERE hub_id = %s ORDER BY batch_seq",
            (hub.hub_id,),
        )]  # fmt: skip
    finally:
        archive.close()
    tree = rfc6962.CompactTree()
    tree.extend(leaves)
    archived = now - timedelta(days=2)  # older than the page's hubs' batches
    with psycopg.connect(url) as db:
        with (
            db.cursor() as cur,
            cur.copy(
                "COPY clinic_batches (hub_id, batch_seq, jws, leaf_hash, prev_batch_hash,"
                " record_count, linked, received_at) FROM STDIN"
            ) as copy,
        ):
            for s in range(REAL, long):
                leaf = hashlib.sha256(b"big/%d" % s).digest()
                tree.append(leaf)
                copy.write_row((hub.hub_id, s, "x.y.z", leaf, "", 1, True, archived))
        signer = NoteSigner(hub.keys.log_name, hub.keys.log_key)
        checkpoint = Checkpoint(origin=hub.keys.log_name, size=long, root_hash=tree.root())
        db.execute(
            "UPDATE clinic_checkpoints SET size = %s, root_hash = %s, note = %s,"
            " compact_tree = %s WHERE hub_id = %s",
            (long, tree.root(), sign_checkpoint(checkpoint, signer), tree.to_bytes(), hub.hub_id),
        )
        db.execute("ANALYZE")
    return time.perf_counter() - started


def grant_all(url: str, hubs: int, big: str) -> None:
    clock = FakeClock(datetime.now(UTC))
    with psycopg.connect(url) as db:
        patients = [f"h{h:04d}:h{h:04d}-p0" for h in range(hubs)] + [f"{big}:{big}-p0"]
        db.execute(
            "INSERT INTO patients (patient_id, display_name, timezone, simulated)"
            " SELECT p, p, 'UTC', true FROM unnest(%s::text[]) AS p ON CONFLICT DO NOTHING",
            (patients,),
        )
    tables = AccountRules(open_account_storage(url, clock=clock), clock)
    try:
        tables.add_user("dr-ada", Role.CLINICIAN, PASSWORD, None)
        tables.add_user("admin", Role.ADMIN, PASSWORD, None)
    finally:
        tables.close()
    with psycopg.connect(url) as db:
        db.execute(
            "INSERT INTO dash_grants (patient_id, clinician, granted_by, granted_at)"
            " SELECT p, 'dr-ada', 'bench', now() FROM unnest(%s::text[]) AS p",
            (patients,),
        )


# -- measuring -----------------------------------------------------------------------------


async def login(http: aiohttp.ClientSession, base: str, username: str) -> None:
    page = await (await http.get(f"{base}/login")).text()
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token is not None
    form = {"username": username, "password": PASSWORD, "csrf_token": token.group(1)}
    await http.post(f"{base}/login", data=form)


async def timed(http: aiohttp.ClientSession, url: str, count: int) -> tuple[list[float], str]:
    found: list[float] = []
    body = ""
    for _ in range(count):
        started = time.perf_counter()
        response = await http.get(url)
        body = await response.text()
        found.append(time.perf_counter() - started)
        if response.status != 200:
            raise RuntimeError(f"{url}: status {response.status}")
    return found, body


async def measure(url: str, big: SimulatedHub) -> dict[str, list[float]]:
    accounts_module.SCRYPT_N = 2**10  # logins are not what is measured
    accounts = open_accounts(url)
    logs = ArchivedLogs(url)
    fake, live, clock = FakeReadModel(), FakeLiveFeed(), FakeClock(datetime.now(UTC))
    app = create_app(
        settings=DashboardSettings(port=0),
        read_model=fake,
        live=live,
        alerts=FakeAlertControl(fake, live, clock),
        ledger=FakeLedger(fake),
        status=FakeStatus(),
        accounts=accounts,
        hub_logs=logs,
    )
    out: dict[str, list[float]] = {}
    try:
        async with serve(app, DashboardSettings(port=0)) as base:
            for user in ("dr-ada", "admin"):
                async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                    await login(http, base, user)
                    got, page = await timed(http, f"{base}/ledger", WARMUP + REQUESTS)
                    if len(ROW_RE.findall(page)) != 50:
                        raise RuntimeError(f"{user}: the page lists no 50 batches")
                    out[f"GET /ledger as {user}"] = got[WARMUP:]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
                await login(http, base, "dr-ada")
                proof = f"{base}/log/hubs/{big.hub_id}/batch/1/proof"
                first, text = await timed(http, proof, 1)
                check_inclusion_bundle(text, big.keys.log_verifier_key)
                out["first proof"] = first
                later, text = await timed(http, proof, REQUESTS)
                check_inclusion_bundle(text, big.keys.log_verifier_key)
                out["later proofs"] = later
    finally:
        await asyncio.to_thread(logs.close)
        accounts.close()
    return out


def baseline_page(url: str) -> list[float]:
    """The 50 newest batch rows of the clinician's page and their parts, by primary key."""
    with psycopg.connect(url) as db:
        keys = db.execute(
            "SELECT hub_id, batch_seq FROM clinic_batches WHERE hub_id <> 'big'"
            " ORDER BY received_at DESC LIMIT 50"
        ).fetchall()
        hubs, seqs = [k[0] for k in keys], [k[1] for k in keys]
        found = []
        for n in range(WARMUP + REQUESTS):
            started = time.perf_counter()
            db.execute(
                "SELECT b.hub_id, b.batch_seq, b.jws, b.leaf_hash, b.received_at"
                " FROM unnest(%s::text[], %s::bigint[]) AS k(hub_id, batch_seq)"
                " JOIN clinic_batches b USING (hub_id, batch_seq)",
                (hubs, seqs),
            ).fetchall()
            db.execute(
                "SELECT p.hub_id, p.batch_seq, p.readings, p.first_time, p.last_time"
                " FROM unnest(%s::text[], %s::bigint[]) AS k(hub_id, batch_seq)"
                " JOIN clinic_patient_batches p USING (hub_id, batch_seq)",
                (hubs, seqs),
            ).fetchall()
            if n >= WARMUP:
                found.append(time.perf_counter() - started)
    return found


def baseline_root(url: str, hub_id: str, long: int) -> list[float]:
    found = []
    with psycopg.connect(url) as db:
        for _ in range(3):
            started = time.perf_counter()
            rows = db.execute(
                "SELECT leaf_hash FROM clinic_batches WHERE hub_id = %s ORDER BY batch_seq",
                (hub_id,),
            ).fetchall()
            rfc6962.root_from_hashes([bytes(r[0]) for r in rows])
            found.append(time.perf_counter() - started)
            assert len(rows) == long
    return found


def main() -> None:
    hubs = int(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_HUBS
    batches = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_BATCHES
    long = int(sys.argv[3]) if len(sys.argv) > 3 else DEFAULT_LONG
    with tempfile.TemporaryDirectory(prefix="bench-clinic-ledger-") as name:
        server = Postgres(durable=True)
        try:
            server.start()
            url = server.create_database("clinic")
            ClinicArchive(url).close()
            now = utc_now()
            load_s = load_hubs(url, hubs, batches, now - timedelta(days=1))
            big = SimulatedHub(Path(name) / "big", "big", 1)
            long_s = load_long_log(url, big, long, now)
            grant_all(url, hubs, big.hub_id)
            print(
                f"  {hubs} hubs x {batches} batches ({load_s:.0f} s to load), one hub of {long}"
                f" batches ({long_s:.0f} s); load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            timings = asyncio.run(measure(url, big))
            page = baseline_page(url)
            root = baseline_root(url, big.hub_id, long)
        finally:
            server.stop()
    print(f"    baseline bare SELECT of the page's 50 batches and their parts: {ms(page)}")
    for what in ("GET /ledger as dr-ada", "GET /ledger as admin"):
        got = timings[what]
        print(f"    {what:<24} {ms(got)} ({p95(got) / p95(page):.1f}x the baseline)")
    base = statistics.median(root)
    print(f"    baseline bare SELECT of {long} leaf hashes and their root: {base:.2f} s")
    print(f"    first proof of a process: {timings['first proof'][0]:.2f} s"
          f" ({timings['first proof'][0] / base:.1f}x the baseline)")  # fmt: skip
    print(f"    later proofs: {ms(timings['later proofs'])}", flush=True)


if __name__ == "__main__":
    main()
