"""The triage list's 14-day shares (% below 70 mg/dL, % in range), kept in the store's triage
summaries by a background task instead of being computed per request.

The shares need every CGM reading of 14 days and the time weights of
`gateway.clinical.metrics` (each reading holds until the next, gaps not filled): no running
sum gives them exactly as the window moves. So they are recomputed, with the same function
the patient page and the report use, in the report worker process (off the event loop),
when due: after new glucose arrived, at most every `CHANGED_EVERY_S` per patient (a 14-day
share moves by well under a percentage point in that time), and otherwise every
`MOVED_EVERY_S` as old readings leave the window. A patient whose shares were never computed
(new, or just migrated) gets them when their row is first shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import datetime, timedelta

from aiohttp import web

from dashboards import offload
from dashboards.context import DEPS
from gateway.model import ReadingKind
from gateway.protocols import TriageSummary

log = logging.getLogger(__name__)

GLUCOSE_KINDS = (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE)
DAYS = 14
CHANGED_EVERY_S = 300.0
MOVED_EVERY_S = 3600.0
BATCH = 50  # summaries asked for at a time
IDLE_S = 30.0  # pause once none is due


async def refresh(app: web.Application, summary: TriageSummary, now: datetime) -> TriageSummary:
    """Compute and store `summary`'s shares at `now`; return it with them."""
    d = app[DEPS]
    patient = summary.patient
    readings = await offload.fetch_in_slices(
        d.read_model,
        patient.patient_id,
        since=now - timedelta(days=DAYS),
        until=now,
        kinds=GLUCOSE_KINDS,
    )
    below: float | None = None
    in_range: float | None = None
    if readings:
        metrics = await offload.metrics(
            app,
            readings,
            now=now,
            days=DAYS,
            timezone=patient.timezone,
            patient_id=patient.patient_id,
        )
        if metrics.readings:
            below, in_range = metrics.below_70_percent, metrics.range_percent("in_range")
    await d.read_model.set_triage_ranges(
        patient.patient_id,
        below_range_pct=below,
        in_range_pct=in_range,
        computed_at=now,
        writes=summary.writes,  # read before the readings: a write since leaves it due
    )
    return TriageSummary(
        patient=patient,
        latest=summary.latest,
        battery_low=summary.battery_low,
        below_range_pct=below,
        in_range_pct=in_range,
        ranges_at=now,
        writes=summary.writes,
    )


async def refresh_due(app: web.Application, *, limit: int = BATCH) -> int:
    """Refresh up to `limit` due summaries; return how many were due."""
    d = app[DEPS]
    now = d.clock.now()
    due = await d.read_model.triage_ranges_due(
        changed_before=now - timedelta(seconds=CHANGED_EVERY_S),
        computed_before=now - timedelta(seconds=MOVED_EVERY_S),
        limit=limit,
    )
    for summary in due:
        await refresh(app, summary, now)
    return len(due)


async def keep_fresh(app: web.Application) -> AsyncIterator[None]:
    """The app's refresh task (aiohttp cleanup context), for the app's lifetime."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(IDLE_S)  # first pages compute their own rows' missing shares
            try:
                while await refresh_due(app) == BATCH:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("triage shares not refreshed; trying again in %.0f s", IDLE_S)

    task = asyncio.create_task(loop(), name="dashboard-triage-ranges")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
