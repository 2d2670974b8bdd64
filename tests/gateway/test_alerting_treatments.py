"""The alert stage keeps the forecast's treatments across a hub restart: it reads the stored
ones (real SQLite) when it starts, so insulin given before the restart still counts."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.alerting import AlertService, recent_treatments
from gateway.clinical.alerts import Thresholds
from gateway.clinical.treatment_effect import EffectModel, insulin_acted
from gateway.model import (
    AlertKind,
    AlertState,
    Patient,
    Reading,
    ReadingKind,
    Source,
    Treatment,
    TreatmentKind,
)
from gateway.store import Store
from gateway.units import Unit

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CURVE = EffectModel(insulin_peak_min=75.0, insulin_duration_min=360.0)


class Clock:
    def __init__(self) -> None:
        self.at = NOW

    def now(self) -> datetime:
        return self.at


def reading(at: datetime, value: float) -> Reading:
    return Reading(
        patient_id="p1",
        device_id="cgm-p1",
        kind=ReadingKind.CGM_GLUCOSE,
        value=value,
        unit=Unit.MG_DL,
        time=at,
        source=Source.MQTT,
    )


async def predicted_lows(store: Store, treatments: dict[str, list[Treatment]]) -> list[datetime]:
    clock = Clock()

    async def writer_run(fn: Callable[[Store], None]) -> None:
        fn(store)

    service = AlertService(
        thresholds=Thresholds(),
        clock=clock,
        writer_run=writer_run,  # type: ignore[arg-type]
        states={},
        treatments=treatments,
    )
    raised = []
    bolus_at = NOW - timedelta(minutes=150)
    # 7 U at about 20 mg/dL per unit, read 8 minutes late: 160 sliding towards 20.
    for minutes in range(-240, 60, 5):
        at = NOW + timedelta(minutes=minutes)
        since = (at - bolus_at).total_seconds() / 60 - 8
        clock.at = at
        value = float(round(160 - 140 * insulin_acted(since, CURVE)))
        for alert in await service.on_stored([reading(at, value)], []):
            if alert.kind is AlertKind.PREDICTED_LOW and alert.state is AlertState.RAISED:
                raised.append(at)
    return raised


async def test_treatments_stored_before_a_restart_feed_the_forecast(tmp_path: Path) -> None:
    store = Store(tmp_path)
    try:
        store.add_patient(Patient(patient_id="p1", display_name="Ann"))
        store.add_treatments(
            [
                Treatment(
                    patient_id="p1",
                    time=NOW - timedelta(minutes=150),
                    kind=TreatmentKind.INSULIN_BOLUS,
                    dedupe_key="aaps-1",
                    source=Source.HTTP,
                    insulin_units=7.0,
                ),
                Treatment(  # older than the forecast looks back: not read
                    patient_id="p1",
                    time=NOW - timedelta(days=20),
                    kind=TreatmentKind.INSULIN_BOLUS,
                    dedupe_key="aaps-0",
                    source=Source.HTTP,
                    insulin_units=1.0,
                ),
            ]
        )
        found = recent_treatments(store, NOW)
        assert [t.dedupe_key for t in found["p1"]] == ["aaps-1"]
        with_them = await predicted_lows(store, found)
        without = await predicted_lows(store, {})
    finally:
        store.close()
    # Blood glucose crosses 70 when 64 % has acted, 150 minutes after the bolus (NOW).
    assert len(with_them) == 1 and with_them[0] <= NOW - timedelta(minutes=20)
    assert without == [] or with_them[0] < without[0]
