"""Nightscout API v3's collections over the hub's storage: one `Collection` per name, each
turning the hub's records into v3 documents and v3 writes into the normal upload pipeline.

The generic operations (lib/api3/generic/*) are the route layer's (`api3_routes`); a
collection only answers "which documents", "find this one" and "store this". `entries` are
the patient's readings (sealed, so read-only documents); `treatments` their treatments. Other
collections (devicestatus, profile, food, settings) plug in here as they get storage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from aiohttp import web

from dashboards.context import deps
from dashboards.nightscout.api3 import (
    READ_ONLY,
    Api3Error,
    Doc,
    SearchQuery,
    check_immutable,
    fields_used,
    from_ms,
    parse_dates,
    project,
    resolve_identifier,
    search,
    select,
    validate_common,
    validate_create,
)
from dashboards.nightscout.api3_auth import demand
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
from dashboards.nightscout.treatments import parse_treatments, to_nightscout, treatment_id
from gateway.model import Reading, ReadingKind, Source, Treatment
from gateway.protocols import Origin, StoredTreatment, TreatmentLog
from gateway.storage.accounts import NightscoutSecretRecord

_GLUCOSE = (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE)
_MS = timedelta(milliseconds=1)
_SERVER_FIELDS = ("srvCreated", "srvModified", "subject", "modifiedBy", "isReadOnly")


@dataclass(frozen=True, slots=True, kw_only=True)
class Write:
    """One write request: who sends it (the credential decides whose data it is) and the
    request, for the pipeline and dead letters."""

    request: web.Request
    caller: NightscoutSecretRecord

    @property
    def patient_id(self) -> str:
        return self.caller.patient_id

    def origin(self, raw: bytes = b"") -> Origin:
        return Origin(
            source=Source.HTTP, topic=self.request.path, raw=raw, device_id=self.caller.device_id
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Stored:
    """What a create or update did (create/insert.js and update/replace.js answers)."""

    status: int  # 201 inserted, 200 replaced or found again
    identifier: str
    last_modified_ms: int
    deduplicated: bool = False
    deduplicated_identifier: str | None = None


class Collection(Protocol):
    name: str

    async def search(
        self, patient_id: str, query: SearchQuery, *, since: datetime, until: datetime
    ) -> list[Doc]:
        """`query` over the patient's documents whose own time (`date`) is within
        [since, until]."""
        ...

    async def history(self, patient_id: str, *, after_ms: int, limit: int) -> list[Doc]:
        """The first `limit` documents with srvModified > after_ms, in srvModified order."""
        ...

    async def last_modified(self, patient_id: str) -> int | None: ...

    async def read(self, patient_id: str, identifier: str) -> Doc | None: ...

    async def create(self, write: Write, doc: Doc) -> Stored: ...

    async def update(self, write: Write, identifier: str, doc: Doc, *, patch: bool) -> Stored: ...

    async def delete(self, write: Write, identifier: str) -> None: ...


# -- entries -----------------------------------------------------------------------------


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


# -- treatments --------------------------------------------------------------------------


def treatment_identifier(treatment: Treatment) -> str:
    """The uploader's `identifier` when it sent one, else the v1 `_id` (as Nightscout's
    storage names API v1 documents: lib/api3/storage/mongoCollection/utils.js normalizeDoc)."""
    key = treatment.dedupe_key
    if key.startswith("identifier:"):
        return key.removeprefix("identifier:")
    return treatment_id(treatment)


def _treatment_doc(record: StoredTreatment) -> Doc:
    out = to_nightscout(record.treatment)
    doc: Doc = {"identifier": treatment_identifier(record.treatment)}
    doc.update((k, v) for k, v in out.items() if k not in ("_id", "identifier"))
    doc.update(
        date=out["mills"],
        srvCreated=epoch_ms(record.created),
        srvModified=epoch_ms(record.modified),
        isValid=record.deleted is None,  # delete/operation.js markAsDeleted: isValid false
    )
    return doc


def _check_change(change: Doc, record: StoredTreatment) -> None:
    """update/validate.js against the stored fields the hub keeps as sent (`utcOffset` is
    not kept: reads show 0). A deleted document may be changed without restriction."""
    if record.deleted is None:
        kept = {k: v for k, v in _treatment_doc(record).items() if k != "utcOffset"}
        check_immutable(change, kept)


class Treatments:
    """The patient's treatments: created, found again (by `identifier`, else by created_at
    and eventType, lib/api3/generic/setup.js) and replaced through `TreatmentLog` (validated,
    stored, sealed), srvModified kept by the store."""

    name = "treatments"

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self._deps = deps(request)

    @property
    def _log(self) -> TreatmentLog:
        log = self._deps.treatments
        if log is None:
            raise Api3Error(404, "this hub keeps no treatments")
        return log

    async def search(
        self, patient_id: str, query: SearchQuery, *, since: datetime, until: datetime
    ) -> list[Doc]:
        records = await self._log.records(patient_id, since=since, until=until)
        return search([_treatment_doc(r) for r in records], query)

    async def history(self, patient_id: str, *, after_ms: int, limit: int) -> list[Doc]:
        records = await self._log.modified_after(patient_id, after=from_ms(after_ms), limit=limit)
        return [_treatment_doc(r) for r in records]

    async def last_modified(self, patient_id: str) -> int | None:
        newest = await self._log.modified_after(
            patient_id, after=from_ms(0), limit=1, newest_first=True
        )
        return epoch_ms(newest[0].modified) if newest else None

    async def _find(self, patient_id: str, identifier: str) -> StoredTreatment | None:
        for prefix in ("identifier:", "_id:"):
            found = await self._log.by_key(patient_id, prefix + identifier)
            if found is not None:
                return found
        # a v1 treatment's `_id` is a hash of its key: looked for among the last MAX_WINDOW
        now = self._deps.clock.now()
        recent = await self._log.records(patient_id, since=now - MAX_WINDOW, until=now + MAX_WINDOW)
        return next((r for r in recent if treatment_identifier(r.treatment) == identifier), None)

    async def read(self, patient_id: str, identifier: str) -> Doc | None:
        found = await self._find(patient_id, identifier)
        if found is not None and found.deleted is not None:
            raise Api3Error(410)  # read/operation.js: a deleted document is Gone
        return None if found is None else _treatment_doc(found)

    async def _same_time_and_type(self, patient_id: str, doc: Doc) -> StoredTreatment | None:
        at, event_type = doc.get("date"), doc.get("eventType")
        if not isinstance(at, int) or not event_type:
            return None
        when = from_ms(at)
        records = await self._log.records(patient_id, since=when, until=when)
        return next((r for r in records if r.treatment.event_type == event_type), None)

    async def create(self, write: Write, doc: Doc) -> Stored:
        demand(write.caller, self.name, "create")
        parse_dates(doc)
        resolve_identifier(doc)
        validate_create(doc)
        sent = str(doc["identifier"])
        existing = await self._find(write.patient_id, sent)
        if existing is None:
            existing = await self._same_time_and_type(write.patient_id, doc)
        if existing is not None:
            demand(write.caller, self.name, "update")
            change = {k: v for k, v in doc.items() if k != "identifier"}
            _check_change(change, existing)
        return await self._store(write, doc, existing, sent=sent, found_again=existing is not None)

    async def update(self, write: Write, identifier: str, doc: Doc, *, patch: bool) -> Stored:
        demand(write.caller, self.name, "update")
        existing = await self._find(write.patient_id, identifier)
        if patch:
            if existing is None:
                raise Api3Error(404)
            if existing.deleted is not None:
                raise Api3Error(410)  # patch/operation.js
            stored_doc = _treatment_doc(existing)
            _check_change(doc, existing)
            validate_common(doc, patching=True)
            merged = {k: v for k, v in {**stored_doc, **doc}.items() if k not in _SERVER_FIELDS}
            return await self._store(write, merged, existing, sent=identifier, found_again=False)
        # update/operation.js: PUT replaces, or inserts under the URL's identifier
        parse_dates(doc)
        doc["identifier"] = identifier
        validate_common(doc)
        if existing is None:
            demand(write.caller, self.name, "create")
        else:
            _check_change(doc, existing)
        return await self._store(write, doc, existing, sent=identifier, found_again=False)

    async def delete(self, write: Write, identifier: str) -> None:
        """delete/operation.js markAsDeleted: kept, `isValid: false`, srvModified now (and
        a ledger event); HISTORY shows it so that followers drop it."""
        demand(write.caller, self.name, "delete")
        found = await self._find(write.patient_id, identifier)
        if (
            found is None
            or await self._log.delete(write.patient_id, found.treatment.dedupe_key) is None
        ):
            raise Api3Error(404)

    async def _store(
        self,
        write: Write,
        doc: Doc,
        existing: StoredTreatment | None,
        *,
        sent: str,
        found_again: bool,
    ) -> Stored:
        now = self._deps.clock.now()
        body = json.dumps(doc).encode()
        try:
            (item,) = parse_treatments(body, patient_id=write.patient_id, now=now)
        except EntriesRejected as exc:
            raise Api3Error(400, str(exc), exc.reason) from None
        if item.error is not None:
            raise Api3Error(400, str(item.error), item.error.reason)
        assert item.treatment is not None
        treatment = item.treatment
        if existing is not None:  # the stored key stays: it is how resends are found
            treatment = dataclasses.replace(treatment, dedupe_key=existing.treatment.dedupe_key)
        done = await self._log.add([treatment])
        if done.refused:
            reason, detail = done.refused[0]
            raise Api3Error(400, detail, reason)
        if doc.get("isValid") is False:  # uploaded already deleted (Nightscout keeps it so)
            await self._log.delete(write.patient_id, treatment.dedupe_key)
        record = await self._log.by_key(write.patient_id, treatment.dedupe_key)
        assert record is not None
        mine = treatment_identifier(record.treatment)
        return Stored(
            status=201 if existing is None else 200,
            identifier=mine,
            last_modified_ms=epoch_ms(record.modified),
            deduplicated=found_again,
            deduplicated_identifier=mine if found_again and mine != sent else None,
        )


# -- collections without storage here yet ------------------------------------------------


class Unstored:
    """A collection Nightscout has and the hub does not keep (yet): reads find nothing,
    writes are refused as Nightscout refuses an unknown collection (404)."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def search(
        self, patient_id: str, query: SearchQuery, *, since: datetime, until: datetime
    ) -> list[Doc]:
        return []

    async def history(self, patient_id: str, *, after_ms: int, limit: int) -> list[Doc]:
        return []

    async def last_modified(self, patient_id: str) -> int | None:
        return None

    async def read(self, patient_id: str, identifier: str) -> Doc | None:
        return None

    async def create(self, write: Write, doc: Doc) -> Stored:
        raise Api3Error(404, f"this hub does not keep {self.name}")

    async def update(self, write: Write, identifier: str, doc: Doc, *, patch: bool) -> Stored:
        raise Api3Error(404, f"this hub does not keep {self.name}")

    async def delete(self, write: Write, identifier: str) -> None:
        raise Api3Error(404, f"this hub does not keep {self.name}")


COLLECTIONS: dict[str, Callable[[web.Request], Collection]] = {
    "entries": Entries,
    "treatments": Treatments,
    "devicestatus": lambda _: Unstored("devicestatus"),
    "profile": lambda _: Unstored("profile"),
    "food": lambda _: Unstored("food"),
    "settings": lambda _: Unstored("settings"),
}
