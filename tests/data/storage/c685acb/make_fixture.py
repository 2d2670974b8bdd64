"""Make the c685acb database fixture (run with commit c685acb's code, never by the tests).

    git worktree add --detach /tmp/c685 c685acb
    cd /tmp/c685 && PYTHONPATH=/tmp/c685 python /path/to/make_fixture.py /tmp/c685-data

Registers two patients with a device each, a clinician and a patient account, a consent
grant and an API token (through c685acb's CLI), then runs c685acb's hub in-process: 48
readings sealed into format-1 batches of at most 10 with a signed checkpoint, an urgent low
alert acknowledged by the clinician, and one dead letter.
"""

from __future__ import annotations

import asyncio
import io
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.cli import main
from gateway.model import Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.runtime import Running, run_hub
from gateway.settings import load_settings
from gateway.units import Unit

PASSWORD = "correct horse battery staple"
# The last readings are a few minutes old, so the alert engine acts on them.
START = (datetime.now(UTC) - timedelta(minutes=5 * 36)).replace(second=0, microsecond=0)


def cli(data_dir: Path, *argv: str, stdin: str = "") -> str:
    sys.stdin = io.StringIO(stdin)
    out = io.StringIO()
    sys.stdout, real = out, sys.stdout
    try:
        code = main([*argv, "--data-dir", str(data_dir)])
    finally:
        sys.stdout = real
    assert code == 0, (argv, code)
    return out.getvalue()


def reading(patient: str, device: str, kind: ReadingKind, seq: int, value: float) -> Reading:
    return Reading(
        patient_id=patient,
        device_id=device,
        kind=kind,
        value=value,
        unit=Unit.MG_DL,
        time=START + timedelta(minutes=5 * seq),
        source=Source.MQTT,
        seq=seq,
    )


async def run(data_dir: Path) -> None:
    settings = load_settings(
        None,
        {
            "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
            "GLUCOHUB_DASHBOARD__ENABLED": "false",
            "GLUCOHUB_LEDGER__BATCH_MAX_READINGS": "10",
            "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
            "GLUCOHUB_PIPELINE__MAX_PAST_AGE_DAYS": "3650",
        },
    )
    ready, stop = asyncio.Event(), asyncio.Event()
    running: list[Running] = []

    def on_ready(r: Running) -> None:
        running.append(r)
        ready.set()

    task = asyncio.create_task(run_hub(settings, stop=stop, on_ready=on_ready))
    await asyncio.wait_for(ready.wait(), 10)
    hub = running[0].hub
    cgm = [140.0 - 2 * i for i in range(24)] + [45.0] * 12  # ends in an urgent low
    for start in range(0, len(cgm), 6):
        await hub.submit(
            origin=Origin(source=Source.MQTT, topic="glucohub/v1/p1/cgm-1/readings", raw=b"{}"),
            readings=[
                reading("p1", "cgm-1", ReadingKind.CGM_GLUCOSE, seq, cgm[seq])
                for seq in range(start, min(start + 6, len(cgm)))
            ],
        )
    await hub.submit(
        origin=Origin(source=Source.MQTT, topic="glucohub/v1/p2/meter-2/readings", raw=b"{}"),
        readings=[
            reading("p2", "meter-2", ReadingKind.GLUCOSE, seq, 120.0 + seq) for seq in range(12)
        ],
    )
    # Validation refuses 5 mg/dL (out of range): a dead letter.
    await hub.submit(
        origin=Origin(
            source=Source.MQTT, topic="glucohub/v1/p2/meter-2/readings", raw=b'{"value": 5}'
        ),
        readings=[reading("p2", "meter-2", ReadingKind.GLUCOSE, 99, 5.0)],
    )
    alerts = running[0].alerts
    for _ in range(100):
        raised = alerts.open_alerts("p1")
        if raised:
            break
        await asyncio.sleep(0.1)
    assert raised, "no alert raised"
    await alerts.acknowledge(raised[0].alert_id, by="dr-ada")
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(task, 30)


def make(data_dir: Path) -> None:
    cli(data_dir, "patients", "add", "p1", "--name", "Ada Patient")
    cli(data_dir, "patients", "add", "p2", "--name", "Bo Patient")
    cli(data_dir, "devices", "add", "cgm-1", "--patient", "p1", "--kind", "cgm",
        "--transport", "mqtt")  # fmt: skip
    cli(data_dir, "devices", "add", "meter-2", "--patient", "p2", "--kind", "meter",
        "--transport", "mqtt")  # fmt: skip
    cli(data_dir, "users", "add", "dr-ada", "--role", "clinician", "--password-stdin",
        stdin=PASSWORD + "\n")  # fmt: skip
    cli(data_dir, "users", "add", "ada", "--role", "patient", "--patient", "p1",
        "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
    cli(data_dir, "users", "grant", "dr-ada", "--patient", "p1")
    token = cli(data_dir, "users", "token", "dr-ada", "--label", "fixture").strip()
    (data_dir / "api-token.txt").write_text(token.split()[-1] + "\n")
    asyncio.run(run(data_dir))


if __name__ == "__main__":
    make(Path(sys.argv[1]))
