"""Micro-benchmark of the ledger core: sealing and verifying batches of 1,000 readings.

Prints readings/s for `seal_batch` and `verify_batch_chain`, each with the throughput of a raw
baseline over the same canonical payload bytes measured in the same run (SHA-256 + Ed25519 sign,
resp. SHA-256 + Ed25519 verify), and the ratio ours / baseline.

    .venv/bin/python bench/bench_ledger_core.py [--batches 50] [--size 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

from ledger.batch import SealedBatch, seal_batch, verify_batch_chain
from ledger.jcs import canonicalize
from ledger.keys import generate_key

KINDS = [("cgm_glucose", "mg/dL"), ("glucose", "mg/dL"), ("heart_rate", "bpm")]


def synthetic_readings(n: int, offset: int, rng: random.Random) -> list[dict[str, Any]]:
    """Readings shaped like the hub's reading_to_json (11 short fields)."""
    out = []
    for i in range(offset, offset + n):
        kind, unit = KINDS[i % len(KINDS)]
        mmol = i % 4 == 0
        value = float(rng.randint(40, 400)) if kind != "heart_rate" else float(rng.randint(50, 180))
        out.append(
            {
                "patient_id": f"patient-{i % 7:03d}",
                "device_id": f"dev-{i % 13:04d}",
                "kind": kind,
                "time": f"2024-05-{1 + i // 86400 % 28:02d}T{i // 3600 % 24:02d}:"
                f"{i // 60 % 60:02d}:{i % 60:02d}.000Z",
                "value": value,
                "unit": unit,
                "seq": i,
                "source": "ble",
                "original_value": round(value / 18.01559, 1) if mmol else None,
                "original_unit": "mmol/L" if mmol else None,
                "status": [] if i % 10 else ["device_low_battery"],
            }
        )
    return out


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    key = generate_key()
    public = key.public_key()
    batches = [synthetic_readings(args.size, b * args.size, rng) for b in range(args.batches)]
    total: int = args.batches * args.size

    sealed: list[SealedBatch] = []

    def seal_all() -> None:
        sealed.clear()
        for seq, readings in enumerate(batches):
            sealed.append(
                seal_batch(
                    hub_id="bench-hub",
                    batch_seq=seq,
                    start=readings[0]["time"],
                    end=readings[-1]["time"],
                    readings=readings,
                    prev_jws=sealed[-1].jws if sealed else None,
                    signing_key=key,
                    kid="bench",
                )
            )

    def canonicalize_all() -> None:
        for readings in batches:
            canonicalize({"readings": readings})

    jws_list: list[bytes] = []

    def verify_all() -> None:
        summary = verify_batch_chain(jws_list, public, hub_id="bench-hub")
        assert summary.readings == total

    seal_s = best_of(args.repeat, seal_all)
    jws_list.extend(s.jws for s in sealed)
    verify_s = best_of(args.repeat, verify_all)
    canon_s = best_of(args.repeat, canonicalize_all)

    # Raw baselines over the very bytes that were signed (the JWS signing input).
    signing_inputs = [j.rsplit(b".", 1)[0] for j in jws_list]
    signatures = [key.sign(m) for m in signing_inputs]

    def raw_sign() -> None:
        for m in signing_inputs:
            hashlib.sha256(m).digest()
            key.sign(m)

    def raw_verify() -> None:
        for m, s in zip(signing_inputs, signatures, strict=True):
            hashlib.sha256(m).digest()
            public.verify(s, m)

    raw_sign_s = best_of(args.repeat, raw_sign)
    raw_verify_s = best_of(args.repeat, raw_verify)
    avg_bytes = sum(len(j) for j in jws_list) / len(jws_list)

    def rate(seconds: float) -> float:
        return total / seconds

    print(f"{args.batches} batches x {args.size} readings, JWS {avg_bytes / 1024:.0f} KiB each")
    print(f"canonicalize        {rate(canon_s):>12,.0f} readings/s")
    print(
        f"seal_batch          {rate(seal_s):>12,.0f} readings/s   "
        f"raw SHA-256+sign   {rate(raw_sign_s):>12,.0f}/s   ratio {raw_sign_s / seal_s:.3f}"
    )
    print(
        f"verify_batch_chain  {rate(verify_s):>12,.0f} readings/s   "
        f"raw SHA-256+verify {rate(raw_verify_s):>12,.0f}/s   ratio {raw_verify_s / verify_s:.3f}"
    )


if __name__ == "__main__":
    main()
