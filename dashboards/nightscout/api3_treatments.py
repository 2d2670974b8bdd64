"""Nightscout API v3 `treatments`: created, found again, replaced and deleted through the
hub's `TreatmentLog` (validated, stored, sealed), which keeps srvCreated and srvModified."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

from aiohttp import web

from dashboards.context import deps
from dashboards.nightscout.api3 import (
    Api3Error,
    Doc,
    SearchQuery,
    check_immutable,
    from_ms,
    parse_dates,
    resolve_identifier,
    search,
    validate_common,
    validate_create,
)
from dashboards.nightscout.api3_auth import demand
from dashboards.nightscout.api3_collections import Stored, Write
from dashboards.nightscout.entries import MAX_WINDOW, EntriesRejected, epoch_ms
from dashboards.nightscout.treatments import parse_treatments, to_nightscout, treatment_id
from gateway.model import Treatment
from gateway.protocols import StoredTreatment, TreatmentLog

_SERVER_FIELDS = ("srvCreated", "srvModified", "subject", "modifiedBy", "isReadOnly")


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
    minutes = record.treatment.duration_min
    if minutes is not None:
        # NSClientV3 reads `duration` into a Kotlin Long (RemoteTreatment.kt): a fraction
        # would fail Gson's parse of the whole answer. The exact length is in ms.
        doc["duration"] = round(minutes)
        doc["durationInMilliseconds"] = round(minutes * 60_000)
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
