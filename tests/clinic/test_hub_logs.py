"""Each hub's log at the clinic, on a real PostgreSQL: real hubs seal batches (SQLite, their
own keys), the archive verifies and stores them as a worker does, and the clinic serves each
batch and its inclusion proof as the hub itself serves them, to a reader of their patients
only, proven against the checkpoint the clinic accepted from that hub.

The world (`build`): hubs h1 and h2 with patients p0 and p1 each. h1 seals batches 0-2 with
one reading of each patient (batch 0 also holds its consent events: dr-ada sees p0, dr-bob
p1) and batch 3 with p0's reading alone; h2 seals batches 0-2 likewise (dr-ada sees p1).
"""

from __future__ import annotations

import contextlib
import html
import json
import re
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest

from dashboards.app import create_app
from dashboards.context import DEPS
from gateway.clinic.hub_logs import ArchivedLogs, hub_patients
from gateway.clock import utc_now
from gateway.services import Reader, StoreLedgerView
from gateway.settings import DashboardSettings, load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from glucohub import accounts
from glucohub.accounts import open_accounts
from glucohub.cli import main
from glucohub.clinic_dashboard import serving
from glucohub.simulate import SimulatedHub
from ledger.errors import BundleError
from ledger.proof import check_inclusion_bundle
from tests.clinic.hubs import cgm, make_hub, produce, seal
from tests.clinic.test_dashboards import clinic_config, login
from tests.clinic.test_projection import PASSWORD, deliver, hub_grants
from tests.dashboards.fakes import (
    FakeAlertControl,
    FakeClock,
    FakeLedger,
    FakeLiveFeed,
    FakeReadModel,
    FakeStatus,
)
from tests.dashboards.leaks import find_markers

ALL_PATIENTS = ("h1-p0", "h1-p1", "h2-p0", "h2-p1")
# Who sees which of them (clinic-wide ids are "<hub>:<patient>").
SEES = {
    "dr-ada": frozenset({"h1-p0", "h2-p1"}),
    "dr-bob": frozenset({"h1-p1"}),
    "dr-none": frozenset(),
    "admin": frozenset(),  # runs the clinic: no patient consented to it
}
# The batches (hub, seq) holding records of each patient, from the layout above.
BATCHES_OF = {
    "h1-p0": {0, 1, 2, 3},
    "h1-p1": {0, 1, 2},
    "h2-p0": {0, 1, 2},
    "h2-p1": {0, 1, 2},
}
READINGS = {("h1", 0): 2, ("h1", 1): 2, ("h1", 2): 2, ("h1", 3): 1}
READINGS |= {("h2", s): 2 for s in range(3)}


def build(directory: Path, postgres_url: str, now: datetime) -> tuple[SimulatedHub, SimulatedHub]:
    h1, h2 = make_hub(directory, "h1"), make_hub(directory, "h2")
    hub_grants(h1, "dr-ada", 0)
    hub_grants(h1, "dr-bob", 1)
    hub_grants(h2, "dr-ada", 1)
    items = []
    for hub in (h1, h2):
        for step in range(3):
            t = now - timedelta(minutes=20 - 5 * step)
            items += seal(hub, [cgm(hub, p, 100.0 + 10 * p + step, t, step) for p in (0, 1)], now)
    items += seal(h1, [cgm(h1, 0, 140.0, now - timedelta(minutes=2), 3)], now)
    archive = ClinicArchive(postgres_url)
    try:
        for hub in (h1, h2):
            archive.enrol(*hub.enrolment, now)
        deliver(archive, items, now)
    finally:
        archive.close()
    return h1, h2


@contextlib.asynccontextmanager
async def hub_ledger(hub: SimulatedHub) -> AsyncIterator[StoreLedgerView]:
    """The hub's own ledger view over its data directory: what its dashboards serve."""

    async def no_writes(_fn: Callable[..., None]) -> None:
        raise AssertionError("reading only")

    reader = Reader(hub.data_dir)
    try:
        yield StoreLedgerView(reader, hub.keys, no_writes)
    finally:
        reader.close()


def clinic_ids(local: frozenset[str]) -> frozenset[str]:
    return frozenset(f"{p.split('-')[0]}:{p}" for p in local)


def record_patients(text: str) -> list[str]:
    return [r["record"]["patient_id"] for r in json.loads(text)["records"]]


def test_clinic_wide_ids_map_to_each_hubs_own() -> None:
    assert hub_patients({"h1:p0", "h1:p:1", "h2:p0", "no-hub", ":p", "h3:"}) == {
        "h1": {"p0", "p:1"},  # a hub's own id may hold ":": the first one splits
        "h2": {"p0"},
    }


async def test_batches_and_proofs_are_the_files_the_hub_serves_to_the_same_reader(
    tmp_path: Path, postgres_url: str
) -> None:
    """For every batch and every reader: the clinic serves byte for byte what the hub serves
    a reader of the same patients (the hub's own `StoreLedgerView` over its own store), and
    nothing when the hub would serve nothing."""
    h1, h2 = build(tmp_path, postgres_url, utc_now())
    logs = ArchivedLogs(postgres_url)
    try:
        for hub in (h1, h2):
            async with hub_ledger(hub) as own:
                for seq in range(hub.sealer.tree_size):
                    for reader, local in SEES.items():
                        mine = frozenset(p for p in local if p.startswith(hub.hub_id + "-"))
                        want = await own.batch_view(seq, mine)
                        got = await logs.batch_view(hub.hub_id, seq, clinic_ids(local))
                        where = f"{reader}, {hub.hub_id} batch {seq}"
                        assert (got is None) == (want is None), where
                        assert (got is None) == (
                            not mine & {p for p in ALL_PATIENTS if seq in BATCHES_OF[p]}
                        ), where
                        if got is None or want is None:
                            continue
                        assert got.text == want.text, where
                        assert got.patients == clinic_ids(want.patients), where
                        assert set(record_patients(got.text)) == mine, where
                        proof = await logs.inclusion_proof_file(hub.hub_id, seq, clinic_ids(local))
                        hub_proof = await own.inclusion_proof_file(seq, mine)
                        assert proof is not None and hub_proof is not None
                        assert proof.text == hub_proof.text, where
    finally:
        logs.close()


async def test_a_proof_verifies_with_its_hubs_key_only(tmp_path: Path, postgres_url: str) -> None:
    h1, h2 = build(tmp_path, postgres_url, utc_now())
    logs = ArchivedLogs(postgres_url)
    try:
        proof = await logs.inclusion_proof_file("h1", 1, {"h1:h1-p0", "h2:h2-p1"})
    finally:
        logs.close()
    assert proof is not None and proof.patients == {"h1:h1-p0"}
    report = check_inclusion_bundle(
        proof.text, h1.keys.log_verifier_key, batch_jwk=h1.keys.batch_jwk
    )
    # h1's log holds batches 0-3; batch 1 holds p0's then p1's reading: p0's is record 0.
    assert (report.batch_seq, report.tree_size) == (1, 4)
    assert [(r.index, r.record["patient_id"], r.record["value"]) for r in report.records] == [
        (0, "h1-p0", 101)
    ]
    with pytest.raises(BundleError, match="not signed by the trusted log key"):
        check_inclusion_bundle(proof.text, h2.keys.log_verifier_key)


async def test_an_archive_from_before_salts_lists_its_old_batches_and_discloses_new_ones(
    tmp_path: Path, postgres_url: str
) -> None:
    """Clinic migration 4 keeps each record's salt from then on. A batch archived before has
    none: it is listed (its patients' parts computed by the migration from its records), but
    nothing of it can be disclosed provably (404), while the batches after it are, proven
    against a checkpoint over both."""
    now = utc_now()
    hub = make_hub(tmp_path, "h1")
    archive = ClinicArchive(postgres_url)
    try:
        archive.enrol(*hub.enrolment, now)
        deliver(archive, seal(hub, [cgm(hub, p, 120.0 + p, now, 0) for p in (0, 1)], now), now)
    finally:
        archive.close()
    # Back to clinic schema version 3, as the release before this one left the archive.
    with psycopg.connect(postgres_url, autocommit=True) as db:
        for statement in (
            "DROP TABLE clinic_patient_batches",
            "ALTER TABLE clinic_records DROP COLUMN salt",
            "DROP INDEX clinic_batches_received",
            "DELETE FROM clinic_schema_migrations WHERE version >= 4",
        ):
            db.execute(statement.encode())
    archive = ClinicArchive(postgres_url)  # upgrades
    try:
        assert archive.rows("SELECT max(version) FROM clinic_schema_migrations") == [(4,)]
        later = now + timedelta(minutes=5)
        deliver(archive, seal(hub, [cgm(hub, p, 130.0 + p, later, 1) for p in (0, 1)], now), now)
    finally:
        archive.close()
    reader = {"h1:h1-p0"}
    logs = ArchivedLogs(postgres_url)
    try:
        listed = await logs.batches(reader, 10)
        assert [(b.hub_id, b.batch.seq, b.batch.reading_count) for b in listed] == [
            ("h1", 1, 1),
            ("h1", 0, 1),
        ]
        assert await logs.batch_view("h1", 0, reader) is None
        assert await logs.inclusion_proof_file("h1", 0, reader) is None
        got = await logs.batch_view("h1", 1, reader)
        proof = await logs.inclusion_proof_file("h1", 1, reader)
    finally:
        logs.close()
    async with hub_ledger(hub) as own:
        want = await own.batch_view(1, {"h1-p0"})
        want_proof = await own.inclusion_proof_file(1, {"h1-p0"})
    assert got is not None and want is not None and got.text == want.text
    assert proof is not None and want_proof is not None and proof.text == want_proof.text
    assert check_inclusion_bundle(proof.text, hub.keys.log_verifier_key).tree_size == 2


@pytest.mark.slow
async def test_a_proof_in_a_log_longer_than_a_run_is_the_hubs(
    tmp_path: Path, postgres_url: str
) -> None:
    """300 batches: the proof's subtree hashes come from whole runs of 256 leaves read from
    the archive; every proof equals the hub's own, at the same checkpoint."""
    hub = make_hub(tmp_path, "h1", patients=1)
    items = produce(hub, 300)
    archive = ClinicArchive(postgres_url)
    try:
        archive.enrol(*hub.enrolment, utc_now())
        deliver(archive, items, utc_now())
        assert archive.rows("SELECT size FROM clinic_checkpoints") == [(300,)]
    finally:
        archive.close()
    logs = ArchivedLogs(postgres_url)
    try:
        async with hub_ledger(hub) as own:
            for seq in (0, 5, 255, 256, 299):
                got = await logs.inclusion_proof_file("h1", seq, {"h1:h1-p0"})
                want = await own.inclusion_proof_file(seq, {"h1-p0"})
                assert got is not None and want is not None
                assert got.text == want.text, seq
                report = check_inclusion_bundle(got.text, hub.keys.log_verifier_key)
                assert (report.batch_seq, report.tree_size) == (seq, 300)
    finally:
        logs.close()


# -- the dashboards -----------------------------------------------------------------------

ROW_RE = re.compile(
    r'<tr data-hub="([^"]+)" data-seq="(\d+)"><td>[^<]*</td><td>\d+</td><td>(\d+)</td>(.*?)</tr>'
)


def rows(page: str) -> dict[tuple[str, int], tuple[int, str]]:
    """The ledger page's batch rows: (hub, seq) -> (readings shown, the rest of the row)."""
    return {(h, int(s)): (int(n), rest) for h, s, n, rest in ROW_RE.findall(page)}


def leaks(body: bytes, reader: str) -> list[tuple[str, str, str]]:
    """Markers of patients `reader` may not see, anywhere in `body` (JWS payloads too)."""
    unseen = {p: p for p in ALL_PATIENTS if p not in SEES[reader]}
    return find_markers(body, unseen)


@pytest.mark.slow
async def test_the_clinics_ledger_pages_show_each_reader_their_patients_batches_only(
    tmp_path: Path, postgres_url: str
) -> None:
    now = utc_now()
    h1, h2 = build(tmp_path / "hubs", postgres_url, now)
    for name in ("dr-ada", "dr-bob", "dr-none"):
        accounts.users_add(postgres_url, name, "clinician", PASSWORD)
    accounts.users_add(postgres_url, "admin", "admin", PASSWORD)
    settings = load_settings(clinic_config(tmp_path, postgres_url), {})
    keys = {"h1": h1.keys.log_verifier_key, "h2": h2.keys.log_verifier_key}
    async with serving(settings) as base:
        sessions = {}
        for name in SEES:
            sessions[name] = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
            await login(sessions[name], base, name)
        try:
            for name, session in sessions.items():
                async with session.get(f"{base}/ledger") as response:
                    assert response.status == 200
                    page = await response.text()
                assert not leaks(page.encode(), name), name
                shown = rows(page)
                hubs = set(re.findall(r'<article class="hub-log" data-hub="([^"]+)">', page))
                if name == "admin":  # every hub and batch, whole, and no records to fetch
                    assert hubs == {"h1", "h2"}
                    assert {k: n for k, (n, _) in shown.items()} == READINGS
                    assert "your records" not in page
                else:
                    local = SEES[name]
                    assert hubs == {p.split("-")[0] for p in local}, name
                    # each batch counts this reader's readings only: one per patient here
                    assert {k: n for k, (n, _) in shown.items()} == {
                        (p.split("-")[0], s): 1 for p in local for s in BATCHES_OF[p]
                    }, name
                    for (hub, seq), (_, rest) in shown.items():
                        path = f"/log/hubs/{hub}/batch/{seq}"
                        assert f'href="{path}"' in rest and f'href="{path}/proof"' in rest
                for hub in hubs:  # the accepted checkpoint as the hub signed it, and its key
                    latest = (h1 if hub == "h1" else h2).store.latest_checkpoint()
                    assert latest is not None
                    assert f'<pre class="note">{html.escape(latest[2])}</pre>' in page
                    assert keys[hub] in page

            # Every batch of both hubs, for every reader: theirs (their records only), or 404.
            for name, session in sessions.items():
                for hub in ("h1", "h2"):
                    for seq in (0, 1, 2, 3, 99):
                        path = f"{base}/log/hubs/{hub}/batch/{seq}"
                        mine = {p for p in SEES[name] if p.startswith(hub) and seq in BATCHES_OF[p]}
                        for suffix in ("", "/proof"):
                            async with session.get(path + suffix) as response:
                                body = await response.read()
                                status = response.status
                            where = f"{name} {hub} {seq}{suffix}"
                            assert status == (200 if mine else 404), where
                            assert not leaks(body, name), where
                            if mine:
                                assert set(record_patients(body.decode())) == mine, where
                async with session.get(f"{base}/log/hubs/h9/batch/0") as response:
                    assert response.status == 404

            # A downloaded proof verifies with `glucohub ledger check-proof` and h1's key only.
            ada = sessions["dr-ada"]
            async with ada.get(f"{base}/patients/h1:h1-p0") as response:
                patient_page = await response.text()
            assert 'href="/log/hubs/h1/batch/3/proof"' in patient_page
            assert keys["h1"] in patient_page
            async with ada.get(f"{base}/log/hubs/h1/batch/3/proof") as response:
                assert "attachment" in response.headers["Content-Disposition"]
                (tmp_path / "proof.json").write_bytes(await response.read())
            jwk = json.dumps(h1.keys.batch_jwk)
            check = ["ledger", "check-proof", str(tmp_path / "proof.json"), "--log-key"]
            assert main([*check, keys["h1"], "--batch-key", jwk]) == 0
            assert main([*check, keys["h2"]]) == 1

            # A batch the clinic holds but no accepted checkpoint covers yet.
            held = seal(h1, [cgm(h1, 0, 150.0, now - timedelta(minutes=1), 4)], now)
            archive = ClinicArchive(postgres_url)
            try:
                deliver(archive, [i for i in held if i[0].endswith("/batches")], now)
            finally:
                archive.close()
            async with ada.get(f"{base}/log/hubs/h1/batch/4") as response:
                assert response.status == 200
            async with ada.get(f"{base}/log/hubs/h1/batch/4/proof") as response:
                assert response.status == 409
            async with ada.get(f"{base}/ledger") as response:
                row = rows(await response.text())[("h1", 4)][1]
            assert "awaiting checkpoint" in row and "/proof" not in row
        finally:
            for session in sessions.values():
                await session.close()
        async with aiohttp.ClientSession() as anonymous:
            for path in ("/ledger", "/log/hubs/h1/batch/0", "/log/hubs/h1/batch/0/proof"):
                async with anonymous.get(base + path, allow_redirects=False) as response:
                    assert response.status == 303, path
                    assert not leaks(await response.read(), "dr-none")


def test_a_clinic_serves_hub_keyed_batch_routes_instead_of_the_hubs(tmp_path: Path) -> None:
    """The clinic's dashboards are the hub's, except its ledger routes: every other route is
    the hub's (tests/dashboards/test_access_matrix.py covers each), and each has a rule."""
    model = FakeReadModel()
    live, clock = FakeLiveFeed(), FakeClock()
    store = open_accounts(tmp_path / "accounts.db")
    hub_logs = ArchivedLogs("postgresql://unused")  # connects on first use only
    try:

        def routes(logs: ArchivedLogs | None) -> set[tuple[str, str]]:
            app = create_app(
                settings=DashboardSettings(port=0),
                read_model=model,
                live=live,
                alerts=FakeAlertControl(model, live, clock),
                ledger=FakeLedger(model),
                status=FakeStatus(),
                accounts=store,
                hub_logs=logs,
            )
            registered = [r for r in app.router.routes() if r.resource is not None]
            assert all(r in app[DEPS].rules for r in registered)
            return {(r.method, r.resource.canonical) for r in registered if r.resource}

        hub, clinic = routes(None), routes(hub_logs)
    finally:
        hub_logs.close()
        store.close()
    assert clinic - hub == {
        ("GET", "/log/hubs/{hub}/batch/{seq}"),
        ("GET", "/log/hubs/{hub}/batch/{seq}/proof"),
    }
    assert hub - clinic == {("GET", "/log/batch/{seq}"), ("GET", "/log/batch/{seq}/proof")}
