"""The clinical notes thread and device battery on the patient page (issue 7)."""

from __future__ import annotations

from datetime import timedelta

from gateway.model import DeviceEvent, DeviceEventKind
from tests.dashboards.conftest import Login, csrf_of
from tests.dashboards.fakes import NOW, World


async def test_a_granted_clinician_writes_and_the_patient_reads(login: Login) -> None:
    dr = await login("dr-grant")
    token = await csrf_of(dr)
    sent = await dr.post(
        "/patients/pat-a/notes",
        data={"csrf_token": token, "body": "Reduce basal by 10% <b>overnight</b>."},
        allow_redirects=False,
    )
    assert sent.status == 303 and sent.headers["Location"] == "/patients/pat-a#notes"
    page = await (await dr.get("/patients/pat-a")).text()
    assert "Reduce basal by 10% &lt;b&gt;overnight&lt;/b&gt;." in page  # escaped, not markup
    assert "dr-grant (clinician)" in page
    alice = await login("alice")
    own = await (await alice.get("/patients/pat-a")).text()
    assert "Reduce basal by 10%" in own
    assert 'action="/patients/pat-a/notes"' not in own  # patients read, clinicians write


async def test_notes_are_scoped_like_the_record(login: Login) -> None:
    for user, expected in (("dr-none", 404), ("alice", 403), ("bob", 403), ("root", 403)):
        client = await login(user)
        token = await csrf_of(client)
        response = await client.post(
            "/patients/pat-a/notes",
            data={"csrf_token": token, "body": "x"},
            allow_redirects=False,
        )
        assert response.status == expected, user
    anonymous = await login("")
    response = await anonymous.post(
        "/patients/pat-a/notes", data={"body": "x"}, allow_redirects=False
    )
    assert response.status == 401  # no session: refused before anything else
    bob = await login("bob")
    assert (await bob.get("/patients/pat-a")).status == 404  # nor can B read A's thread


async def test_a_note_needs_csrf_and_a_sane_length(login: Login) -> None:
    dr = await login("dr-grant")
    no_token = await dr.post("/patients/pat-a/notes", data={"body": "hi"}, allow_redirects=False)
    assert no_token.status == 403
    token = await csrf_of(dr)
    for body in ("   ", "x" * 4001):
        response = await dr.post(
            "/patients/pat-a/notes",
            data={"csrf_token": token, "body": body},
            allow_redirects=False,
        )
        assert response.status == 400


async def test_a_recent_battery_low_report_shows_on_the_device(world: World, login: Login) -> None:
    device = next(d for d in world.model.devices if d.patient_id == "pat-a")
    world.model.events.append(
        DeviceEvent(
            patient_id="pat-a",
            device_id=device.device_id,
            kind=DeviceEventKind.BATTERY_LOW,
            time=NOW - timedelta(hours=3),
        )
    )
    dr = await login("dr-grant")
    page = await (await dr.get("/patients/pat-a")).text()
    assert '<span class="warn">low (' in page
    world.model.events[-1] = DeviceEvent(
        patient_id="pat-a",
        device_id=device.device_id,
        kind=DeviceEventKind.BATTERY_LOW,
        time=NOW - timedelta(days=8),
    )
    page = await (await dr.get("/patients/pat-a")).text()
    assert '<span class="warn">' not in page and "no warning" in page
