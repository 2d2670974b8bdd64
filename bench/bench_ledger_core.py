"""Micro-benchmark of the ledger core: sealing and verifying format-2 batches of 1,000 readings.

Sealing is the generic path: RFC 8785 of every reading, its salted leaf (`ledger.records`),
the records root, `seal_records`. Verifying opens each JWS in the chain and recomputes the
root from every disclosed record (`verify_disclosed`). Each is printed with the throughput
of a raw baseline over the same canonical reading bytes measured in the same run (one
SHA-256 over a batch's readings + one Ed25519 sign, resp. verify, per batch), and the ratio.

    .venv/bin/python bench/bench_ledger_core.py [--batches 50] [--size 1000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

from ledger.batch import SealedJws, open_batch, seal_records, verify_batch_chain
from ledger.jcs import canonicalize
from ledger.keys import generate_key
from ledger.records import disclose, new_seed, record_leaf_hashes, verify_disclosed

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

    sealed: list[SealedJws] = []
    seeds = [new_seed() for _ in batches]
    texts: list[list[bytes]] = []

    def seal_all() -> None:
        sealed.clear()
        texts.clear()
        for seq, readings in enumerate(batches):
            canonical = [canonicalize(r) for r in readings]
            texts.append(canonical)
            sealed.append(
                seal_records(
                    hub_id="bench-hub",
                    batch_seq=seq,
                    start=readings[0]["time"],
                    end=readings[-1]["time"],
                    record_leaf_hashes=record_leaf_hashes(seeds[seq], canonical),
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
        assert summary.records == total
        for jws in jws_list:
            payload = open_batch(jws, public)
            assert payload.records_root is not None
            verify_disclosed(payload.records_root, payload.record_count, disclosed[jws])

    seal_s = best_of(args.repeat, seal_all)
    jws_list.extend(s.jws for s in sealed)
    disclosed = {
        jws: disclose(seed, canonical, range(len(canonical)), with_paths=False)
        for jws, seed, canonical in zip(jws_list, seeds, texts, strict=True)
    }
    verify_s = best_of(args.repeat, verify_all)
    canon_s = best_of(args.repeat, canonicalize_all)

    # Raw baselines over the same canonical reading bytes: hash a batch, sign/verify once.
    messages = [b"".join(t) for t in texts]
    signatures = [key.sign(hashlib.sha256(m).digest()) for m in messages]

    def raw_sign() -> None:
        for m in messages:
            key.sign(hashlib.sha256(m).digest())

    def raw_verify() -> None:
        for m, s in zip(messages, signatures, strict=True):
            public.verify(s, hashlib.sha256(m).digest())

    raw_sign_s = best_of(args.repeat, raw_sign)
    raw_verify_s = best_of(args.repeat, raw_verify)
    avg_bytes = sum(len(m) for m in messages) / len(messages)

    def rate(seconds: float) -> float:
        return total / seconds

    print(
        f"{args.batches} batches x {args.size} readings, {avg_bytes / 1024:.0f} KiB of records each"
    )
    print(f"canonicalize        {rate(canon_s):>12,.0f} readings/s")
    print(
        f"seal (JCS+records)  {rate(seal_s):>12,.0f} readings/s   "
        f"raw SHA-256+sign   {rate(raw_sign_s):>12,.0f}/s   ratio {raw_sign_s / seal_s:.3f}"
    )
    print(
        f"verify chain+records{rate(verify_s):>12,.0f} readings/s   "
        f"raw SHA-256+verify {rate(raw_verify_s):>12,.0f}/s   ratio {raw_verify_s / verify_s:.3f}"
    )


if __name__ == "__main__":
    main()
