"""Every consensus metric of `glucohub report` equals an independent recomputation from
`glucohub export`, and the FHIR CGM summary agrees (issue 13, "Done when").

A real hub (SQLite, ledger, dashboard) holds 14 days of a 5-minute CGM and a meter for one
patient; some fingersticks share a CGM reading's timestamp. The recomputation below is written
from the published definitions, not from `gateway.clinical.metrics`:

- Battelino 2019 (Diabetes Care 42:1593): bands < 54, 54–69, 70–180, 181–250, > 250 mg/dL as
  % of CGM readings; mean, SD (sample), CV = SD / mean; GMI % = 3.31 + 0.02392 × mean (Bergenstal
  2018); ≥ 14 days with ≥ 70 % of possible CGM readings is sufficient data.
- Kovatchev 2006: f(g) = 1.509 × (ln(g)^1.084 − 5.381), risk 10 f²; LBGI/HBGI = mean low/high
  risk.
- Klonoff 2022: GRI = 3.0 VLow + 2.4 Low + 1.6 VHigh + 0.8 High, capped at 100.
- Battelino 2023 (Lancet Diabetes Endocrinol 11:42): an episode starts with ≥ 15 consecutive
  minutes beyond the threshold and ends with ≥ 15 consecutive minutes back; level 1 < 70 /
  > 180, level 2 < 54 / > 250 mg/dL.

The trace is a regular 5-minute grid with gaps of 30 minutes and 2 hours only, so each CGM
reading stands for 5 minutes and the per-reading formulas (as iglu computes them) apply.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dashboards import fhir
from gateway.clock import parse_rfc3339
from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.protocols import Origin
from gateway.settings import Settings, load_settings
from gateway.store import DB_FILENAME, Store
from gateway.units import Unit
from glucohub import accounts as hub_accounts
from glucohub.cli import main
from glucohub.runtime import Running, run_hub

PASSWORD = "a long enough password"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
STEP_MIN = 5


# ---------------------------------------------------------------- the hub's data


def cgm_trace(end: datetime) -> list[tuple[datetime, float]]:
    """14 days on a 5-minute grid ending at `end`: a daily rhythm plus an AR(1) wander, with a
    30-minute gap inside a low spell and a 2-hour sensor change."""
    rng = random.Random(13)
    start = end - timedelta(days=14) + timedelta(minutes=STEP_MIN)
    out: list[tuple[datetime, float]] = []
    wander = 0.0
    for i in range(14 * 288):
        t = start + timedelta(minutes=STEP_MIN * i)
        wander = 0.93 * wander + rng.gauss(0, 11)
        daily = 45 * math.sin(2 * math.pi * (i % 288) / 288) + 25 * math.sin(6 * math.pi * i / 288)
        out.append((t, float(round(min(400.0, max(40.0, 135 + daily + wander))))))
    low_spell = 3 * 288 + 40  # day 3: 25 min low, 30 min silent, 25 min low
    for k in range(low_spell, low_spell + 17):
        out[k] = (out[k][0], 62.0)
    del out[low_spell + 5 : low_spell + 11]  # six readings missing: a 35-minute interval
    sensor_change = 9 * 288
    del out[sensor_change : sensor_change + 24]
    return out


def fingersticks(cgm: list[tuple[datetime, float]]) -> list[tuple[datetime, float]]:
    """Four a day, each at a CGM reading's time, reading 35 mg/dL below it (at least 40); and
    one 163 beside a CGM 277."""
    sticks = [(t, max(40.0, g - 35)) for i, (t, g) in enumerate(cgm) if i % 72 == 0]
    when = cgm[1000][0]
    cgm[1000] = (when, 277.0)
    sticks.append((when, 163.0))
    return sticks


def reading(kind: ReadingKind, device: str, seq: int, t: datetime, g: float) -> Reading:
    return Reading(patient_id="p1", device_id=device, kind=kind, value=g, unit=Unit.MG_DL,
                   time=t, source=Source.MQTT, seq=seq)  # fmt: skip


@pytest.fixture
def hub_dir(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    store.add_patient(Patient(patient_id="p1", display_name="Ann", timezone="Europe/Paris"))
    for device, kind in (("cgm-1", DeviceKind.CGM), ("meter-1", DeviceKind.METER)):
        store.add_device(
            Device(device_id=device, patient_id="p1", kind=kind, transport=Transport.MQTT)
        )
    store.close()
    hub_accounts.users_add(tmp_path / DB_FILENAME, "dr", "clinician", PASSWORD)
    hub_accounts.grant(tmp_path / DB_FILENAME, "p1", "dr")
    end = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
    cgm = cgm_trace(end)
    sticks = fingersticks(cgm)
    readings = [
        reading(ReadingKind.CGM_GLUCOSE, "cgm-1", i, t, g) for i, (t, g) in enumerate(cgm)
    ] + [reading(ReadingKind.GLUCOSE, "meter-1", i, t, g) for i, (t, g) in enumerate(sticks)]

    async def ingest() -> None:
        stop = asyncio.Event()

        async def source(sink, clock) -> None:  # type: ignore[no-untyped-def]
            outcome = await sink.submit(origin=Origin(source=Source.MQTT), readings=readings)
            assert outcome.accepted == len(readings)
            stop.set()

        await run_hub(settings(tmp_path, dashboard=False), sources=[source], stop=stop)

    asyncio.run(ingest())
    return tmp_path


def settings(data_dir: Path, *, dashboard: bool) -> Settings:
    return load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "true" if dashboard else "false",
            "GLUCOHUB_DASHBOARD__PORT": "0",
        },
    )


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def fhir_summary(data_dir: Path, until: str) -> dict[str, Any]:
    """GET the CGM summary for [until − 14 days, until) from the hub's own dashboard."""

    async def fetch() -> dict[str, Any]:
        ready, stop = asyncio.Event(), asyncio.Event()
        running: list[Running] = []

        def on_ready(r: Running) -> None:
            running.append(r)
            ready.set()

        task = asyncio.create_task(
            run_hub(settings(data_dir, dashboard=True), stop=stop, on_ready=on_ready)
        )
        try:
            await asyncio.wait_for(ready.wait(), 20)
            base = running[0].url
            assert base is not None
            async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as dr:
                async with dr.get(f"{base}/login") as page:
                    token = CSRF_RE.search(await page.text())
                assert token is not None
                form = {"username": "dr", "password": PASSWORD, "csrf_token": token.group(1)}
                async with dr.post(f"{base}/login", data=form) as response:
                    assert response.status == 200
                params = {"patient": "p1", "code": fhir.SUMMARY_LOINC, "date": f"lt{until}"}
                async with dr.get(f"{base}/fhir/Observation", params=params) as response:
                    assert response.status == 200, await response.text()
                    document: dict[str, Any] = json.loads(await response.text())
                    return document
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    return asyncio.run(fetch())


# ---------------------------------------------------------------- the recomputation


def risk(g: float) -> float:
    """Kovatchev 2006: f = 1.509 (ln(g)^1.084 − 5.381); the risk is 10 f² (signed by f)."""
    f = 1.509 * (math.log(g) ** 1.084 - 5.381)
    return math.copysign(10 * f * f, f)


def episode_count(times: list[datetime], values: list[float], beyond: Any) -> int:
    """Battelino 2023 on a 5-minute grid: a missing grid slot breaks "consecutive" on both
    sides and is neither time beyond nor time back (the episode in progress carries on)."""
    count, in_episode, beyond_slots, back_slots = 0, False, 0, 0
    for i, (t, g) in enumerate(zip(times, values, strict=True)):
        if i and t - times[i - 1] != timedelta(minutes=STEP_MIN):
            beyond_slots = back_slots = 0
        if beyond(g):
            beyond_slots, back_slots = beyond_slots + 1, 0
            if not in_episode and beyond_slots * STEP_MIN >= 15:
                in_episode, count = True, count + 1
        else:
            beyond_slots, back_slots = 0, back_slots + 1
            if in_episode and back_slots * STEP_MIN >= 15:
                in_episode = False
    return count


def recompute(rows: list[dict[str, Any]], start: datetime, end: datetime) -> dict[str, float]:
    cgm = sorted(
        (parse_rfc3339(r["time"]), float(r["value"]))
        for r in rows
        if r["kind"] == "cgm_glucose" and start <= parse_rfc3339(r["time"]) <= end
    )
    times = [t for t, _ in cgm]
    g = [v for _, v in cgm]
    n = len(g)
    mean = sum(g) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in g) / (n - 1))

    def pct(test: Any) -> float:
        return 100 * sum(1 for v in g if test(v)) / n

    very_low, low = pct(lambda v: v < 54), pct(lambda v: 54 <= v < 70)
    high, very_high = pct(lambda v: 180 < v <= 250), pct(lambda v: v > 250)
    active = 100 * n * STEP_MIN / ((end - start).total_seconds() / 60)
    return {
        "readings": n,
        "mean_mg_dl": mean,
        "sd_mg_dl": sd,
        "cv_percent": 100 * sd / mean,
        "gmi_percent": 3.31 + 0.02392 * mean,
        "very_low": very_low,
        "low": low,
        "in_range": pct(lambda v: 70 <= v <= 180),
        "high": high,
        "very_high": very_high,
        "below_70_percent": very_low + low,
        "above_180_percent": high + very_high,
        "lbgi": sum(-min(risk(v), 0) for v in g) / n,
        "hbgi": sum(max(risk(v), 0) for v in g) / n,
        "gri": min(100.0, 3.0 * very_low + 2.4 * low + 1.6 * very_high + 0.8 * high),
        "gri_hypo_component": very_low + 0.8 * low,
        "gri_hyper_component": very_high + 0.5 * high,
        "active_percent": active,
        "sufficient": float((end - start) >= timedelta(days=14) and active >= 70),
        "below_70": episode_count(times, g, lambda v: v < 70),
        "below_54": episode_count(times, g, lambda v: v < 54),
        "above_180": episode_count(times, g, lambda v: v > 180),
        "above_250": episode_count(times, g, lambda v: v > 250),
    }


def from_report(metrics: dict[str, Any]) -> dict[str, float]:
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    flat.update({r["name"]: r["percent"] for r in metrics["ranges"]})
    flat.update(metrics["episodes"])
    flat["sufficient"] = float(metrics["sufficient"])
    return flat


# The published LOINC code of each summary value, and the IG's temporary code beside it.
FHIR_CODES = {
    "mean_mg_dl": ("97507-8", "mean-glucose-mass-per-volume"),
    "gmi_percent": ("97506-0", "gmi"),
    "cv_percent": ("104638-2", "cv"),
    "very_low": ("104642-4", "time-in-very-low"),
    "low": ("104641-6", "time-in-low"),
    "in_range": ("97510-2", "time-in-target"),
    "high": ("104640-8", "time-in-high"),
    "very_high": ("104639-0", "time-in-very-high"),
}


def from_fhir(bundle: dict[str, Any]) -> dict[str, float]:
    by_code: dict[str, float] = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        for part in (resource, *resource.get("component", [])):
            quantity = part.get("valueQuantity")
            if quantity is not None:
                for coding in part["code"]["coding"]:
                    by_code[coding["code"]] = float(quantity["value"])
    found = {}
    for name, codes in FHIR_CODES.items():
        values = [by_code[c] for c in codes if c in by_code]
        assert values, f"no FHIR value for {name}"
        found[name] = values[0]
    return found


def close(got: float, want: float, *, plus: float = 0.0) -> bool:
    """Within 0.1 % (and `plus` for a value published rounded)."""
    return abs(got - want) <= 1e-3 * abs(want) + plus + 1e-9


def test_report_and_fhir_equal_an_independent_recomputation_from_export(
    hub_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        json.loads(line)
        for line in cli(
            capsys, "export", "--data-dir", str(hub_dir), "--patient", "p1"
        ).splitlines()
    ]
    assert {r["kind"] for r in rows} == {"cgm_glucose", "glucose"}  # both sources are stored
    out = hub_dir / "report.json"
    cli(capsys, "report", "--data-dir", str(hub_dir), "--patient", "p1", "--format", "json",
        "--out", str(out))  # fmt: skip
    report = json.loads(out.read_text())
    metrics = report["metrics"]
    start, end = parse_rfc3339(metrics["start"]), parse_rfc3339(metrics["end"])
    want = recompute(rows, start, end)
    got = from_report(metrics)
    wrong = {k: (got.get(k), v) for k, v in want.items() if not close(got.get(k, math.nan), v)}
    assert not wrong, wrong
    # The trace exercises every rule: all bands occupied, episodes of both levels.
    assert all(want[b] > 0 for b in ("very_low", "low", "high", "very_high"))
    assert min(want["below_54"], want["above_250"]) > 0 and want["sufficient"] == 1.0
    # Fingersticks are listed apart: every meter row of the window, the 163 among them.
    meter = [r for r in rows if r["kind"] == "glucose" and start <= parse_rfc3339(r["time"])]
    assert report["fingersticks"]["count"] == len(meter) > 0
    assert 163.0 in {f["mg_dl"] for f in report["fingersticks"]["readings"]}

    summary = fhir_summary(hub_dir, metrics["end"])
    # FHIR publishes values rounded to 0.1: allow that rounding on top of 0.1 %.
    for name, value in from_fhir(summary).items():
        assert close(value, want[name], plus=0.05), (name, value, want[name])
        assert close(value, got[name], plus=0.05), (name, value, got[name])
