"""Nightscout API v3's pure parts (dashboards/nightscout/api3.py), against Nightscout 15's
lib/api3 behaviour worked out by hand.

The identifier vectors were computed apart from this code, with Node's crypto module as
RFC 4122 §4.3 says (SHA-1 of the namespace's 16 bytes "NightscoutRocks!" then the name; version
5, RFC 4122 variant), for the names operationTools.calculateIdentifier builds in JavaScript
(`doc.device + '_' + doc.date [+ '_' + doc.eventType]`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboards.nightscout.api3 import (
    Api3Error,
    Filter,
    calculate_identifier,
    history_after,
    parse_dates,
    parse_moment,
    parse_search,
    search,
    time_window,
    validate_create,
)
from dashboards.nightscout.api3_entries import _LIGHT_FIELDS, _light, _Trends
from gateway.model import Reading, ReadingKind, Source
from gateway.units import Unit

JAN_1_2026_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # no device: JavaScript writes `undefined`
        (
            {"date": JAN_1_2026_MS, "eventType": "Meal Bolus"},
            "6fb6e79f-08b1-54c3-9a48-fdc1f5172c59",
        ),
        (
            {"device": "Dexcom G6 Native", "date": JAN_1_2026_MS},
            "24c55127-42ea-53d7-ab04-88e3312813d5",
        ),
        # a null device is "null"; a float date with no fraction is written as an integer
        ({"device": None, "date": float(JAN_1_2026_MS)}, "eb4d10be-9bed-52a0-b636-4ff505e189e5"),
    ],
)
def test_the_identifier_is_nightscouts_uuid_v5(doc: dict[str, object], expected: str) -> None:
    assert calculate_identifier(doc) == expected


def test_dates_are_read_as_nightscout_reads_them() -> None:
    # ms; seconds (anything before 2000 as ms); a numeric string; ISO 8601 keeping its offset
    assert parse_moment(JAN_1_2026_MS) is not None
    assert parse_moment(JAN_1_2026_MS).ms == JAN_1_2026_MS  # type: ignore[union-attr]
    assert parse_moment(JAN_1_2026_MS // 1000).ms == JAN_1_2026_MS  # type: ignore[union-attr]
    assert parse_moment(str(JAN_1_2026_MS)).ms == JAN_1_2026_MS  # type: ignore[union-attr]
    cet = parse_moment("2026-01-01T01:00:00+01:00")
    assert cet is not None and (cet.ms, cet.utc_offset_min) == (JAN_1_2026_MS, 60)
    for nothing in (0, "0", None, "", "yesterday", 946_684_799, True):
        assert parse_moment(nothing) is None, nothing
    # parseDate: date from created_at when missing; utcOffset from the string's offset
    doc: dict[str, object] = {"created_at": "2026-01-01T01:00:00+01:00"}
    parse_dates(doc)
    assert doc == {
        "created_at": "2026-01-01T00:00:00.000Z",
        "date": JAN_1_2026_MS,
        "utcOffset": 60,
    }
    sent: dict[str, object] = {"date": JAN_1_2026_MS, "utcOffset": 120}
    parse_dates(sent)
    assert sent["utcOffset"] == 120  # the client's own offset stays


def test_history_starts_after_the_url_time_or_at_the_header_second() -> None:
    assert history_after(str(JAN_1_2026_MS), None) == JAN_1_2026_MS
    # the header: floored to the second, documents at or after it
    header = "Thu, 01 Jan 2026 00:00:00 GMT"
    assert history_after(None, header) == JAN_1_2026_MS - 1
    for bad in (("nope", None), (None, None), (None, "not a date")):
        with pytest.raises(Api3Error) as caught:
            history_after(*bad)
        assert caught.value.status == 400


def _docs() -> list[dict[str, object]]:
    return [
        {"identifier": "a", "type": "sgv", "sgv": 100, "date": 3},
        {"identifier": "b", "type": "mbg", "mbg": 90, "date": 2},
        {"identifier": "c", "type": "sgv", "sgv": 180, "date": 1},
        {"identifier": "d", "type": "sgv", "sgv": 140, "date": 4},
    ]


def test_search_filters_sorts_skips_limits_and_projects() -> None:
    query = parse_search([("sort", "date"), ("type", "sgv"), ("limit", "2")])
    assert [d["identifier"] for d in search(_docs(), query)] == ["c", "a"]
    query = parse_search([("sort$desc", "date"), ("sgv$gte", "140"), ("fields", "sgv")])
    assert search(_docs(), query) == [
        {"identifier": "d", "sgv": 140},
        {"identifier": "c", "sgv": 180},
    ]
    query = parse_search([("sort", "date"), ("skip", "1"), ("type$in", "sgv|mbg")])
    assert [d["identifier"] for d in search(_docs(), query)] == ["b", "a", "d"]
    query = parse_search([("type$ne", "sgv"), ("token", "x"), ("now", "1")])
    assert [d["identifier"] for d in search(_docs(), query)] == ["b"]
    # a number never matches a string (MongoDB compares one type with itself)
    query = parse_search([("identifier$gt", "5")])
    assert search(_docs(), query) == []


def test_the_store_is_asked_only_for_the_time_the_filters_allow() -> None:
    filters = parse_search([("date$gt", "1000"), ("date$lte", "5000")]).filters
    assert time_window(filters, "date") == (1001, 5000)
    created = parse_search([("created_at$gte", "2026-01-01T01:00:00+01:00")]).filters
    assert created == (Filter("created_at", "gte", "2026-01-01T00:00:00.000Z"),)
    assert time_window(created, "created_at") == (JAN_1_2026_MS, None)
    assert time_window(created, "date") == (None, None)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_FIELDS = st.sampled_from(
    ["date", "created_at", "utcOffset", "app", "identifier", "device", "eventType", "sgv"]
)


@settings(max_examples=100, deadline=None)
@given(doc=st.dictionaries(_FIELDS | st.text(max_size=8), _JSON, max_size=8))
def test_any_document_is_read_or_refused_with_a_nightscout_error(doc: dict[str, object]) -> None:
    """What a client sends goes through the create steps without any other exception."""
    parse_dates(doc)
    if not doc.get("identifier"):
        assert len(calculate_identifier(doc)) == 36
    try:
        validate_create(doc)
    except Api3Error as exc:
        assert exc.status == 400 and exc.message


@settings(max_examples=100, deadline=None)
@given(
    params=st.lists(
        st.tuples(
            st.sampled_from(["sort", "sort$desc", "limit", "skip", "fields", "date$gt"])
            | st.text(max_size=12),
            st.text(max_size=30),
        ),
        max_size=6,
    ),
    docs=st.lists(st.dictionaries(_FIELDS, _JSON, max_size=5), max_size=5),
)
def test_any_query_string_is_searched_or_refused_with_a_nightscout_error(
    params: list[tuple[str, str]], docs: list[dict[str, object]]
) -> None:
    try:
        query = parse_search(params)
    except Api3Error as exc:
        assert exc.status == 400 and exc.message
        return
    found = search(docs, query)
    assert len(found) <= query.limit
    for field in ("date", "created_at"):
        time_window(query.filters, field)


def test_a_readings_light_fields_are_those_of_its_full_entry() -> None:
    """Searches that look only at these fields are answered on them before the arrows are
    computed (api3_collections._light): they must be the entry's own values."""
    at = datetime(2026, 1, 1, 8, 0, 7, 123_000, tzinfo=UTC)
    readings = [
        Reading(
            patient_id="p1",
            device_id="cgm",
            kind=kind,
            value=value,
            unit=Unit.MG_DL,
            time=at + timedelta(minutes=5 * i),
            source=Source.HTTP,
        )
        for i, (kind, value) in enumerate(
            [
                (ReadingKind.CGM_GLUCOSE, 120.4),
                (ReadingKind.GLUCOSE, 99.6),
                (ReadingKind.CGM_GLUCOSE, 130.5),
            ]
        )
    ]
    full = _Trends(readings, {"cgm": "Dexcom"}).render(readings)
    for reading, doc in zip(readings, full, strict=True):
        light = _light(reading)
        assert light == {k: doc[k] for k in light}
        assert _LIGHT_FIELDS - {"created_at", "sgv", "mbg"} <= set(light) <= _LIGHT_FIELDS
        assert "created_at" not in doc  # the sort's tie-breaker: absent from both
