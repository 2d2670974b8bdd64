"""Hand-worked characteristic values from tests/data/ble/gatt_vectors.json through `decode`."""

import json
from pathlib import Path
from typing import Any

import pytest

from device_adapters.ble.errors import MalformedPayload
from device_adapters.ble.registry import decode

VECTORS = json.loads(
    (Path(__file__).parents[2] / "data" / "ble" / "gatt_vectors.json").read_text()
)["vectors"]


def _subset(expected: Any, actual: Any) -> None:
    if isinstance(expected, dict):
        for key, value in expected.items():
            assert key in actual, key
            _subset(value, actual[key])
    elif isinstance(expected, list):
        assert len(expected) == len(actual)
        for e, a in zip(expected, actual, strict=True):
            _subset(e, a)
    elif isinstance(expected, float):
        assert actual == pytest.approx(expected, rel=1e-12)
    else:
        assert actual == expected


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_vector(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    if vector.get("malformed"):
        with pytest.raises(MalformedPayload):
            decode(vector["uuid"], data)
        return
    _subset(vector["expected"], decode(vector["uuid"], data))


# CGM Measurement and Heart Rate end in variable-length lists (records, RR intervals), so one
# trailing byte there is a truncated next item, covered by the truncation test instead.
@pytest.mark.parametrize(
    "vector",
    [v for v in VECTORS if not v.get("malformed") and v["uuid"] not in ("2AA7", "2A37")],
    ids=lambda v: v["name"],
)
def test_trailing_garbage_is_refused(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"]) + b"\x00"
    with pytest.raises(MalformedPayload):
        decode(vector["uuid"], data)


@pytest.mark.parametrize(
    "vector", [v for v in VECTORS if not v.get("malformed")], ids=lambda v: v["name"]
)
def test_every_truncation_is_refused(vector: dict[str, Any]) -> None:
    data = bytes.fromhex(vector["hex"])
    for cut in range(len(data)):
        prefix = data[:cut]
        try:
            decode(vector["uuid"], prefix)
        except MalformedPayload as exc:
            assert 0 <= exc.offset <= len(prefix)
        else:
            # only formats with optional trailing lists can legally stop early
            assert vector["uuid"] in ("2A37", "2AA7"), f"accepted {prefix.hex()}"
