"""Who silences what: through the real routes, the real alert service and a real store, a
patient's acknowledgement or snooze silences only the patient's alarm; the care team's alert
stays raised and escalates until a clinician acknowledges it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dashboards.app import create_app
from gateway.alerting import AlertService
from gateway.clinical.alerts import Thresholds
from gateway.model import Patient, Reading, ReadingKind, Source
from gateway.services import Reader, StoreReadModel
from gateway.settings import DashboardSettings
from gateway.store import Store
from gateway.units import Unit
from tests.dashboards.conftest import csrf_of, login_as
from tests.dashboards.fakes import World

Client = TestClient[web.Request, web.Application]


@dataclass
class Hub:
    store: Store
    alerts: AlertService
    clients: dict[str, Client]

    def ledger_alert_events(self) -> list[dict[str, object]]:
        """The alert transitions waiting to be sealed into the ledger, oldest first."""
        events, _ = self.store.unsealed_events_for_seal(1000)
        bodies = [json.loads(e.canonical) for e in events]
        return [b for b in bodies if b["type"] == "alert"]


@pytest.fixture
async def hub(world: World, tmp_path: Path) -> AsyncIterator[Hub]:
    data = tmp_path / "hub"
    store = Store(data)
    store.add_patient(Patient(patient_id="pat-a", display_name="Alice A."))

    async def writer_run(fn: Callable[[Store], None]) -> None:
        fn(store)

    service = AlertService(
        thresholds=Thresholds(), clock=world.clock, writer_run=writer_run, states={}
    )
    reader = Reader(data)
    app = create_app(
        settings=DashboardSettings(port=0),
        read_model=StoreReadModel(reader),
        live=world.live,
        alerts=service,
        ledger=world.ledger,
        status=world.status,
        accounts=world.accounts,
        clock=world.clock,
    )
    server = TestServer(app)
    await server.start_server()
    clients: dict[str, Client] = {}
    for name in ("alice", "dr-grant"):
        clients[name] = TestClient(server)
        await clients[name].start_server()
        await login_as(clients[name], name)
    yield Hub(store=store, alerts=service, clients=clients)
    for client in clients.values():
        await client.close()
    await server.close()
    reader.close()
    store.close()


def glucose(world: World, mg_dl: float) -> Reading:
    return Reading(
        patient_id="pat-a",
        device_id="meter-a",
        kind=ReadingKind.GLUCOSE,
        value=mg_dl,
        unit=Unit.MG_DL,
        time=world.clock.now(),
        source=Source.VIRTUAL,
    )


async def api_alert(client: Client) -> dict[str, object]:
    response = await client.get("/api/v1/alerts")
    assert response.status == 200
    (alert,) = (await response.json())["alerts"]
    assert isinstance(alert, dict)
    return alert


async def test_patient_acknowledgement_leaves_the_care_team_alert_escalating(
    hub: Hub, world: World
) -> None:
    alice, dr = hub.clients["alice"], hub.clients["dr-grant"]
    (raised,) = await hub.alerts.on_stored([glucose(world, 45.0)], [])
    token = await csrf_of(alice)
    response = await alice.post(
        f"/alerts/{raised.alert_id}/ack", data={"csrf_token": token}, allow_redirects=False
    )
    assert response.status == 303
    # Alice's own view: acknowledged by her (no more alarm). The care team: still raised.
    mine = await api_alert(alice)
    assert (mine["state"], mine["acknowledged_by"]) == ("acknowledged", "alice")
    theirs = await api_alert(dr)
    assert (theirs["state"], theirs["patient_acknowledged_by"]) == ("raised", "alice")
    assert "Acknowledge</button>" in await (await dr.get("/alerts")).text()
    assert "Acknowledge</button>" not in await (await alice.get("/alerts")).text()
    # The ledger says the patient acknowledged, not the care team.
    ack_event = hub.ledger_alert_events()[-1]
    assert (ack_event["patient_acknowledged_by"], ack_event["acknowledged_by"]) == ("alice", None)

    world.clock.current += timedelta(minutes=15)
    (escalated,) = await hub.alerts.tick()
    assert escalated.level.value == "escalated"
    assert (await api_alert(dr))["level"] == "escalated"

    token = await csrf_of(dr)
    response = await dr.post(
        f"/api/v1/alerts/{raised.alert_id}/ack", headers={"X-CSRF-Token": token}
    )
    assert response.status == 200
    assert (await response.json())["acknowledged_by"] == "dr-grant"
    assert (await api_alert(dr))["state"] == "acknowledged"
    ack_event = hub.ledger_alert_events()[-1]
    assert (ack_event["state"], ack_event["acknowledged_by"]) == ("acknowledged", "dr-grant")
    world.clock.current += timedelta(minutes=30)
    assert await hub.alerts.tick() == []


async def test_patient_snooze_does_not_hide_new_urgent_alerts_from_the_care_team(
    hub: Hub, world: World
) -> None:
    alice, dr = hub.clients["alice"], hub.clients["dr-grant"]
    token = await csrf_of(alice)
    response = await alice.post(
        "/patients/pat-a/snooze",
        data={"csrf_token": token, "kind": "urgent_low", "minutes": "1440"},
        allow_redirects=False,
    )
    assert response.status == 303
    world.clock.current += timedelta(minutes=1)
    (raised,) = await hub.alerts.on_stored([glucose(world, 45.0)], [])
    assert (await api_alert(dr))["state"] == "raised"
    assert (await api_alert(alice))["state"] == "acknowledged"  # her alarm stays silent
    world.clock.current += timedelta(minutes=15)
    (escalated,) = await hub.alerts.tick()
    assert (escalated.alert_id, escalated.level.value) == (raised.alert_id, "escalated")
