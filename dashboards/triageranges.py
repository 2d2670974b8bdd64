"""The triage list's 14-day shares (% below 70 mg/dL, % in range), kept in the store's triage
summaries by a background task instead of being computed per request.

The shares need every CGM reading of 14 days and the time weights of
`gateway.clinical.metrics` (each reading holds until the next, gaps not filled): no running
sum gives them exactly as the window moves. So they are recomputed when due: after new
glucose arrived, at most every `CHANGED_EVERY_S` per patient (a 14-day share moves by well
under a percentage point in that time), and otherwise every `MOVED_EVERY_S` as old readings
leave the window. A patient whose shares were never computed (new, or just migrated) gets
them when their row is first shown.

Patients are refreshed `BATCH` at a time: their CGM readings read packed (`CgmSeries`: two
bytes objects a patient, so no object per reading is made on the event loop's process),
and `metrics_for_many` (the vectorised twin of the `compute_metrics` the patient
page and the report use) run once over all of them in the report worker process; the
shares are stored in one transaction. Where several dashboard processes share one database
(the clinic) only one refreshes at a time: each batch runs under the store's refresh claim
(a PostgreSQL advisory lock), and the others find it taken and wait for their next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timedelta

from aiohttp import web

from dashboards import offload
from dashboards.context import DEPS
from gateway.protocols import TriageRanges, TriageSummary

log = logging.getLogger(__name__)

DAYS = 14
CHANGED_EVERY_S = 300.0
MOVED_EVERY_S = 3600.0
BATCH = 100  # patients refreshed together (~400,000 readings of 14 days at 5 minutes)
FETCH_PATIENTS = 20  # patients per query (~80,000 readings, packed: two bytes objects each)
IDLE_S = 30.0  # pause once none is due


async def refresh(
    app: web.Application, summaries: Sequence[TriageSummary], now: datetime
) -> dict[str, TriageSummary]:
    """Compute and store the shares of `summaries` at `now`; return them with their shares,
    by patient id."""
    if not summaries:
        return {}
    rm = app[DEPS].read_model
    ids = [s.patient.patient_id for s in summaries]
    since = now - timedelta(days=DAYS)
    series = []
    for start in range(0, len(ids), FETCH_PATIENTS):
        series.extend(await rm.cgm_series(ids[start : start + FETCH_PATIENTS], since))
        await asyncio.sleep(0)  # a store that answers without waiting still lets the loop run
    shares = await offload.cgm_shares(app, series, now=now, days=DAYS)
    ranges = []
    for s in summaries:
        below, in_range = shares.get(s.patient.patient_id, (None, None))
        ranges.append(
            TriageRanges(
                patient_id=s.patient.patient_id,
                below_range_pct=below,
                in_range_pct=in_range,
                computed_at=now,
                writes=s.writes,  # read before the readings: a write since leaves it due
            )
        )
    await rm.store_triage_ranges(ranges)
    return {
        r.patient_id: dataclasses.replace(
            s,
            below_range_pct=r.below_range_pct,
            in_range_pct=r.in_range_pct,
            ranges_at=now,
        )
        for s, r in zip(summaries, ranges, strict=True)
    }


async def refresh_due(app: web.Application, *, limit: int = BATCH) -> int:
    """Refresh up to `limit` due summaries; return how many were due (0 as well when another
    dashboard process holds the refresh)."""
    d = app[DEPS]
    rm = d.read_model
    if not await rm.claim_triage_refresh():
        return 0
    try:
        now = d.clock.now()
        due = await rm.triage_ranges_due(
            changed_before=now - timedelta(seconds=CHANGED_EVERY_S),
            computed_before=now - timedelta(seconds=MOVED_EVERY_S),
            limit=limit,
        )
        await refresh(app, due, now)
        return len(due)
    finally:
        await rm.release_triage_refresh()


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
