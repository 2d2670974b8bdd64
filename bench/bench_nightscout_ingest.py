"""Nightscout uploads against MQTT (issue 16): 288-entry batches per second into the real hub.

One in-process hub (`run_hub`: SQLite, pipeline, ledger, alerts, dashboard) with its own
Mosquitto. The same rows, a day of 5-minute CGM readings per batch, reach it two ways:

1. Nightscout: an uploader POSTs each batch to /api/v1/entries (gzipped, as xDrip+ does) and
   waits for the answer, which comes only once every entry is durable; batches one after the
   other, as one uploader sends them.
2. MQTT: the same batches as one QoS 1 message each (a JSON array of 288 readings) on another
   patient's topic, timed from the first publish until every row is stored.

The figure is Nightscout batches/s over MQTT batches/s (1.0: as fast), the median of TRIALS.

    .venv/bin/python -m bench bench_nightscout_ingest
    .venv/bin/python bench/bench_nightscout_ingest.py [BATCHES]
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import io
import json
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from bench.paho_baseline import prefill
from gateway.model import Device, DeviceKind, Patient, ReadingKind, Transport
from gateway.settings import load_settings
from gateway.store import Store
from gateway.topics import readings_topic
from glucohub.cli import main as cli
from glucohub.runtime import Running, run_hub
from tests.support.mosquitto import Mosquitto

PER_BATCH = 288
TRIALS = 3


def day(end: datetime) -> list[datetime]:
    return [end - timedelta(minutes=5 * i) for i in range(PER_BATCH)]


def entries(times: list[datetime], value: float) -> bytes:
    body = [
        {
            "type": "sgv",
            "device": "xDrip-DexcomG6",
            "date": int(t.timestamp() * 1000),
            "dateString": t.strftime("%Y-%m-%dT%H:%M:%S.000+0000"),
            "sgv": value,
            "direction": "Flat",
            "noise": 1,
        }
        for t in times
    ]
    return gzip.compress(json.dumps(body).encode())


def readings(times: list[datetime], value: float) -> bytes:
    """The MQTT payload: the same rows, with the record number MQTT payloads carry."""
    return json.dumps(
        [
            {
                "kind": "cgm_glucose",
                "value": value,
                "unit": "mg/dL",
                "time": t.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "seq": int(t.timestamp()) // 60,
            }
            for t in times
        ]
    ).encode()


async def stored(running: Running, patient: str) -> int:
    found = await running.read_model.readings(
        patient, since=datetime.now(UTC) - timedelta(days=300), kinds=(ReadingKind.CGM_GLUCOSE,)
    )
    return len(found)


async def trial(
    running: Running, url: str, secret: str, port: int, batches: int, first_day: int
) -> tuple[float, float]:
    """(Nightscout batches/s, MQTT batches/s) for `batches` new days of readings each."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    days = [day(now - timedelta(days=first_day + i)) for i in range(batches)]
    bodies = [entries(times, 120.0) for times in days]
    headers = {
        "api-secret": hashlib.sha1(secret.encode()).hexdigest(),
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with aiohttp.ClientSession() as http:
        start = time.perf_counter()
        for body in bodies:
            async with http.post(f"{url}/api/v1/entries", data=body, headers=headers) as r:
                if r.status != 200:
                    raise RuntimeError(f"upload refused: {r.status} {await r.text()}")
        nightscout = batches / (time.perf_counter() - start)

    topic = readings_topic("bench-mqtt", "cgm-mqtt")
    messages = [("", topic, readings(times, 120.0)) for times in days]
    before = await stored(running, "bench-mqtt")
    start = time.perf_counter()
    await asyncio.to_thread(prefill, port, messages)
    deadline = start + 60.0 + batches
    while (count := await stored(running, "bench-mqtt")) < before + batches * PER_BATCH:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"MQTT: {count - before} of {batches * PER_BATCH} rows stored")
        await asyncio.sleep(0.05)
    mqtt = batches / (time.perf_counter() - start)
    return nightscout, mqtt


async def run(batches: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, Mosquitto(Path(tmp) / "broker") as broker:
        data = Path(tmp) / "data"
        store = Store(data)
        for pid in ("bench-ns", "bench-mqtt"):
            store.add_patient(Patient(patient_id=pid, display_name=pid))
        store.add_device(
            Device(
                device_id="cgm-mqtt",
                patient_id="bench-mqtt",
                kind=DeviceKind.CGM,
                transport=Transport.MQTT,
            )
        )
        store.close()
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            cli(["nightscout", "secret", "--patient", "bench-ns", "--data-dir", str(data)])
        secret = out.getvalue().splitlines()[0].removeprefix("secret: ")
        settings = load_settings(
            None,
            {
                "GLUCOHUB_STORAGE__DATA_DIR": str(data),
                "GLUCOHUB_DASHBOARD__PORT": "0",
                "GLUCOHUB_MQTT__URL": broker.url,
            },
        )
        ready, stop = asyncio.Event(), asyncio.Event()
        holder: list[Running] = []

        def on_ready(running: Running) -> None:
            holder.append(running)
            ready.set()

        task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=on_ready))
        await asyncio.wait_for(ready.wait(), 30)
        running = holder[0]
        assert running.url is not None
        await asyncio.sleep(1.0)  # the MQTT consumer subscribes
        results = []
        try:
            for number in range(TRIALS):
                results.append(
                    await trial(
                        running, running.url, secret, broker.port, batches, number * batches
                    )
                )
        finally:
            stop.set()
            await asyncio.wait_for(task, 60)
    print(
        f"ingest: {batches} batches of {PER_BATCH} CGM readings (a day of 5-minute readings)"
        " per trial, one uploader, each batch durable before the next"
    )
    for number, (ns, mqtt) in enumerate(results, 1):
        print(
            f"  trial {number}: Nightscout {ns:.1f} batches/s ({ns * PER_BATCH:,.0f} readings/s),"
            f" MQTT {mqtt:.1f} batches/s ({mqtt * PER_BATCH:,.0f} readings/s)"
        )
    ratio = statistics.median(ns / mqtt for ns, mqtt in results)
    print(f"Nightscout / MQTT: {ratio:.2f} (median of {TRIALS} trials)")


def main() -> None:
    batches = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    asyncio.run(run(batches))


if __name__ == "__main__":
    main()
