"""An uploaded bolus reaches the predicted-low forecast on the real hub (run_hub: real SQLite,
pipeline and alert engine): the same falling CGM raises the predicted low for the patient
whose insulin is on board and not (yet) for one without recorded treatments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import aiohttp

from gateway.clinical.treatment_effect import EffectModel, insulin_acted
from gateway.model import AlertKind
from tests.dashboards.nightscout import test_api
from tests.dashboards.nightscout.test_api import (
    Hub,
    alert_kinds,
    sha1,
    stored,
    xdrip_sgv,
    xdrip_upload,
)
from tests.dashboards.nightscout.test_treatments_api import iso, ms

hub = test_api.hub  # the real hub with p1's and p2's secrets (a fixture)

BOLUS_U = 7.0
# What the glucose of someone given 7 U does with 20 mg/dL per unit, read 8 minutes late:
# 160 down to 20 over the insulin's action, on the published rapid-acting curve (oref0).
CURVE = EffectModel(insulin_peak_min=75.0, insulin_duration_min=360.0)


def falling_after_bolus(now: datetime, bolus_at: datetime) -> list[dict[str, object]]:
    entries = []
    for i in range(48):  # four hours, the last reading now
        at = now - timedelta(minutes=5 * (47 - i))
        since = (at - bolus_at).total_seconds() / 60 - 8
        sgv = round(160 - 20 * BOLUS_U * insulin_acted(since, CURVE))
        entries.append(xdrip_sgv(at, sgv, "NONE"))
    return entries


async def test_a_bolus_uploaded_before_the_readings_brings_the_predicted_low_forward(
    hub: Hub,
) -> None:
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
    bolus_at = now - timedelta(minutes=115)
    # AndroidAPS BolusExtension.toJson for a correction (nightscout/AndroidAPS, public source).
    bolus = {
        "eventType": "Correction Bolus",
        "insulin": BOLUS_U,
        "created_at": iso(bolus_at),
        "date": ms(bolus_at),
        "type": "NORMAL",
        "isSMB": False,
        "isValid": True,
    }
    entries = falling_after_bolus(now, bolus_at)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{hub.url}/api/v1/treatments",
            json=[bolus],
            headers={"api-secret": sha1(hub.secrets["p1"])},
        ) as response:
            assert response.status == 200
        for patient in ("p1", "p2"):
            assert (await xdrip_upload(http, hub, hub.secrets[patient], entries))[0] == 200
    # Now 92 mg/dL, down about 0.8 mg/dL/min: the CGM alone does not (yet) call that a low;
    # the insulin still to act says blood glucose is below 70 within 35 minutes (below 70
    # once 64 % has acted, about 150 minutes after the bolus, half an hour from now).
    assert entries[-1]["sgv"] == 92
    async with asyncio.timeout(10):
        while AlertKind.PREDICTED_LOW not in await alert_kinds(hub, "p1"):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    assert len(await stored(hub, "p2")) == 48  # p2's readings went through the engine too
    assert AlertKind.PREDICTED_LOW not in await alert_kinds(hub, "p2")
