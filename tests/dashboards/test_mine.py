"""The patient's own view (/me) in plain words, and "download my data" (CSV and FHIR): the
signed-in patient's record only."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

from aiohttp import ClientResponse

from tests.dashboards.conftest import Login, csrf_of, login_as
from tests.dashboards.fakes import World


async def test_a_patient_lands_on_their_own_view_after_login(login: Login) -> None:
    alice = await login("")
    sent = await login_as(alice, "alice")
    assert isinstance(sent, ClientResponse)
    assert sent.status == 303 and sent.headers["Location"] == "/me"
    home = await alice.get("/", allow_redirects=False)
    assert home.status == 303 and home.headers["Location"] == "/me"


async def test_my_view_says_it_in_plain_words(world: World, login: Login) -> None:
    dr = await login("dr-grant")
    assert (await dr.get("/patients/pat-a")).status == 200  # a clinician's view, logged
    alice = await login("alice")
    response = await alice.get("/me")
    assert response.status == 200
    page = await response.text()
    assert "<h1>My glucose</h1>" in page
    # Alice's latest reading is at NOW: 130 + 30·sin(28π) = 130 mg/dL = 7.2 mmol/L, rising
    # by about 0.13 mg/dL/min (the sine's slope at its zero crossing): steady.
    assert '<span class="big band-in-range">7.2</span>' in page
    assert "In range</span> and steady" in page
    # 100–160 mg/dL all week: all in range, none low or high.
    assert "<strong>100%</strong> of the time" in page
    assert "(below 3.9 mmol/L): 0%" in page and "(above 10.0 mmol/L): 0%" in page
    assert "Virtual CGM pat-a" in page and "No battery warning." in page
    assert "These clinicians can see your data: dr-grant." in page
    assert "dr-grant (clinician) looked at your record" in page
    assert 'href="/me/readings.csv"' in page and 'href="/me/glucose.fhir.json"' in page
    assert "pat-b" not in page and "Bob" not in page and "pat-c" not in page


async def test_time_in_range_this_week_for_a_patient_who_runs_low(login: Login) -> None:
    bob = await login("bob")
    page = await (await bob.get("/me")).text()
    # 95 + 40·sin(2πi/288) < 70 when sin < −0.625: i = 175…257 of every 288 (83 readings),
    # 83/288 = 28.8 % low; the rest (70–135) in range, 71.2 %; never above 180.
    assert "<strong>71%</strong> of the time" in page
    assert "(below 3.9 mmol/L): 29%" in page and "(above 10.0 mmol/L): 0%" in page
    assert "Nobody else can see your data." in page
    assert "Nobody else has looked at your record yet." in page


async def test_download_my_readings_as_csv_holds_only_mine(login: Login) -> None:
    alice = await login("alice")
    response = await alice.get("/me/readings.csv")
    assert response.status == 200 and response.content_type == "text/csv"
    assert "attachment" in response.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(await response.text())))
    assert rows[0][:9] == [
        "patient_id", "device_id", "kind", "time", "value", "unit", "seq", "source", "received_at"
    ]  # fmt: skip
    assert len(rows) == 1 + 14 * 288 + 1  # every 5 min over 14 days, both ends
    assert {r[0] for r in rows[1:]} == {"pat-a"}
    first = datetime(2026, 1, 1, 12, tzinfo=UTC)  # NOW − 14 days; 130 + 30·sin(0) = 130
    assert rows[1][:9] == [
        "pat-a", "cgm-pat-a", "cgm_glucose", "2026-01-01T12:00:00.000Z", "130", "mg/dL",
        str(int(first.timestamp()) // 300), "virtual", "",  # simulated: never received
    ]  # fmt: skip


async def test_my_csv_gives_glucose_in_my_unit_and_times_in_my_zone(login: Login) -> None:
    """The export's columns stay as they are (mg/dL, UTC); after them each row says its time
    on the patient's clock (pat-a lives in Europe/Berlin) and glucose in the viewer's unit."""
    alice = await login("alice")
    rows = list(csv.reader(io.StringIO(await (await alice.get("/me/readings.csv")).text())))
    assert rows[0][9:] == ["local_time", "time_zone", "glucose_mmol_l"]
    # 2026-01-01 12:00 UTC is 13:00 CET; 130 mg/dL / 18.016 = 7.2 mmol/L
    assert rows[1][3:6] == ["2026-01-01T12:00:00.000Z", "130", "mg/dL"]
    assert rows[1][9:] == ["2026-01-01 13:00:00", "CET", "7.2"]
    token = await csrf_of(alice)
    await alice.post("/prefs", data={"csrf_token": token, "unit": "mg/dL"})
    rows = list(csv.reader(io.StringIO(await (await alice.get("/me/readings.csv")).text())))
    assert rows[0][9:] == ["local_time", "time_zone", "glucose_mg_dl"]
    assert rows[1][9:] == ["2026-01-01 13:00:00", "CET", "130"]
    page = await (await alice.get("/me")).text()
    assert "glucose also in mg/dL and times also in your time zone" in page


async def test_download_my_glucose_as_fhir_holds_only_mine(login: Login) -> None:
    bob = await login("bob")
    response = await bob.get("/me/glucose.fhir.json")
    assert response.status == 200 and response.content_type == "application/fhir+json"
    document = json.loads(await response.text())
    assert document["resourceType"] == "Bundle" and document["type"] == "searchset"
    assert document["total"] == 14 * 288 + 1
    subjects = {e["resource"]["subject"]["reference"] for e in document["entry"]}
    assert subjects == {"Patient/pat-b"}
    # 99504-3: the CGM IG's code for a CGM glucose reading in mg/dL
    assert {e["resource"]["code"]["coding"][0]["code"] for e in document["entry"]} == {"99504-3"}


async def test_only_a_patient_has_a_view_of_their_own(login: Login) -> None:
    dr = await login("dr-grant")
    for path in ("/me", "/me/readings.csv", "/me/glucose.fhir.json"):
        assert (await dr.get(path, allow_redirects=False)).status == 403, path
    anonymous = await login("")
    assert (await anonymous.get("/me", allow_redirects=False)).status == 303
