"""Issue 3's figures: readings sealed per second into the hub's ledger (batches of 1,000,
durable SQLite commit) and `ledger verify` speed over a ledger of 1,000,000 readings, each
against a raw baseline measured in the same run over the same canonical reading bytes: per
batch, one SHA-256 of its readings and one Ed25519 signature of that digest (sign for
sealing, verify for verification) -- the least any signed batch of them costs.

    python -m bench bench_ledger            (GLUCOHUB_BENCH_READINGS=200000 for a quick run)
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.model import Device, DeviceKind, Patient, Reading, ReadingKind, Source, Transport
from gateway.sealing import Sealer, init_keys, load_keys
from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from gateway.units import Unit
from gateway.verify import verify_data_dir

BATCH = 1000


def _fill(store: HubStorage, total: int) -> None:
    store.add_patient(Patient(patient_id="bench", display_name="Bench"))
    store.add_device(
        Device(device_id="cgm", patient_id="bench", kind=DeviceKind.CGM, transport=Transport.BLE)
    )
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for offset in range(0, total, 20_000):
        store.write(
            [
                Reading(
                    patient_id="bench",
                    device_id="cgm",
                    kind=ReadingKind.CGM_GLUCOSE,
                    value=float(70 + i % 180),
                    unit=Unit.MG_DL,
                    time=start + timedelta(minutes=i),
                    source=Source.BLE,
                    seq=i,
                )
                for i in range(offset, min(total, offset + 20_000))
            ]
        )


def _baseline(payloads: list[bytes]) -> tuple[float, float]:
    """Seconds to SHA-256 + sign, and to SHA-256 + verify, each batch's reading bytes."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    t0 = time.perf_counter()
    signatures = [key.sign(hashlib.sha256(p).digest()) for p in payloads]
    t1 = time.perf_counter()
    for p, s in zip(payloads, signatures, strict=True):
        public.verify(s, hashlib.sha256(p).digest())
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def main() -> None:
    total = int(os.environ.get("GLUCOHUB_BENCH_READINGS", "1000000"))
    with tempfile.TemporaryDirectory(prefix="glucohub-bench-") as tmp:
        data_dir = Path(tmp)
        store = open_storage(data_dir)
        t0 = time.perf_counter()
        _fill(store, total)
        store.close()
        print(f"stored {total:,} readings in {time.perf_counter() - t0:.1f} s (setup, not timed)")
        # A fresh connection: every reading is read back to be sealed.
        store = open_storage(data_dir)
        init_keys(data_dir, None)
        keys = load_keys(data_dir, "bench", None)
        sealer = Sealer(store, keys, hub_id="bench", forward=False)
        now = datetime.now(UTC)
        t0 = time.perf_counter()
        while sealer.seal(BATCH, now, sign=False) is not None:
            pass
        sealer.sign_checkpoint(now)  # as the hub does at the end of a backlog
        seal_s = time.perf_counter() - t0
        payloads = [b"".join(store.batch_records(b.seq).canonical) for b in store.batches()]
        store.close()

        t0 = time.perf_counter()
        report = verify_data_dir(data_dir, "bench", workers=os.cpu_count() or 1)
        verify_s = time.perf_counter() - t0
        assert report.ok and report.readings == total, report.message

    sign_s, check_s = _baseline(payloads)
    seal_rate, verify_rate = total / seal_s, total / verify_s
    base_seal, base_verify = total / sign_s, total / check_s
    print(
        f"seal   : {seal_rate:>10,.0f} readings/s  (target >= 100,000)  "
        f"baseline SHA-256+sign {base_seal:>12,.0f}/s  ratio {seal_rate / base_seal:.3f}"
    )
    print(
        f"verify : {verify_rate:>10,.0f} readings/s  (target >= 200,000)  "
        f"baseline SHA-256+verify {base_verify:>10,.0f}/s  ratio {verify_rate / base_verify:.3f}"
    )


if __name__ == "__main__":
    main()
