"""Treatments where clinicians and patients look: marks on the patient's 24-hour chart and a
table on the patient page (times in the patient's zone, Europe/Berlin: UTC+1 in January)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboards.app import create_app
from gateway.model import Source, Treatment, TreatmentKind
from gateway.protocols import TreatmentWrite
from gateway.settings import DashboardSettings
from tests.dashboards.conftest import Login, login_as
from tests.dashboards.fakes import NOW, World


class FakeTreatments:
    def __init__(self, stored: Sequence[Treatment]) -> None:
        self.stored = list(stored)
        self.asked: list[tuple[str, datetime, datetime]] = []

    async def add(self, treatments: Sequence[Treatment]) -> TreatmentWrite:
        raise AssertionError("pages never write treatments")

    async def query(
        self, patient_id: str, *, since: datetime, until: datetime, limit: int | None = None
    ) -> list[Treatment]:
        self.asked.append((patient_id, since, until))
        found = [t for t in self.stored if t.patient_id == patient_id and since <= t.time <= until]
        return sorted(found, key=lambda t: t.time, reverse=True)


def treatment(patient: str, hours_ago: float, kind: TreatmentKind, **fields: object) -> Treatment:
    return Treatment(
        patient_id=patient,
        time=NOW - timedelta(hours=hours_ago),
        kind=kind,
        dedupe_key=f"{patient}-{hours_ago}",
        source=Source.HTTP,
        **fields,  # type: ignore[arg-type]
    )


STORED = [
    treatment(
        "pat-a",
        5,
        TreatmentKind.INSULIN_BOLUS,
        insulin_units=6.5,
        carbs_grams=45.0,
        event_type="Meal Bolus",
        entered_by="openaps://AndroidAPS",
        notes="<b>pizza</b>",
    ),
    treatment(
        "pat-a",
        2,
        TreatmentKind.TEMP_BASAL,
        rate_u_h=0.8,
        duration_min=30.0,
        event_type="Temp Basal",
    ),
    treatment("pat-a", 30, TreatmentKind.CARBS, carbs_grams=99.0),  # yesterday: not shown
    treatment("pat-b", 1, TreatmentKind.INSULIN_BOLUS, insulin_units=3.25),  # Bob's
]


def app_with(world: World, treatments: FakeTreatments) -> web.Application:
    return create_app(
        settings=DashboardSettings(port=0),
        read_model=world.model,
        live=world.live,
        alerts=world.alerts,
        ledger=world.ledger,
        status=world.status,
        accounts=world.accounts,
        clock=world.clock,
        treatments=treatments,
    )


async def test_the_patient_page_marks_and_lists_the_days_treatments(world: World) -> None:
    fake = FakeTreatments(STORED)
    async with TestClient(TestServer(app_with(world, fake))) as client:
        await login_as(client, "dr-grant")
        page = await (await client.get("/patients/pat-a")).text()
        # 5 h before 12:00 UTC is 07:00 UTC, 08:00 in Berlin; 2 h before: 11:00 in Berlin
        assert 'aria-label="Insulin 6.5 U at 2026-01-15 08:00 CET"' in page
        assert 'aria-label="Carbohydrates 45 g at 2026-01-15 08:00 CET"' in page
        assert "99 g" not in page and "3.25" not in page  # yesterday's, and Bob's
        table = page[page.index('<section id="treatments">') :]
        table = table[: table.index("</section>")]
        assert "<td>Insulin bolus</td><td>6.5 U · 45 g</td>" in table
        assert "<td>Temporary basal</td><td>0.8 U/h for 30 min</td>" in table
        assert "&lt;b&gt;pizza&lt;/b&gt;" in table and "<b>pizza" not in page
        assert table.index("Temporary basal") < table.index("Insulin bolus")  # newest first
        assert ("pat-a", NOW - timedelta(hours=24), NOW) in fake.asked

        await login_as(client, "alice")  # the patient herself: the same marks on /me
        mine = await (await client.get("/me")).text()
        assert 'aria-label="Insulin 6.5 U at 2026-01-15 08:00 CET"' in mine


async def test_a_hub_without_treatments_shows_none(login: Login) -> None:
    client = await login("dr-grant")
    page = await (await client.get("/patients/pat-a")).text()
    assert 'class="treat' not in page and 'id="treatments"' not in page
