"""Payload v1 decoding: vectors from tests/data/mqtt, the schema, and random input."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from device_adapters.mqtt.errors import PayloadRejected
from device_adapters.mqtt.payload import (
    ALLOWED_UNITS,
    MAX_PAYLOAD_BYTES,
    MAX_SEQ,
    TIME_PATTERN,
    decode_readings,
)
from gateway.model import (
    CANONICAL_UNIT,
    STATUS_FLAG_PATTERN,
    Device,
    DeviceKind,
    ReadingKind,
    Source,
    Transport,
)
from gateway.protocols import RejectReason
from gateway.storage.rows import (
    reading_canonical_from_row,
    reading_from_row,
    reading_json_from_row,
    reading_to_row,
)
from gateway.units import Unit, to_canonical
from gateway.validation import ValidationRules, validate
from ledger.jcs import canonicalize

DATA = Path(__file__).parents[2] / "data" / "mqtt"
SCHEMA_PATH = Path(__file__).parents[3] / "device_adapters" / "mqtt" / "reading.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
TOPIC = "glucohub/v1/pat-1/cgm-9/readings"
RECEIVED = datetime(2024, 5, 1, 8, 0, 0, tzinfo=UTC)


def _decode(payload: bytes, topic: str = TOPIC) -> Any:
    return decode_readings(topic, payload, received_at=RECEIVED)


def test_single_mmol_reading_is_converted_and_keeps_the_original() -> None:
    decoded = _decode((DATA / "good_mmol_single.json").read_bytes())
    assert (decoded.patient_id, decoded.device_id) == ("pat-1", "cgm-9")
    (reading,) = decoded.readings
    assert reading.kind is ReadingKind.CGM_GLUCOSE
    # 6.1 mmol/L x 18.01559 mg/dL per mmol/L = 109.895099 mg/dL
    assert reading.value == pytest.approx(109.895099)
    assert reading.unit is Unit.MG_DL
    assert (reading.original_value, reading.original_unit) == (6.1, Unit.MMOL_L)
    # 10:00 at +02:00 is 08:00 UTC
    assert reading.time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    assert reading.source is Source.MQTT
    assert reading.seq == 1234
    assert reading.status == ("calibrated",)
    assert (reading.patient_id, reading.device_id) == ("pat-1", "cgm-9")


def test_array_of_mixed_kinds_in_order() -> None:
    readings = _decode((DATA / "good_array_mixed.json").read_bytes()).readings
    assert [r.seq for r in readings] == [7, 8, 9, 10]
    glucose, heart, weight, temperature = readings
    # nanoseconds are truncated to microseconds: .123456789 -> .123456
    assert glucose.time == datetime(2024, 5, 1, 7, 59, 30, 123456, tzinfo=UTC)
    assert glucose.value == 142.0
    # time_offset_s -30 relative to receipt at 08:00:00
    assert heart.time == RECEIVED - timedelta(seconds=30)
    # 150 lb x 0.45359237 kg/lb = 68.0388555 kg
    assert weight.value == pytest.approx(68.0388555)
    assert weight.unit is Unit.KG
    assert weight.time == RECEIVED
    # (98.6 - 32) x 5/9 = 37.0 degC; lower-case "t" and "z" are RFC 3339 too
    assert temperature.value == pytest.approx(37.0)
    assert temperature.time == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


BAD = json.loads((DATA / "bad_payloads.json").read_text())


def _bad_bytes(vector: dict[str, str]) -> bytes:
    if "payload_hex" in vector:
        return bytes.fromhex(vector["payload_hex"])
    return vector["payload_text"].encode("utf-8", "surrogatepass")


@pytest.mark.parametrize("vector", BAD, ids=[v["name"] for v in BAD])
def test_bad_payload_is_rejected_with_its_reason(vector: dict[str, str]) -> None:
    with pytest.raises(PayloadRejected) as caught:
        _decode(_bad_bytes(vector))
    assert caught.value.reason == RejectReason(vector["reason"])
    assert caught.value.topic == TOPIC


def test_array_rejection_names_the_element() -> None:
    vector = next(v for v in BAD if v["name"] == "array_second_bad")
    with pytest.raises(PayloadRejected) as caught:
        _decode(_bad_bytes(vector))
    assert caught.value.index == 1
    assert "'value'" in caught.value.detail


def test_size_limit_is_64_kib_inclusive() -> None:
    body = b'{"kind":"glucose","value":100,"unit":"mg/dL","time_offset_s":0,"seq":1}'
    at_limit = body + b" " * (MAX_PAYLOAD_BYTES - len(body))  # 65,536 bytes: accepted
    assert len(_decode(at_limit).readings) == 1
    with pytest.raises(PayloadRejected) as caught:
        _decode(at_limit + b" ")  # 65,537 bytes
    assert caught.value.reason is RejectReason.OVERSIZED


@pytest.mark.parametrize(
    "topic",
    [
        "glucohub/v1/pat-1/readings",
        "glucohub/v2/pat-1/cgm-9/readings",
        "glucohub/v1//cgm-9/readings",
        "glucohub/v1/pat-1/cgm-9/events",
        "glucohub/v1/pat-1/cgm-9/readings/extra",
    ],
)
def test_topic_outside_the_layout_is_a_schema_rejection(topic: str) -> None:
    payload = (DATA / "good_mmol_single.json").read_bytes()
    with pytest.raises(PayloadRejected) as caught:
        _decode(payload, topic)
    assert caught.value.reason is RejectReason.SCHEMA


def test_every_allowed_unit_converts_to_the_kinds_canonical_unit() -> None:
    assert set(ALLOWED_UNITS) == set(ReadingKind)
    for kind, units in ALLOWED_UNITS.items():
        for unit in units:
            assert to_canonical(1.0, unit)[1] is CANONICAL_UNIT[kind]


def test_schema_kind_enum_and_time_pattern_match_the_decoder() -> None:
    properties = SCHEMA["$defs"]["reading"]["properties"]
    assert properties["kind"]["enum"] == [k.value for k in ReadingKind]
    assert properties["time"]["pattern"] == TIME_PATTERN
    assert properties["status"]["items"]["pattern"] == STATUS_FLAG_PATTERN
    assert properties["seq"]["maximum"] == MAX_SEQ == 2**53 - 1
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@given(st.binary(max_size=512), st.text(max_size=60))
def test_random_bytes_only_ever_raise_payload_rejected(payload: bytes, topic: str) -> None:
    with contextlib.suppress(PayloadRejected):
        decode_readings(topic, payload, received_at=RECEIVED)


# --- schema equivalence on generated documents -------------------------------------------

_UNIT_SPELLINGS = [u.value for u in Unit] + ["MG/DL", "mmol", " Cel ", "[lb_av]", "°F", "BPM"]


def _rfc3339(moment: datetime, offset_min: int, fraction: str, sep: str) -> str:
    sign = "+" if offset_min >= 0 else "-"
    zone = "Z" if offset_min == 0 and fraction == "" else f"{sign}{abs(offset_min) // 60:02d}:"
    if zone != "Z":
        zone += f"{abs(offset_min) % 60:02d}"
    return moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + zone


_times = st.builds(
    _rfc3339,
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(2999, 12, 30)),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    st.sampled_from(["", ".5", ".123456", ".123456789"]),
    st.sampled_from(["T", "t", " "]),
)
_json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=8)
_fields: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from([k.value for k in ReadingKind]) | st.text(max_size=12) | _json_scalars,
    "value": st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(-(10**17), 10**17)
    | _json_scalars,
    "unit": st.sampled_from(_UNIT_SPELLINGS) | _json_scalars,
    "time": _times | _json_scalars,
    "time_offset_s": st.floats(-2e9, 2e9) | st.integers(-(2**40), 2**40) | _json_scalars,
    "seq": st.integers(-3, 2**64)
    | st.floats(-10.0, 1e20).map(float)
    | st.integers(0, 10**6).map(float)
    | _json_scalars,
    "status": st.lists(st.text(max_size=10), max_size=3) | st.lists(_json_scalars, max_size=2),
}
_valid_fields: dict[str, st.SearchStrategy[Any]] = {
    "kind": st.sampled_from([k.value for k in ReadingKind]),
    "value": st.floats(-1e15, 1e15) | st.integers(-(10**15), 10**15),
    "unit": st.sampled_from(_UNIT_SPELLINGS),
    "time": _times,
    "time_offset_s": st.floats(-1e9, 1e9) | st.integers(-(10**9), 10**9),
    "seq": st.integers(0, 2**63 - 1) | st.integers(0, 10**6).map(float),
    "status": st.lists(st.from_regex(r"[a-z0-9_.:=+-]{1,10}", fullmatch=True), max_size=3),
}


@st.composite
def _near_valid_reading(draw: st.DrawFn) -> dict[str, Any]:
    """A reading whose fields are valid, then zero or one field broken, dropped or added."""
    names = ["kind", "value", "unit", "seq", draw(st.sampled_from(["time", "time_offset_s"]))]
    if draw(st.booleans()):
        names.append("status")
    doc = {name: draw(_valid_fields[name]) for name in names}
    unit = draw(st.sampled_from(sorted(ALLOWED_UNITS[ReadingKind(doc["kind"])])))
    doc["unit"] = draw(st.sampled_from([unit.value, unit.value.upper(), f" {unit.value} "]))
    mutation = draw(st.sampled_from(["none", "none", "replace", "drop", "add"]))
    if mutation == "replace":
        name = draw(st.sampled_from(sorted(_fields)))
        doc[name] = draw(_fields[name])
    elif mutation == "drop":
        del doc[draw(st.sampled_from(sorted(doc)))]
    elif mutation == "add":
        doc[draw(st.sampled_from(["extra", "time", "time_offset_s"]))] = draw(_json_scalars)
    return doc


_readings = st.fixed_dictionaries({}, optional={**_fields, "extra": _json_scalars})
_documents = (
    _near_valid_reading() | st.lists(_near_valid_reading(), max_size=3) | _readings | _json_scalars
)


@settings(max_examples=600)
@given(_documents)
def test_schema_valid_exactly_when_the_decoder_accepts_up_to_unit_spelling(doc: Any) -> None:
    """Schema-valid <=> the decoder accepts it or refuses only the unit's spelling (which
    the schema leaves to the hub: spellings are case-insensitive aliases)."""
    payload = json.dumps(doc).encode()
    try:
        _decode(payload)
        outcome: RejectReason | None = None
    except PayloadRejected as exc:
        outcome = exc.reason
    schema_valid = VALIDATOR.is_valid(doc)
    assert schema_valid == (outcome in (None, RejectReason.UNKNOWN_UNIT)), (outcome, doc)


@settings(max_examples=300)
@given(st.lists(_near_valid_reading(), min_size=1, max_size=3))
def test_every_accepted_document_validates(doc: list[dict[str, Any]]) -> None:
    try:
        readings = _decode(json.dumps(doc).encode()).readings
    except PayloadRejected:
        return
    VALIDATOR.validate(doc)
    assert len(readings) == len(doc)


@settings(max_examples=400)
@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(2999, 12, 30)),
    st.integers(-(23 * 60 + 59), 23 * 60 + 59),
    st.text("0123456789", min_size=0, max_size=12),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from(["Z", "z", "offset"]),
)
def test_time_is_the_instant_the_text_names(
    moment: datetime, offset_min: int, digits: str, sep: str, zone: str
) -> None:
    """Whatever spelling RFC 3339 allows: every offset, a fraction of any length (cut to
    microseconds), T/t/space, Z/z."""
    if zone == "offset":
        sign = "+" if offset_min >= 0 else "-"
        suffix = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    else:
        suffix, offset_min = zone, 0
    fraction = f".{digits}" if digits else ""
    text = moment.strftime(f"%Y-%m-%d{sep}%H:%M:%S") + fraction + suffix
    micro = int((digits + "000000")[:6])
    expected = moment.replace(microsecond=micro, tzinfo=UTC) - timedelta(minutes=offset_min)
    doc = {"kind": "glucose", "value": 100, "unit": "mg/dL", "time": text, "seq": 1}
    (reading,) = _decode(json.dumps(doc).encode()).readings
    assert reading.time == expected
    assert reading.time.tzinfo is UTC


@pytest.mark.parametrize("text", ["2024-02-30T08:00:00Z", "2023-02-29T08:00:00+01:00"])
def test_a_day_the_month_does_not_have_is_a_schema_rejection(text: str) -> None:
    doc = {"kind": "glucose", "value": 100, "unit": "mg/dL", "time": text, "seq": 1}
    with pytest.raises(PayloadRejected) as caught:
        _decode(json.dumps(doc).encode())
    assert caught.value.reason is RejectReason.SCHEMA
    assert text in caught.value.detail


@pytest.mark.parametrize("seq", [2**53, 2**53 + 1, 2**63 - 1])
def test_a_seq_beyond_2_53_is_refused_by_the_decoder_and_the_schema(seq: int) -> None:
    """RFC 8785 (I-JSON) numbers are doubles: a larger seq could be stored but never sealed."""
    doc = {"kind": "glucose", "value": 100, "unit": "mg/dL", "time_offset_s": 0, "seq": seq}
    with pytest.raises(PayloadRejected) as caught:
        _decode(json.dumps(doc).encode())
    assert caught.value.reason is RejectReason.SCHEMA
    assert not VALIDATOR.is_valid(doc)
    doc["seq"] = 2**53 - 1
    VALIDATOR.validate(doc)
    assert _decode(json.dumps(doc).encode()).readings[0].seq == 2**53 - 1


@pytest.mark.parametrize("flag", ["low,battery", "", "two words", "x" * 65, "tab\t", "é"])
def test_a_status_flag_must_be_a_token(flag: str) -> None:
    """Flags are identifiers; a ',' would be split when stored and sealed."""
    doc = {"kind": "glucose", "value": 100, "unit": "mg/dL", "time_offset_s": 0, "seq": 1}
    doc["status"] = ["ok", flag]
    with pytest.raises(PayloadRejected) as caught:
        _decode(json.dumps(doc).encode())
    assert caught.value.reason is RejectReason.SCHEMA
    assert not VALIDATOR.is_valid(doc)
    doc["status"] = ["calibration_required", "trend_mg_dl_min=-1.5", "fw:2.1"]
    VALIDATOR.validate(doc)
    assert _decode(json.dumps(doc).encode()).readings[0].status == tuple(doc["status"])


_UPLOADER = Device(
    device_id="cgm-9", patient_id="pat-1", kind=DeviceKind.UPLOADER, transport=Transport.MQTT
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_near_valid_reading(), min_size=1, max_size=3))
def test_every_accepted_reading_can_be_stored_and_sealed(doc: list[dict[str, Any]]) -> None:
    """Whatever the decoder accepts (whether or not validation then keeps it) becomes a row
    whose sealed text is RFC 8785 JSON and which reads back with the same values (times are
    stored to the millisecond)."""
    try:
        readings = _decode(json.dumps(doc).encode()).readings
    except PayloadRejected:
        return
    for reading in readings:
        validate(reading, _UPLOADER, now=RECEIVED, rules=ValidationRules())
        row = reading_to_row(reading)
        stored = (1, *row[:6], *row[7:12])  # a SELECT of that row (`_READING_COLUMNS`)
        text = reading_canonical_from_row(stored)
        assert text.encode() == canonicalize(reading_json_from_row(stored))
        back = reading_from_row(stored)
        assert (back.seq, back.value, back.status) == (reading.seq, reading.value, reading.status)
