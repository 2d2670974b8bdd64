"""The clinic archive projected into the hub schema on a real PostgreSQL: readings of two
hubs under clinic-wide ids, consent sealed by the hubs, and the clinic's alert engine
across workers (one open alert per patient and kind; an escalation written once)."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from gateway.clinic.witness import EnrolmentError
from gateway.clinical.alerts import Thresholds
from gateway.clock import utc_now
from gateway.model import (
    AlertKind,
    AlertLevel,
    AlertState,
    DeviceKind,
    Reading,
    ReadingKind,
    Source,
)
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_clinic_alerts import ClinicAlerts
from gateway.storage.postgres_clinic_group import Item
from gateway.storage.postgres_store import PostgresStore
from gateway.store import DB_FILENAME
from gateway.units import Unit
from glucohub import accounts
from glucohub.cli import main
from glucohub.simulate import SimulatedHub
from tests.clinic.hubs import cgm, make_hub, seal
from tests.support.postgres import Postgres

PASSWORD = "quartz lantern meadow 7319 violet"

Items = list[tuple[str, bytes]]


@pytest.fixture
def open_archive(postgres_url: str) -> Iterator[Callable[[], ClinicArchive]]:
    opened: list[ClinicArchive] = []

    def make() -> ClinicArchive:
        opened.append(ClinicArchive(postgres_url))
        return opened[-1]

    yield make
    for archive in opened:
        archive.close()


def deliver(archive: ClinicArchive, items: Items, now: datetime) -> None:
    for topic, payload in items:
        parts = topic.split("/")
        archive.handle(parts[3], parts[4], topic, payload, now)


def enrol(archive: ClinicArchive, *hubs: SimulatedHub) -> None:
    for hub in hubs:
        archive.enrol(*hub.enrolment, utc_now())


def hub_grants(hub: SimulatedHub, clinician: str, *patients: int) -> None:
    """On the hub: a clinician account and the patients' consent (ledger events)."""
    where = hub.data_dir / DB_FILENAME
    if clinician not in {u.username for u in accounts.users_list(where)}:
        accounts.users_add(where, clinician, "clinician", PASSWORD)
    for patient in patients:
        accounts.grant(where, f"{hub.hub_id}-p{patient}", clinician, by="hub-admin")


def test_two_hubs_readings_are_projected_once_under_clinic_wide_ids(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    now = utc_now()
    hubs = [make_hub(tmp_path, "h1"), make_hub(tmp_path, "h2")]
    archive = open_archive()
    enrol(archive, *hubs)
    items: Items = []
    for hub in hubs:
        for step in range(3):
            t = now - timedelta(minutes=15 - 5 * step)
            readings = [cgm(hub, p, 100.0 + 10 * p + step, t, step) for p in (0, 1)]
            items += seal(hub, readings, now)
    shuffled = items + items[:4]  # redeliveries too
    random.Random(3).shuffle(shuffled)
    deliver(archive, shuffled, now)

    store = PostgresStore(postgres_url)
    try:
        patients = {p.patient_id: p for p in store.list_patients()}
        assert set(patients) == {"h1:h1-p0", "h1:h1-p1", "h2:h2-p0", "h2:h2-p1"}
        # Hubs seal no names: the clinic shows the clinic-wide id.
        assert patients["h2:h2-p1"].display_name == "h2:h2-p1"
        values = [r.value for r in store.readings(patient_id="h2:h2-p1")]
        assert values == [110.0, 111.0, 112.0]  # each once, in time order
        assert store.count_readings() == 12
        devices = store.list_devices("h1:h1-p0")
        assert [(d.device_id, d.kind) for d in devices] == [("h1:h1-p0-cgm", DeviceKind.CGM)]
        # Projected readings were sealed by their hub: none waits for sealing at the clinic.
        assert store.count_unsealed() == 0
    finally:
        store.close()


def test_a_hub_id_holding_the_separator_is_refused(
    open_archive: Callable[[], ClinicArchive], tmp_path: Path
) -> None:
    hub = make_hub(tmp_path, "h1")
    _, jwk, vkey = hub.enrolment
    with pytest.raises(EnrolmentError, match="cannot contain ':'"):
        open_archive().enrol("h1:x", jwk, vkey, utc_now())


def test_consent_sealed_by_the_hubs_decides_who_sees_which_patient(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    now = utc_now()
    h1, h2 = make_hub(tmp_path, "h1"), make_hub(tmp_path, "h2")
    archive = open_archive()
    enrol(archive, h1, h2)
    hub_grants(h1, "dr-ada", 0)
    hub_grants(h2, "dr-ada", 1)
    hub_grants(h2, "dr-bob", 0)
    first = seal(h1, [cgm(h1, 0, 120.0, now, 0)], now) + seal(h2, [cgm(h2, 0, 120.0, now, 0)], now)
    # h2 withdraws dr-bob's access in a later batch, which reaches the clinic FIRST.
    accounts.revoke(h2.data_dir / DB_FILENAME, "h2-p0", "dr-bob", by="patient")
    later = seal(h2, [cgm(h2, 0, 121.0, now + timedelta(minutes=5), 1)], now)
    deliver(archive, later + first, now)

    clinic = accounts.open_account_storage(postgres_url)
    try:
        assert set(clinic.granted_patients("dr-ada")) == {"h1:h1-p0", "h2:h2-p1"}
        assert clinic.granted_patients("dr-bob") == []
    finally:
        clinic.close()


def _low_batches(hub: SimulatedHub, start: datetime) -> list[Items]:
    """One batch per reading: 80, 72, 66 then 62 mg/dL, five minutes apart (a low, gently
    falling: under 70 is "low", under 54 would be "urgent low")."""
    return [
        seal(hub, [cgm(hub, 0, value, start + timedelta(minutes=5 * i), i)], start)
        for i, value in enumerate((80.0, 72.0, 66.0, 62.0))
    ]


def _open_alerts(postgres_url: str, patient_id: str) -> list[tuple[str, str]]:
    with psycopg.connect(postgres_url) as db:
        rows = db.execute(
            "SELECT kind, state FROM alerts WHERE patient_id = %s AND state <> 'resolved'",
            (patient_id,),
        ).fetchall()
    return [(str(k), str(s)) for k, s in rows]


def test_two_workers_racing_on_one_patient_raise_one_open_low_alert(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    now = utc_now()
    hub = make_hub(tmp_path, "h1", patients=1)
    first, second = open_archive(), open_archive()
    enrol(first, hub)
    batches = _low_batches(hub, now - timedelta(minutes=15))
    flat = [item for batch in batches for item in batch]
    orders = [list(flat), list(reversed(flat))]
    start = threading.Barrier(2)

    def worker(archive: ClinicArchive, items: Items) -> None:
        start.wait()
        for item in items:
            deliver(archive, [item], now)
            archive.tick(now)

    threads = [
        threading.Thread(target=worker, args=(archive, order))
        for archive, order in zip((first, second), orders, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    kinds = [kind for kind, _state in _open_alerts(postgres_url, "h1:h1-p0")]
    assert kinds.count(AlertKind.LOW.value) == 1
    assert len(kinds) == len(set(kinds))  # one open alert per kind
    # The database itself refuses a second open alert of the patient and kind.
    with psycopg.connect(postgres_url) as db, pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "INSERT INTO alerts (alert_id, patient_id, kind, level, state, raised_at,"
            " updated_at, message) VALUES ('al_x', 'h1:h1-p0', 'low', 'warning', 'raised',"
            " now(), now(), 'a second low')"
        )


def test_an_urgent_alert_escalates_once_when_two_workers_tick_at_once(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    raised_at = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    hub = make_hub(tmp_path, "h1", patients=1)
    archive = open_archive()
    enrol(archive, hub)
    deliver(archive, seal(hub, [cgm(hub, 0, 48.0, raised_at, 0)], raised_at), raised_at)
    assert _open_alerts(postgres_url, "h1:h1-p0") == [("urgent_low", "raised")]

    # Past the 15-minute escalation, yet before the 20-minute stale-data warning.
    later = raised_at + timedelta(minutes=16)
    ticking = [ClinicAlerts(postgres_url, Thresholds()) for _ in range(2)]
    start = threading.Barrier(2)
    escalations: list[int] = []

    def tick(alerts: ClinicAlerts) -> None:
        start.wait()
        changed = alerts.tick(later)
        escalations.append(sum(a.level is AlertLevel.ESCALATED for a in changed))

    threads = [threading.Thread(target=tick, args=(a,)) for a in ticking]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for alerts in ticking:
        alerts.close()

    assert sorted(escalations) == [0, 1]
    with psycopg.connect(postgres_url) as db:
        level = db.execute("SELECT level FROM alerts WHERE patient_id = 'h1:h1-p0'").fetchall()
        events = db.execute(
            "SELECT count(*) FROM ledger_events WHERE patient_id = 'h1:h1-p0'"
            ' AND body LIKE \'%"level":"escalated"%\''
        ).fetchall()
    assert level == [("escalated",)]
    assert events == [(1,)]


def test_a_clinicians_acknowledgement_is_stored_for_every_process(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    now = utc_now()
    hub = make_hub(tmp_path, "h1", patients=1)
    archive = open_archive()
    enrol(archive, hub)
    deliver(archive, seal(hub, [cgm(hub, 0, 48.0, now, 0)], now), now)
    store = PostgresStore(postgres_url)
    try:
        (alert,) = store.alerts("h1:h1-p0", open_only=True)
        control = ClinicAlerts(postgres_url, Thresholds())
        acked = control.acknowledge(alert.alert_id, by="dr-ada", by_patient=False, now=now)
        control.close()
        assert acked is not None and acked.state is AlertState.ACKNOWLEDGED
        (stored,) = store.alerts("h1:h1-p0", open_only=True)
        assert (stored.state, stored.acknowledged_by) == (AlertState.ACKNOWLEDGED, "dr-ada")
    finally:
        store.close()
    # The worker's next batch sees the acknowledgement: the engine state is the database's.
    later = now + timedelta(minutes=5)
    deliver(archive, seal(hub, [cgm(hub, 0, 47.0, later, 1)], later), later)
    assert _open_alerts(postgres_url, "h1:h1-p0") == [("urgent_low", "acknowledged")]


def test_an_unusable_engine_state_never_blocks_the_patients_batches(
    tmp_path: Path, open_archive: Callable[[], ClinicArchive], postgres_url: str
) -> None:
    now = utc_now()
    hub = make_hub(tmp_path, "h1", patients=1)
    archive = open_archive()
    enrol(archive, hub)
    deliver(archive, seal(hub, [cgm(hub, 0, 62.0, now, 0)], now), now)
    assert _open_alerts(postgres_url, "h1:h1-p0") == [("low", "raised")]
    with psycopg.connect(postgres_url) as db:
        db.execute("UPDATE alert_engine_state SET state = '{not json'")
    # The engine starts afresh and raises the low again: stored, the old one resolved.
    later = now + timedelta(minutes=5)
    handled = [
        archive.handle(t.split("/")[3], t.split("/")[4], t, p, later).outcome
        for t, p in seal(hub, [cgm(hub, 0, 61.0, later, 1)], later)
    ]
    assert handled == ["stored", "accepted"]
    assert _open_alerts(postgres_url, "h1:h1-p0") == [("low", "raised")]


def test_reprojecting_brings_back_what_the_archive_holds_once(
    tmp_path: Path,
    open_archive: Callable[[], ClinicArchive],
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    now = utc_now()
    hub = make_hub(tmp_path, "h1")
    hub_grants(hub, "dr-ada", 1)
    archive = open_archive()
    enrol(archive, hub)
    for step in range(2):
        t = now - timedelta(minutes=5 * step)
        deliver(archive, seal(hub, [cgm(hub, p, 100.0, t, step) for p in (0, 1)], now), now)
    # An archive from before the projection: batches and records, none of the hub tables.
    with psycopg.connect(postgres_url) as db:
        for table in ("readings", "reading_keys", "devices", "patients", "dash_grants"):
            db.execute(f"DELETE FROM {table}".encode())
        db.execute("DELETE FROM clinic_consent")
    config = tmp_path / "clinic.toml"
    config.write_text(f'[clinic]\nurl = "{postgres_url}"\n')
    assert main(["hubs", "reproject", "--config", str(config)]) == 0
    assert (
        capsys.readouterr().out
        == "2 stored batches projected for the dashboards (4 readings new)\n"
    )
    assert main(["hubs", "reproject", "--config", str(config)]) == 0
    assert (
        capsys.readouterr().out
        == "2 stored batches projected for the dashboards (0 readings new)\n"
    )
    store = PostgresStore(postgres_url)
    try:
        assert store.count_readings() == 4
        assert [p.patient_id for p in store.list_patients()] == ["h1:h1-p0", "h1:h1-p1"]
    finally:
        store.close()
    clinic = accounts.open_account_storage(postgres_url)
    try:
        assert clinic.granted_patients("dr-ada") == ["h1:h1-p1"]
    finally:
        clinic.close()


def _projected(url: str) -> dict[str, list[tuple[object, ...]]]:
    """What the projection wrote, without the ids and times a run draws afresh."""
    queries = {
        "patients": "SELECT patient_id, simulated FROM patients ORDER BY 1",
        "devices": "SELECT device_id, patient_id, kind, transport, simulated FROM devices"
        " ORDER BY 1",
        "readings": "SELECT patient_id, device_id, value, time, batch_seq FROM readings"
        " ORDER BY id",
        "alerts": "SELECT patient_id, kind, level, state, glucose_mg_dl FROM alerts ORDER BY 1, 2",
        "consent": "SELECT patient_id, clinician, granted, batch_seq, record_index"
        " FROM clinic_consent ORDER BY 1, 2",
        "grants": "SELECT patient_id, clinician FROM dash_grants ORDER BY 1, 2",
    }
    with psycopg.connect(url) as db:
        return {name: db.execute(sql.encode()).fetchall() for name, sql in queries.items()}


def test_a_group_of_batches_is_projected_as_the_batches_one_by_one(
    tmp_path: Path, postgres_server: Postgres
) -> None:
    t = utc_now().replace(microsecond=0) - timedelta(minutes=10)
    hub = make_hub(tmp_path, "h1")
    p1 = f"{hub.hub_id}-p1"
    # Batch 0: p0 at 80 mg/dL at t + 10 min, and a reading of p1 from a real meter (BLE).
    meter = Reading(
        patient_id=p1,
        device_id=f"{p1}-cgm",
        kind=ReadingKind.CGM_GLUCOSE,
        value=150.0,
        unit=Unit.MG_DL,
        time=t,
        source=Source.BLE,
        seq=0,
    )
    items = seal(hub, [cgm(hub, 0, 80.0, t + timedelta(minutes=10), 0), meter], t)
    hub_grants(hub, "dr-ada", 1)
    hub_grants(hub, "dr-bob", 1)
    accounts.revoke(hub.data_dir / DB_FILENAME, p1, "dr-bob", by="patient")
    # Batch 1: p0's backfilled 50 mg/dL from before batch 0's reading (the engine takes it
    # after 80, out of time order: no urgent low), p1 from the simulator, and the consent.
    items += seal(hub, [cgm(hub, 0, 50.0, t, 1), cgm(hub, 1, 160.0, t, 1)], t)
    now = t + timedelta(minutes=10)

    one_by_one = postgres_server.create_database("t_one_by_one")
    grouped = postgres_server.create_database("t_grouped")
    for url in (one_by_one, grouped):
        archive = ClinicArchive(url)
        enrol(archive, hub)
        if url == one_by_one:
            deliver(archive, items, now)
        else:
            group = [Item(hub_id="h1", kind=t.split("/")[4], topic=t, payload=p) for t, p in items]
            handled = archive.handle_group(group, now)
            assert [h.outcome for h in handled] == ["stored", "superseded", "stored", "accepted"]
        archive.close()

    expected = _projected(one_by_one)
    assert _projected(grouped) == expected
    # Worked out from the scenario: p1 takes its flag from its first batch (a meter's
    # reading), the engine saw 50 after 80, and only dr-ada keeps her grant.
    assert expected["patients"] == [("h1:h1-p0", True), ("h1:h1-p1", False)]
    assert [r[2:5] for r in expected["readings"]] == [
        (80.0, t + timedelta(minutes=10), 0),
        (150.0, t, 0),
        (50.0, t, 1),
        (160.0, t, 1),
    ]
    assert expected["alerts"] == []
    assert expected["grants"] == [("h1:h1-p1", "dr-ada")]
