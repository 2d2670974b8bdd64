"""Nightscout API v3 `entries`: the patient's glucose readings as `sgv` and `mbg` entries.

Readings are sealed in the ledger, so these are read-only documents. Uploads go through the
hub's `ReadingSink` like API v1's (dashboards/nightscout/routes.py `_ingest`).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiohttp import web

from dashboards.context import deps
from dashboards.nightscout.api3 import (
    READ_ONLY,
    Api3Error,
    Doc,
    SearchQuery,
    fields_used,
    from_ms,
    parse_dates,
    project,
    resolve_identifier,
    search,
    select,
    validate_create,
)
from dashboards.nightscout.api3_auth import demand
from dashboards.nightscout.api3_collections import Stored, Write
from dashboards.nightscout.entries import (
    MAX_WINDOW,
    TREND_LOOKBACK,
    EntriesRejected,
    EntryType,
    entry_id,
    epoch_ms,
    parse_upload,
    to_entries,
)
from dashboards.nightscout.routes import _ingest
from gateway.model import Reading, ReadingKind

_GLUCOSE = (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE)
_MS = timedelta(milliseconds=1)


def reading_modified(reading: Reading) -> datetime:
    """The hub's time of a stored reading, its srvCreated and srvModified (readings are never
    changed). The store does not record when it received a reading yet: until it does, the
    reading's own time. Every v3 read of readings goes through here."""
    return reading.time


class Entries:
    """The patient's glucose readings as `sgv` and `mbg` entries (read-only documents: they
    are sealed in the ledger)."""

    name = "entries"

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._deps = deps(request)

    async def _readings(
        self, patient_id: str, since: datetime, until: datetime | None
    ) -> tuple[list[Reading], _Trends]:
        """The readings with since <= time <= until, and what rendering them needs."""
        d = self._deps
        history = await d.read_model.readings(  # `until` is exclusive there
            patient_id,
            since=since - TREND_LOOKBACK,
            until=None if until is None else until + _MS,
            kinds=_GLUCOSE,
        )
        devices = {dev.device_id: dev.name for dev in await d.read_model.list_devices(patient_id)}
        return [r for r in history if r.time >= since], _Trends(history, devices)

    async def search(
        self, patient_id: str, query: SearchQuery, *, since: datetime, until: datetime
    ) -> list[Doc]:
        readings, trends = await self._readings(patient_id, since, until)

        def run() -> list[Doc]:
            # Arrows cost most (a regression per reading): a query that looks only at the
            # fields `_light` has is answered on those, then only its readings are rendered.
            if fields_used(query) <= _LIGHT_FIELDS:
                light = [_light(r) for r in readings]
                by_id = {id(doc): r for doc, r in zip(light, readings, strict=True)}
                picked = [by_id[id(doc)] for doc in select(light, query)]
                return [project(doc, query.fields) for doc in trends.render(picked)]
            return search(trends.render(readings), query)

        return await asyncio.to_thread(run)

    async def history(self, patient_id: str, *, after_ms: int, limit: int) -> list[Doc]:
        # srvModified is the reading's time (reading_modified): readings after it, at most
        # MAX_WINDOW back
        now = self._deps.clock.now()
        since = max(from_ms(after_ms + 1), now - MAX_WINDOW)
        readings, trends = await self._readings(patient_id, since, None)
        changed = [r for r in readings if epoch_ms(reading_modified(r)) > after_ms]
        changed.sort(key=lambda r: (reading_modified(r), r.time))
        return await asyncio.to_thread(trends.render, changed[:limit])

    async def last_modified(self, patient_id: str) -> int | None:
        latest = await self._deps.read_model.latest_reading(patient_id, _GLUCOSE)
        return None if latest is None else epoch_ms(reading_modified(latest))

    async def read(self, patient_id: str, identifier: str) -> Doc | None:
        # identifiers are hashes: looked for among the last MAX_WINDOW of readings
        now = self._deps.clock.now()
        readings, trends = await self._readings(patient_id, now - MAX_WINDOW, None)
        found = [r for r in readings if entry_id(r) == identifier]
        return trends.render(found[:1])[0] if found else None

    async def create(self, write: Write, doc: Doc) -> Stored:
        demand(write.caller, self.name, "create")
        parse_dates(doc)
        resolve_identifier(doc)
        validate_create(doc)
        body = json.dumps(doc).encode()
        try:
            (entry,) = parse_upload(
                body, patient_id=write.patient_id, device_id=write.caller.device_id
            )
        except EntriesRejected as exc:
            raise Api3Error(400, str(exc), exc.reason) from None
        now_ms = epoch_ms(self._deps.clock.now())
        sent = str(doc["identifier"])
        reading = entry.reading
        if reading is not None:
            # lib/api3/generic/setup.js: entries are also the same when date and type are
            # (dedupFallbackFields). A stored reading is sealed: it is never replaced.
            same = await self._deps.read_model.readings(
                write.patient_id,
                since=reading.time,
                until=reading.time + _MS,
                kinds=(reading.kind,),
            )
            if same:
                return _found_again(same[0], sent)
        if entry.error is not None:
            await _ingest(write.request, write.origin(entry.raw), [entry])  # the dead letter
            raise Api3Error(400, str(entry.error), entry.error.reason, dead_lettered=True)
        (outcome,) = await _ingest(write.request, write.origin(entry.raw), [entry])
        if outcome.rejected:
            raise Api3Error(  # the pipeline kept it as a dead letter
                400, "refused by validation (see dead letters)", dead_lettered=True
            )
        if reading is None:  # a `cal`, which is not kept, or a CGM error code (an event)
            return Stored(status=201, identifier=sent, last_modified_ms=now_ms)
        if outcome.duplicates:
            return _found_again(reading, sent)
        stored_ms = epoch_ms(reading_modified(reading))
        return Stored(status=201, identifier=entry_id(reading), last_modified_ms=stored_ms)

    async def update(self, write: Write, identifier: str, doc: Doc, *, patch: bool) -> Stored:
        demand(write.caller, self.name, "update")
        if await self.read(write.patient_id, identifier) is None:
            if patch:
                raise Api3Error(404)
            return await self.create(write, {**doc, "identifier": identifier})
        raise _sealed()

    async def delete(self, write: Write, identifier: str) -> None:
        demand(write.caller, self.name, "delete")
        if await self.read(write.patient_id, identifier) is None:
            raise Api3Error(404)
        raise _sealed()


@dataclass(frozen=True, slots=True)
class _Trends:
    """A patient's readings around some chosen ones, and device names: what entries need."""

    history: list[Reading]
    devices: dict[str, str]

    def render(self, chosen: list[Reading]) -> list[Doc]:
        entries = to_entries(chosen, self.history, self.devices)
        return [_entry_doc(r, e) for r, e in zip(chosen, entries, strict=True)]


_LIGHT_FIELDS = frozenset(
    {"identifier", "date", "type", "sgv", "mbg", "srvModified", "srvCreated", "created_at"}
)


def _light(reading: Reading) -> Doc:
    """The `_LIGHT_FIELDS` of a reading's entry, as `_entry_doc(to_entries(...))` has them
    (a test holds the two together); `created_at` entries do not have."""
    stored = epoch_ms(reading_modified(reading))
    glucose = reading.kind is ReadingKind.CGM_GLUCOSE
    kind = EntryType.SGV if glucose else EntryType.MBG
    return {
        "identifier": entry_id(reading),
        "date": epoch_ms(reading.time),
        "type": kind.value,
        kind.value: round(reading.value),
        "srvModified": stored,
        "srvCreated": stored,
    }


def _sealed() -> Api3Error:
    """A reading is sealed in the ledger: never changed or removed. Nightscout answers a
    read-only document's change with 422, which stops NSClientV3's upload queue for good
    (NSClientV3Plugin: any status but 200, 201, 400, 404 ends the sync round, and the same
    record comes first again); a 400 with the same message lets it log and go on."""
    return Api3Error(400, READ_ONLY)


def _entry_doc(reading: Reading, entry: dict[str, object]) -> Doc:
    stored = epoch_ms(reading_modified(reading))
    doc: Doc = {"identifier": entry["_id"]}
    doc.update((k, v) for k, v in entry.items() if k != "_id")
    doc.update(srvCreated=stored, srvModified=stored, isValid=True, isReadOnly=True)
    return doc


def _found_again(reading: Reading, sent: str) -> Stored:
    """create/operation.js: a document found again is answered 200 with isDeduplication. The
    hub answers with its own identifier (what its reads show), and names it as the
    deduplicated one when the client sent another."""
    mine = entry_id(reading)
    return Stored(
        status=200,
        identifier=mine,
        last_modified_ms=epoch_ms(reading_modified(reading)),
        deduplicated=True,
        deduplicated_identifier=mine if mine != sent else None,
    )
