"""The devicestatus and profile protocol (dashboards/nightscout/documents.py), sans I/O: what
is kept of an upload and how a follower's query string reads. Expected values by hand from
Nightscout's server (lib/server/devicestatus.js, lib/api/devicestatus/index.js,
lib/server/query.js)."""

from __future__ import annotations

import contextlib
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from dashboards.nightscout import jwt
from dashboards.nightscout.documents import parse_documents, parse_query, to_nightscout
from dashboards.nightscout.entries import EntriesRejected
from gateway.storage.contract import DocumentCollection, NightscoutDocument

NOW = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
STATUS = DocumentCollection.DEVICESTATUS


def parse(body: object) -> list[NightscoutDocument]:
    parsed = parse_documents(json.dumps(body).encode(), collection=STATUS, patient_id="p1", now=NOW)
    documents = [p.document for p in parsed if p.document is not None]
    assert len(documents) == len(parsed)
    return documents


def test_created_at_with_an_offset_is_served_in_utc_and_a_missing_one_is_now() -> None:
    [local, missing, by_date] = parse(
        [
            {"device": "a", "created_at": "2026-12-01T10:30:00+01:00"},
            {"device": "b"},
            {"device": "c", "date": 1_764_580_000_000},
        ]
    )
    served = [to_nightscout(d) for d in (local, missing, by_date)]
    assert served[0]["created_at"] == "2026-12-01T09:30:00.000Z"
    assert served[0]["mills"] == int(datetime(2026, 12, 1, 9, 30, tzinfo=UTC).timestamp() * 1000)
    assert served[1]["created_at"] == "2026-12-01T10:00:00.000Z"
    # 1,764,580,000,000 ms = 2025-12-01T09:06:40Z
    assert served[2]["created_at"] == "2025-12-01T09:06:40.000Z"


@pytest.mark.parametrize("date", [2**70, -1, 1e300, "1764580000000", True])
def test_a_date_that_is_no_time_is_refused(date: object) -> None:
    body = json.dumps([{"device": "a", "date": date}]).encode()
    [parsed] = parse_documents(body, collection=STATUS, patient_id="p1", now=NOW)
    assert parsed.document is None and parsed.error is not None


def test_the_same_document_gets_the_same_id_and_a_given_id_is_kept() -> None:
    body = {"device": "a", "created_at": "2026-12-01T09:00:00Z", "uploaderBattery": 50}
    first, again, other = parse([body, body, {**body, "uploaderBattery": 49}])
    assert first.doc_id == again.doc_id != other.doc_id
    [given] = parse([{**body, "_id": "0123456789abcdef01234567", "mills": 5}])
    assert given.doc_id == "0123456789abcdef01234567"
    assert "mills" not in json.loads(given.body)


def test_queries_count_and_window_as_nightscout() -> None:
    plain = parse_query([], now=NOW)
    assert (plain.count, plain.since) == (10, NOW - timedelta(days=4))
    dated = parse_query(
        [("count", "5000"), ("find[created_at][$gte]", "2026-11-30T00:00:00Z")], now=NOW
    )
    assert (dated.count, dated.since) == (1000, datetime(2026, 11, 30, tzinfo=UTC))
    profiles = parse_query([], now=NOW, dated_by_default=False)
    assert profiles.since == NOW + timedelta(days=1) - timedelta(days=90)
    with pytest.raises(EntriesRejected, match="unsupported filter"):
        parse_query([("find[device]", "loop://iPhone")], now=NOW)


# -- fuzz: a document list or EntriesRejected; a JWT's claims or JwtInvalid; nothing else ---

_SEEDS: list[Any] = [
    {"device": "loop://iPhone", "created_at": "2026-12-01T09:00:00Z", "loop": {"iob": {"iob": 1}}},
    {
        "defaultProfile": "Day",
        "startDate": "2026-12-01T09:00:00Z",
        "store": {
            "Day": {
                "dia": 5,
                "timezone": "Europe/Prague",
                "units": "mmol",
                **{
                    k: [{"time": "00:00", "timeAsSeconds": 0, "value": 2}]
                    for k in ("carbratio", "sens", "basal", "target_low", "target_high")
                },
            }
        },
    },
]
_NASTY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


def _mutate(seed: Any, path: list[int], value: Any) -> Any:
    if not path or not isinstance(seed, dict | list) or not seed:
        return value
    if isinstance(seed, dict):
        key = sorted(seed)[path[0] % len(seed)]
        return {**seed, key: _mutate(seed[key], path[1:], value)}
    index = path[0] % len(seed)
    return [*seed[:index], _mutate(seed[index], path[1:], value), *seed[index + 1 :]]


@settings(max_examples=300, deadline=None)
@example(seed=_SEEDS[0], path=[1], value=math.nan, collection=DocumentCollection.DEVICESTATUS)
@example(seed=_SEEDS[1], path=[2, 0, 0], value=-math.inf, collection=DocumentCollection.PROFILE)
@given(
    seed=st.sampled_from(_SEEDS),
    path=st.lists(st.integers(0, 100), max_size=6),
    value=_NASTY,
    collection=st.sampled_from([DocumentCollection.DEVICESTATUS, DocumentCollection.PROFILE]),
)
def test_any_mutated_upload_is_documents_or_entries_rejected(
    seed: Any, path: list[int], value: Any, collection: DocumentCollection
) -> None:
    body = json.dumps([_mutate(seed, path, value)]).encode()
    with contextlib.suppress(EntriesRejected):
        for item in parse_documents(body, collection=collection, patient_id="p1", now=NOW):
            assert (item.document is None) != (item.error is None)
            if item.document is not None:
                assert json.loads(item.document.body)  # stored text is JSON again


@settings(max_examples=300, deadline=None)
@given(
    token=st.one_of(
        st.text(max_size=80), st.from_regex(r"[A-Za-z0-9_=-]{0,20}(\.[A-Za-z0-9_=-]{0,40}){2}")
    )
)
def test_any_text_is_a_jwt_or_jwt_invalid(token: str) -> None:
    with contextlib.suppress(jwt.JwtInvalid):
        jwt.verify(token, b"key", now=NOW)
    signed = jwt.sign({"tid": 1, "exp": 2_000_000_000}, b"key")
    assert jwt.verify(signed, b"key", now=NOW)["tid"] == 1
