"""One rule for time: a Paris patient's page, the alerts page and triage show every time in
Europe/Paris with the zone named; the ledger states UTC. The expected strings are written out
by hand from known UTC instants (2026-07-01T12:00Z is 14:00 CEST in Paris)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

from dashboards.accounts import Role
from gateway.model import AlertKind, AlertLevel
from tests.dashboards.conftest import Login
from tests.dashboards.fakes import World, alert, cgm

JULY = datetime(2026, 7, 1, 12, 30, tzinfo=UTC)  # 14:30 CEST in Paris
ALERT_AT = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)  # 14:00 CEST
LAST_READING = datetime(2026, 7, 1, 12, 26, tzinfo=UTC)  # 14:26 CEST, 4 minutes before now
NOTE_AT = datetime(2026, 7, 1, 10, 15, tzinfo=UTC)  # 12:15 CEST
TICK_RE = re.compile(r'<text class="tick"[^>]*text-anchor="middle">([^<]+)</text>')
ZONE_RE = re.compile(r'<text class="tick zone"[^>]*>([^<]+)</text>')


def paris_world(world: World) -> None:
    """pat-a lives in Paris; 24 h of readings up to 12:26Z, an alert raised at 12:00Z."""
    world.model.patients["pat-a"] = dataclasses.replace(
        world.model.patients["pat-a"], timezone="Europe/Paris"
    )
    world.model.readings_list = [
        cgm("pat-a", LAST_READING - timedelta(minutes=5 * i), 120.0) for i in range(288)
    ]
    world.model.alerts_by_id["al-paris"] = alert(
        "al-paris", "pat-a", AlertKind.LOW, AlertLevel.URGENT, at=ALERT_AT, glucose=61.0
    )
    world.clock.current = NOTE_AT


async def test_paris_patient_page_shows_every_time_in_paris_with_the_zone(
    world: World, login: Login
) -> None:
    paris_world(world)
    clinician = await login("dr-grant")
    user = await world.accounts.get_user("dr-grant")
    assert user is not None and user.role is Role.CLINICIAN
    await world.accounts.add_note(user, "pat-a", "Reviewed overnight lows.")
    world.clock.current = JULY
    text = await (await clinician.get("/patients/pat-a")).text()

    # alert raised, device last seen (with its age), note written: local time and zone
    assert "2026-07-01 14:00 CEST" in text  # the alert
    assert "2026-07-01 14:26 CEST" in text  # the CGM's last reading
    assert "2026-07-01 12:15 CEST" in text  # the note
    assert "4 min ago" in text  # the latest reading, as clinicians scan it
    # no UTC rendering of those instants anywhere
    for utc_clock in ("12:00 UTC", "12:26 UTC", "10:15 UTC", "2026-07-01 12:00<", "12:26<"):
        assert utc_clock not in text
    # the 24 h chart: ticks every three local hours, the zone named on the axis
    ticks = TICK_RE.findall(text)
    assert ticks == ["15:00", "18:00", "21:00", "00:00", "03:00", "06:00", "09:00", "12:00"]
    assert ZONE_RE.findall(text) == ["CEST"]


async def test_alerts_and_triage_show_each_patients_own_zone(world: World, login: Login) -> None:
    paris_world(world)
    world.clock.current = JULY
    # pat-c is in UTC (the default): its alert at the same instant reads 12:00 UTC
    world.model.alerts_by_id["al-c"] = alert(
        "al-c", "pat-c", AlertKind.LOW, AlertLevel.URGENT, at=ALERT_AT, glucose=61.0
    )
    clinician = await login("dr-grant")
    alerts = await (await clinician.get("/alerts")).text()
    assert "2026-07-01 14:00 CEST" in alerts
    assert "2026-07-01 12:00 UTC" in alerts
    assert "30 min ago" in alerts
    triage = await (await clinician.get("/")).text()
    assert "4 min ago" in triage
    assert "2026-07-01 14:26 CEST" in triage


async def test_ledger_times_say_utc(world: World, login: Login) -> None:
    clinician = await login("dr-grant")
    text = await (await clinician.get("/ledger")).text()
    # the fakes seal batches at NOW - 1 h = 2026-01-15T11:00Z
    assert "2026-01-15 11:00 UTC" in text
