"""A real hub process (`python -m tests.device_adapters.ble.hub_with_bad_devices DATA_DIR`) whose
BLE devices include a meter with its clock at the year 9999 and a transport whose backend bug
raises on its first connects, next to a healthy heart-rate strap. Run by test_hub_process.py.

Everything else is the production wiring: `run_hub`, its supervision, logging as `glucohub run`
sets it up, SIGTERM to stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from device_adapters.ble.adapter import BleAdapter
from device_adapters.ble.transport import GattTransport
from device_adapters.ble.virtual import VirtualHeartRateStrap, VirtualMeter
from device_adapters.ble.virtual.meter import meter_record
from device_adapters.virtual.sources import demo_patients
from gateway.clock import Clock, SystemClock
from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.protocols import ReadingSink
from gateway.settings import load_settings
from gateway.store import Store
from gateway.supervision import Backoff
from glucohub.runtime import SourceFactory, run_hub

PATIENT = Patient(patient_id="p-ny", display_name="New York", timezone="America/New_York")
METER = Device(
    device_id="meter-9999", patient_id="p-ny", kind=DeviceKind.METER, transport=Transport.BLE
)
STRAP = Device(
    device_id="hr-ok", patient_id="p-ny", kind=DeviceKind.HEART_RATE, transport=Transport.BLE
)
BUGGY = Device(
    device_id="hr-buggy", patient_id="p-ny", kind=DeviceKind.HEART_RATE, transport=Transport.BLE
)
BUGGY_CONNECTS = 2


class BuggyBackendStrap(VirtualHeartRateStrap):
    """A strap whose backend raises something no adapter expects on its first connects."""

    attempts = 0

    async def connect(self) -> None:
        self.attempts += 1
        if self.attempts <= BUGGY_CONNECTS:
            raise KeyError("backend state lost")
        await super().connect()


def _adapter_source(device: Device, transport: GattTransport) -> SourceFactory:
    async def run(sink: ReadingSink, clock: Clock) -> None:
        adapter = BleAdapter(
            device=device,
            transport=transport,
            sink=sink,
            clock=clock,
            tz=ZoneInfo(PATIENT.timezone),
            reconnect_delays_s=(0.2,),
        )
        await adapter.run()

    return run


def main(data_dir: Path) -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    now = datetime.now(UTC)
    profile = demo_patients(1)[0].profile
    store = Store(data_dir)
    try:
        store.add_patient(PATIENT)
        for device in (METER, STRAP, BUGGY):
            store.add_device(device)
    finally:
        store.close()
    # Fingersticks of yesterday (the meter's wall clock is read in New York time).
    records = [meter_record(seq, now - timedelta(hours=30 - seq), 100 + seq) for seq in (1, 2, 4)]
    # seq 3: the meter's clock says 9999-12-31 23:30 New York time, i.e. 10000-01-01 04:30 UTC
    records.append(meter_record(3, datetime(9999, 12, 31, 23, 30, tzinfo=UTC), 120))
    strap = {
        "start": now,
        "interval_s": 0.5,
        "live_poll_s": 0.1,
        "profile": profile,
        "clock": SystemClock(),
    }
    sources = {
        f"ble:{METER.device_id}": _adapter_source(
            METER, VirtualMeter(records, requires_bonding=False)
        ),
        f"ble:{STRAP.device_id}": _adapter_source(STRAP, VirtualHeartRateStrap(**strap)),
        f"ble:{BUGGY.device_id}": _adapter_source(
            BUGGY, BuggyBackendStrap(address="F0:00:00:00:00:09", **strap)
        ),
    }
    settings = load_settings(None, {**os.environ, "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir)})
    asyncio.run(run_hub(settings, sources=sources, source_backoff=Backoff(first_s=0.3, cap_s=1.0)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
