"""The devicestatus and profile protocol (dashboards/nightscout/documents.py), sans I/O: what
is kept of an upload and how a follower's query string reads. Expected values by hand from
Nightscout's server (lib/server/devicestatus.js, lib/api/devicestatus/index.js,
lib/server/query.js)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

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
