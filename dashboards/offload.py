"""Reports and FHIR summaries computed in a worker process, off the event loop.

Rendering a 30-day AGP report is numpy and pure-Python work that holds the GIL, so a thread
would still stall the loop that serves the dashboards (and, in the hub, sends MQTT
acknowledgements). One spawned worker process does it instead. Where the app is given its
storage's location (`StorageLocation`), the worker reads a report's readings too, over a
read-only connection of its own: decoding 30 days of rows into `Reading`s and pickling them
cost the hub's process more CPU than the report itself did in the worker, time in which the
loop waited for the GIL. Without one (a read model only, as in tests with fakes), the
readings are fetched here in slices and pickled in small chunks with a yield to the loop
between them: pickling 30 days at once would itself block the loop for tens of milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Literal

from aiohttp import web
from markupsafe import Markup

from dashboards import jinja
from dashboards.agp import build_report
from dashboards.agpcharts import page_charts
from dashboards.reportfile import render_report_file
from gateway.clinical.errors import MetricsInputError
from gateway.clinical.metrics import GlucoseMetrics, compute_metrics
from gateway.model import Patient, Reading, ReadingKind, Treatment
from gateway.protocols import CgmSeries, ReadModel
from gateway.storage.contract import HubStorage
from gateway.storage.opening import StorageLocation
from gateway.units import Unit

CHUNK = 500  # readings pickled per slice of loop time (~2 ms)
Samples = Sequence[Reading | tuple[datetime, float]]  # what the report and metrics take
WORKERS = 1
# The worker's CPU priority below the hub's: on a small box (2 cores) a report would otherwise
# take a core from the process forwarding readings to the dashboards and acknowledging MQTT.
# Linux's SCHED_IDLE runs it only on CPU time nothing else wants (a weight of 3 against the
# hub's 1024; nice 10 would still be 110); elsewhere nice 10. Reports may take longer under
# load; live data does not wait for them.
WORKER_NICENESS = 10


def lower_priority() -> None:
    """The worker's initializer: the lowest CPU priority the system offers it."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except OSError:  # a container or policy that forbids it: nice still works
            pass
    os.nice(WORKER_NICENESS)


class _Pool:
    """The app's worker process, started on first use and shut down with the app; `storage`,
    where it reads readings itself (None: they are sent to it)."""

    def __init__(self, storage: StorageLocation | None = None) -> None:
        self.executor: ProcessPoolExecutor | None = None
        self.storage = storage

    def get(self) -> ProcessPoolExecutor:
        if self.executor is None:
            # spawn, not fork: the hub has threads (SQLite, MQTT) whose locks a fork would copy.
            self.executor = ProcessPoolExecutor(
                max_workers=WORKERS,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=lower_priority,
            )
        return self.executor

    async def close(self, _app: web.Application) -> None:
        if self.executor is not None:
            await asyncio.to_thread(self.executor.shutdown, wait=True, cancel_futures=True)
            self.executor = None


POOL = web.AppKey("offload_pool", _Pool)


def install(app: web.Application, storage: StorageLocation | None = None) -> None:
    pool = _Pool(storage)
    app[POOL] = pool
    app.on_cleanup.append(pool.close)


async def _run(app: web.Application, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    pool = app[POOL].get()
    return await asyncio.get_running_loop().run_in_executor(pool, partial(fn, *args, **kwargs))


FETCH_SLICE = timedelta(hours=12)  # ~150 CGM readings: a few ms of row decoding per query


async def fetch_in_slices(
    read_model: ReadModel,
    patient_id: str,
    *,
    since: datetime,
    until: datetime,
    kinds: Sequence[ReadingKind],
) -> list[Reading]:
    """The readings from `since` on, as several short queries up to `until` and a last one
    for the rest, rather than one long query.

    The store decodes rows into `Reading`s on a thread, holding the GIL: 30 days at once is
    tens of milliseconds during which every step of the event loop (each MQTT message, each
    WebSocket send) waits for the GIL. Short queries leave it free in between.
    """
    found: list[Reading] = []
    start = since
    while True:
        end = start + FETCH_SLICE
        if end >= until:
            found.extend(await read_model.readings(patient_id, since=start, kinds=kinds))
            return found
        part = await read_model.readings(patient_id, since=start, until=end, kinds=kinds)
        found.extend(r for r in part if r.time < end)  # whichever bound a store includes
        start = end
        await asyncio.sleep(0)  # a store that answers without waiting still lets the loop run


async def _packed(readings: Sequence[Reading]) -> list[bytes]:
    chunks = []
    for start in range(0, len(readings), CHUNK):
        chunks.append(pickle.dumps(readings[start : start + CHUNK], pickle.HIGHEST_PROTOCOL))
        await asyncio.sleep(0)
    return chunks


def _unpacked(chunks: Sequence[bytes]) -> list[Reading]:
    return [r for chunk in chunks for r in pickle.loads(chunk)]


_STORES: dict[StorageLocation, HubStorage] = {}  # the worker's read-only connections, kept


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """Readings the worker reads itself: the patient's, of `kinds`, from `since` on (what
    `fetch_in_slices` gives). CGM readings come as `(time, mg/dL)` pairs, which is all the
    report takes of them (`gateway.clinical.metrics`), without building 8,640 `Reading`s."""

    storage: StorageLocation
    patient_id: str
    since: datetime
    kinds: tuple[ReadingKind, ...]

    def load(self) -> Samples:
        store = _STORES.get(self.storage)
        if store is None:
            store = _STORES[self.storage] = self.storage.open(read_only=True)
        found: list[Reading | tuple[datetime, float]] = []
        others = [k for k in self.kinds if k is not ReadingKind.CGM_GLUCOSE]
        try:
            if ReadingKind.CGM_GLUCOSE in self.kinds:
                found += store.reading_points(
                    patient_id=self.patient_id, since=self.since, kind=ReadingKind.CGM_GLUCOSE
                )
            if others:
                found += store.readings(patient_id=self.patient_id, since=self.since, kinds=others)
        except BaseException:
            del _STORES[self.storage]  # a dropped connection: the next report opens another
            store.close()
            raise
        return found


@dataclass(frozen=True, slots=True)
class Packed:
    """Readings the hub read and pickled in chunks (`_packed`)."""

    chunks: tuple[bytes, ...]

    def load(self) -> Samples:
        return _unpacked(self.chunks)


Source = Stored | Packed


async def source(
    app: web.Application,
    read_model: ReadModel,
    patient_id: str,
    *,
    since: datetime,
    until: datetime,
    kinds: Sequence[ReadingKind],
) -> Source:
    """Where the worker finds the patient's readings from `since` on: the store itself when the
    app knows where it is, else the readings fetched here (`fetch_in_slices`) and packed."""
    storage = app[POOL].storage
    if storage is not None:
        return Stored(storage=storage, patient_id=patient_id, since=since, kinds=tuple(kinds))
    found = await fetch_in_slices(read_model, patient_id, since=since, until=until, kinds=kinds)
    return Packed(tuple(await _packed(found)))


def _render(
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    fmt: str,
    unit: Unit,
    treatments: Sequence[Treatment],
) -> bytes:
    return render_report_file(
        patient,
        readings.load(),
        days=days,
        now=now,
        fmt=fmt,  # type: ignore[arg-type]
        unit=unit,
        treatments=treatments,
    )


def _report_page(
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    unit: Unit,
    treatments: Sequence[Treatment],
    day_choices: Sequence[int],
) -> str:
    report = build_report(
        patient, readings.load(), days=days, now=now, unit=unit, treatments=treatments
    )
    context = {"r": report, "charts": page_charts(report), "day_choices": day_choices}
    return jinja.render("agp_article.html", context)


def _report_pdf(
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    unit: Unit,
    treatments: Sequence[Treatment],
) -> bytes:
    from dashboards.agppdf import render_pdf  # fpdf2 and Pillow load in the worker only

    report = build_report(
        patient, readings.load(), days=days, now=now, unit=unit, treatments=treatments
    )
    return render_pdf(report)


def _metrics(
    readings: Source, *, now: datetime, days: int, timezone: str, patient_id: str
) -> GlucoseMetrics:
    return compute_metrics(
        readings.load(), now=now, days=days, timezone=timezone, patient_id=patient_id
    )


async def report(
    app: web.Application,
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    fmt: Literal["html", "pdf", "json"],
    unit: Unit,
    treatments: Sequence[Treatment] = (),
) -> bytes:
    """`dashboards.reportfile.render_report_file` in the worker process (its errors re-raised)."""
    result: bytes = await _run(
        app, _render, patient, readings, days=days, now=now, fmt=fmt, unit=unit,
        treatments=list(treatments),
    )  # fmt: skip
    return result


async def metrics(
    app: web.Application,
    readings: Sequence[Reading],
    *,
    now: datetime,
    days: int,
    timezone: str,
    patient_id: str,
) -> GlucoseMetrics:
    """`compute_metrics` in the worker process (its errors re-raised)."""
    packed = Packed(tuple(await _packed(readings)))
    result: GlucoseMetrics = await _run(
        app, _metrics, packed, now=now, days=days, timezone=timezone, patient_id=patient_id
    )
    return result


async def report_page(
    app: web.Application,
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    unit: Unit,
    day_choices: Sequence[int],
    treatments: Sequence[Treatment] = (),
) -> Markup:
    """The AGP report page's article (`templates/agp_article.html`, autoescaped, its drawings
    inline), made in the worker: the loop only places it in the page's frame."""
    result: str = await _run(
        app, _report_page, patient, readings, days=days, now=now, unit=unit,
        treatments=list(treatments), day_choices=tuple(day_choices),
    )  # fmt: skip
    return Markup(result)


async def report_pdf(
    app: web.Application,
    patient: Patient,
    readings: Source,
    *,
    days: int,
    now: datetime,
    unit: Unit,
    treatments: Sequence[Treatment] = (),
) -> bytes:
    """The AGP report as PDF (`dashboards.agppdf`), made in the worker; `MissingFont` when
    its fonts are not installed."""
    result: bytes = await _run(
        app, _report_pdf, patient, readings, days=days, now=now, unit=unit,
        treatments=list(treatments),
    )  # fmt: skip
    return result


Shares = dict[str, tuple[float, float]]


def _frame(series: Sequence[CgmSeries]) -> Any:
    """`metrics_for_many`'s frame: the patients as a categorical over their ids."""
    import numpy as np
    import pandas as pd

    times = [np.frombuffer(s.times_us, ">i8").astype(np.int64) for s in series]
    values = [np.frombuffer(s.values, ">f8").astype(np.float64) for s in series]
    codes = np.repeat(np.arange(len(series), dtype=np.int32), [len(t) for t in times])
    ids = pd.Index([s.patient_id for s in series])
    return pd.DataFrame(
        {
            "patient_id": pd.Categorical.from_codes(codes, categories=ids),
            "time": pd.to_datetime(np.concatenate(times), unit="us", utc=True),
            "glucose_mg_dl": np.concatenate(values),
        }
    )


def _shares_table(frame: Any, now: datetime, days: int) -> Shares:
    from gateway.clinical.metrics import metrics_for_many

    table = metrics_for_many(frame, now=now, days=days)
    found = table[table["readings"] > 0]
    below = (found["very_low_percent"] + found["low_percent"]).tolist()
    in_range = found["in_range_percent"].tolist()
    return {
        str(pid): (float(b), float(r))
        for pid, b, r in zip(found.index.tolist(), below, in_range, strict=True)
    }


def _shares(series: Sequence[CgmSeries], *, now: datetime, days: int) -> Shares:
    if not series:
        return {}
    try:
        return _shares_table(_frame(series), now, days)
    except MetricsInputError:
        pass  # one patient's unusable values: the others still get theirs
    found: Shares = {}
    for one in series:
        with contextlib.suppress(MetricsInputError):
            found.update(_shares_table(_frame([one]), now, days))
    return found


async def cgm_shares(
    app: web.Application, series: Sequence[CgmSeries], *, now: datetime, days: int
) -> Shares:
    """patient -> (% of CGM time below 70 mg/dL, % in range 70-180) over `[now − days, now]`
    for each patient with CGM readings in it: `metrics_for_many` in the worker process, the
    same numbers `compute_metrics` gives patient by patient. A patient whose values the
    metrics refuse is left out (and, batched with others, costs them one pass each)."""
    result: Shares = await _run(app, _shares, list(series), now=now, days=days)
    return result
