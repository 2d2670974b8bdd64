"""The running hub's MQTT consumer under bad input (issue 11): a real `glucohub run` process
and a real Mosquitto. Random and mutated payloads never stop the hub, every bad message is
exactly one dead letter, every good reading is stored exactly once, and the ledger verifies.
Oversized messages are kept as a bounded prefix with the whole message's length and hash."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.store import DB_FILENAME, Store
from tests.gateway.test_mqtt_end_to_end import Hub, wait_for
from tests.support.mosquitto import Mosquitto

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PATIENT = "fz-patient"
CGM = f"glucohub/v1/{PATIENT}/fz-cgm/readings"
STRAP = f"glucohub/v1/{PATIENT}/fz-hr/readings"
UNKNOWN = f"glucohub/v1/{PATIENT}/nobody/readings"
STRANGER = "glucohub/v1/someone-else/fz-cgm/readings"
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=6)


def register(data_dir: Path) -> None:
    store = Store(data_dir)
    store.add_patient(Patient(patient_id=PATIENT, display_name="Fuzz"))
    for device_id, kind in (("fz-cgm", DeviceKind.CGM), ("fz-hr", DeviceKind.HEART_RATE)):
        store.add_device(
            Device(device_id=device_id, patient_id=PATIENT, kind=kind, transport=Transport.MQTT)
        )
    store.close()


def reading(seq: int, value: float = 120, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "cgm_glucose",
        "value": value,
        "unit": "mg/dL",
        # bad messages are numbered from 5000: dated like the first good ones, in the past
        # (readings ahead of the hub's clock are tests/glucohub/test_clock_lag.py's)
        "time": (BASE + timedelta(seconds=15 * (seq % 5000))).isoformat(),
        "seq": seq,
    }
    doc.update(changes)
    return doc


def encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


class Client:
    """A QoS 1 publisher that waits for each PUBACK."""

    def __init__(self, broker: Mosquitto) -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="fz-uploader")
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(30)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def query(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{data_dir / DB_FILENAME}?mode=ro", uri=True, timeout=5)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def start_hub(tmp_path: Path, broker: Mosquitto, client: Client) -> tuple[Hub, Path]:
    """A running hub whose subscription exists (the broker queues only for a session)."""
    data_dir = tmp_path / "hub"
    register(data_dir)
    hub = Hub(data_dir, broker)
    hub.start()
    probe = encode(reading(0))

    def probe_stored() -> bool:
        client.publish(CGM, probe)  # repeats are identical replays: dropped, no dead letter
        return bool(query(data_dir, "SELECT 1 FROM readings WHERE seq = 0"))

    wait_for(probe_stored, 60, "the hub's first subscription")
    return hub, data_dir


def stop_hub(hub: Hub) -> int:
    try:
        assert hub.proc is not None and hub.proc.poll() is None, "the hub exited"
        return hub.sigterm()
    finally:
        if hub.proc is not None and hub.proc.poll() is None:
            hub.proc.kill()
            hub.proc.wait()
        hub.log.close()


def bad_messages(rng: random.Random, good: list[bytes]) -> list[tuple[str, bytes, str | None]]:
    """(topic, payload, the reason when it is known by construction)."""
    out: list[tuple[str, bytes, str | None]] = []
    for _ in range(40):  # random bytes that cannot start a JSON document
        noise = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        out.append((CGM, b"\x00" + noise, None))
    for _ in range(40):  # truncated: a proper prefix of a JSON object is never JSON
        text = rng.choice(good)
        out.append((CGM, text[: rng.randrange(0, len(text) - 1)], None))
    controls = [b for b in range(0x20) if b not in b"\t\n\r"]  # those three are whitespace
    for _ in range(30):  # any other control byte is invalid anywhere in JSON text
        text = rng.choice(good)
        cut = rng.randrange(len(text))
        out.append((CGM, text[:cut] + bytes([rng.choice(controls)]) + text[cut:], None))
    seq = 5000
    for field, value in [
        ("seq", 2**53),
        ("seq", 2**63 - 1),
        ("seq", 10**30),
        ("seq", -1),
        ("seq", "7"),
        ("seq", 1.5),
        ("value", 10**400),
        ("value", "120"),
        ("value", None),
        ("kind", 5),
        ("kind", "ketone"),
        ("unit", "furlongs"),
        ("time", "2026-02-30T00:00:00Z"),
        ("time", BASE.isoformat() + "\n"),
        ("status", "calibrated"),
        ("status", [1]),
        ("status", ["low,battery"]),
        ("status", ["x" * 65]),
        ("time_offset_s", 10**12),
    ]:
        seq += 1
        doc = reading(seq)
        doc[field] = value
        out.append((CGM, encode(doc), None))
    for literal in (b"NaN", b"Infinity", b"-Infinity"):
        text = encode(reading(seq := seq + 1)).replace(b'"value": 120', b'"value": ' + literal)
        out.append((CGM, text, None))
    out.append((CGM, b"[" * 30_000 + b"]" * 30_000, None))  # deep nesting, under 64 KiB
    out.append((CGM, b'{"kind":' * 7_000, None))
    out.append((CGM, b"", None))
    out.append((CGM, b"[]", None))
    two = [reading(seq := seq + 1), reading(seq + 1, value=5000)]
    out.append((CGM, encode(two), "out_of_range"))
    out.append((CGM, encode(reading(seq := seq + 2, value=5)), "out_of_range"))
    out.append((UNKNOWN, encode(reading(seq := seq + 1)), "unknown_device"))
    out.append((STRANGER, encode(reading(seq := seq + 1)), "wrong_patient"))
    out.append((STRAP, encode(reading(seq := seq + 1)), "kind_mismatch"))
    big = encode(reading(seq := seq + 1, status=["x" * 64] * 1200))
    out.append((CGM, big, "oversized"))
    return out


def test_random_and_mutated_payloads_never_stop_the_hub(tmp_path: Path) -> None:
    rng = random.Random(20261206)
    good_docs = [reading(seq, value=rng.randrange(60, 300)) for seq in range(1, 121)]
    good = [encode(doc) for doc in good_docs[:100]]
    good.append(encode(good_docs[100:120]))  # an array of 20, all good
    replays = rng.sample(good[:100], 10)  # identical: duplicates, dropped silently
    conflicts = [  # the same seqs with other values and times: a counter that reset
        encode(reading(doc["seq"], value=doc["value"] + 1, time=BASE.isoformat()))
        for doc in good_docs[1:6]
    ]
    bad = bad_messages(rng, good)
    bad += [(CGM, text, "conflict") for text in conflicts]
    traffic: list[tuple[str, bytes]] = [(CGM, text) for text in good]
    traffic += [(topic, text) for topic, text, _ in bad[:-5]]
    rng.shuffle(traffic)
    traffic += [(CGM, text) for text in replays]
    traffic += [(topic, text) for topic, text, _ in bad[-5:]]  # conflicts after their originals

    with Mosquitto(tmp_path / "broker") as broker:
        client = Client(broker)
        hub, data_dir = start_hub(tmp_path, broker, client)
        try:
            for topic, payload in traffic:
                client.publish(topic, payload)

            def settled() -> bool:
                (letters,) = query(data_dir, "SELECT COUNT(*) FROM dead_letters")[0]
                (readings,) = query(data_dir, "SELECT COUNT(*) FROM readings")[0]
                return bool(letters >= len(bad) and readings >= 121)

            wait_for(settled, 60, "every message handled")
            time.sleep(1.0)  # anything more (a second dead letter, a double) would show now
        finally:
            client.close()
            code = stop_hub(hub)
    assert code == 0

    seqs = sorted(seq for (seq,) in query(data_dir, "SELECT seq FROM readings"))
    assert seqs == list(range(121)), "every good reading once, and nothing of a bad message"
    letters = query(data_dir, "SELECT reason, payload_sha256 FROM dead_letters")
    assert sorted(sha for _, sha in letters) == sorted(
        hashlib.sha256(text).hexdigest() for _, text, _ in bad
    )
    expected = Counter(reason for _, _, reason in bad if reason is not None)
    found = Counter(reason for reason, _ in letters)
    assert {reason: found[reason] for reason in expected} == expected
    (flags,) = query(data_dir, "SELECT COUNT(*) FROM device_events WHERE kind = 'seq_conflict'")[0]
    assert flags == len(conflicts)
    verify = subprocess.run(
        [sys.executable, "-m", "glucohub", "ledger", "verify", "--data-dir", str(data_dir)],
        capture_output=True,
        text=True,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_an_oversized_message_is_kept_as_a_bounded_dead_letter(tmp_path: Path) -> None:
    """8 MiB in, 4 KiB kept: `glucohub deadletters` shows the whole length and SHA-256."""
    payload = encode(reading(1, status=["abcdefgh" * 8] * 130_000))
    assert len(payload) > 8 * 1024 * 1024
    with Mosquitto(tmp_path / "broker") as broker:
        client = Client(broker)
        hub, data_dir = start_hub(tmp_path, broker, client)
        try:
            client.publish(CGM, payload)
            wait_for(
                lambda: bool(query(data_dir, "SELECT 1 FROM dead_letters")), 60, "a dead letter"
            )
        finally:
            client.close()
            code = stop_hub(hub)
    assert code == 0
    command = ["deadletters", "--format", "jsonl", "--data-dir", str(data_dir)]
    listed = subprocess.run(
        [sys.executable, "-m", "glucohub", *command],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    [letter] = [json.loads(line) for line in listed]
    assert letter["reason"] == "oversized"
    assert letter["payload"] == payload[:4096].decode()
    assert letter["payload_bytes"] == len(payload)
    assert letter["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert letter["payload_truncated"] is True
    database = sum(f.stat().st_size for f in data_dir.glob(f"{DB_FILENAME}*"))
    assert database < 2 * 1024 * 1024, f"{database} bytes of database for one dead letter"
