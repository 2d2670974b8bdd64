"""Nightscout API v3 `devicestatus` and `profile` over the hub's Nightscout documents (the
same store, validation and sealing rules as API v1's: `dashboards.nightscout.documents`).

A v3 document is found again by its `identifier` (Nightscout's uuid v5 when the uploader
sends none: `api3.resolve_identifier`), kept in the stored body; the stored `_id` is derived
from it, so a resend is stored once. Stored documents are not changed (a devicestatus is a
report of a moment; a new profile is a new document, as AndroidAPS sends it): a PUT or PATCH
of one is refused with 400, the status NSClientV3 skips over (see `api3_entries`). Their
server times are their own time: documents arrive as they are made, and are never modified.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta

from aiohttp import web

from dashboards.context import deps
from dashboards.nightscout.api3 import (
    Api3Error,
    Doc,
    SearchQuery,
    from_ms,
    parse_dates,
    resolve_identifier,
    search,
    validate_common,
    validate_create,
)
from dashboards.nightscout.api3_auth import demand
from dashboards.nightscout.api3_collections import Stored, Write
from dashboards.nightscout.documents import parse_documents, to_nightscout
from dashboards.nightscout.entries import MAX_WINDOW, EntriesRejected, epoch_ms
from gateway.storage.contract import DocumentCollection, NightscoutDocument
from gateway.storage.document_log import DocumentLog

# Read on the way in: the server's own fields and the v1 spelling of the id.
_SERVER_FIELDS = ("srvCreated", "srvModified", "subject", "modifiedBy", "isReadOnly", "_id")
_FUTURE = timedelta(days=1)


def stored_id(patient_id: str, collection: DocumentCollection, identifier: str) -> str:
    """The 24-hex `_id` a v3 document is stored under, from its identifier."""
    return hashlib.sha256(f"{patient_id}|{collection}|v3|{identifier}".encode()).hexdigest()[:24]


def _doc(document: NightscoutDocument) -> Doc:
    out = to_nightscout(document)
    identifier = out.get("identifier") or document.doc_id
    ms = epoch_ms(document.created_at)
    doc: Doc = {"identifier": identifier}
    doc.update((k, v) for k, v in out.items() if k not in ("_id", "identifier", "utcOffset"))
    doc.update(date=ms, srvCreated=ms, srvModified=ms, isValid=True)
    return doc


class Documents:
    """One document collection of the patient (`devicestatus` or `profile`)."""

    def __init__(self, request: web.Request, collection: DocumentCollection) -> None:
        self.name = collection.value
        self._collection = collection
        self._deps = deps(request)

    @property
    def _log(self) -> DocumentLog:
        log = self._deps.documents
        if log is None:
            raise Api3Error(404, f"this hub does not keep {self.name}")
        return log

    async def _all(self, patient_id: str, since: datetime, until: datetime) -> list[Doc]:
        """Oldest first (as history answers)."""
        found = await self._log.query(patient_id, self._collection, since=since, until=until)
        return [_doc(d) for d in sorted(found, key=lambda d: (d.created_at, d.doc_id))]

    async def search(
        self, patient_id: str, query: SearchQuery, *, since: datetime, until: datetime
    ) -> list[Doc]:
        return search(await self._all(patient_id, since, until), query)

    async def history(self, patient_id: str, *, after_ms: int, limit: int) -> list[Doc]:
        until = self._deps.clock.now() + _FUTURE
        return (await self._all(patient_id, from_ms(after_ms + 1), until))[:limit]

    async def last_modified(self, patient_id: str) -> int | None:
        now = self._deps.clock.now()
        found = await self._log.query(
            patient_id, self._collection, since=now - MAX_WINDOW, until=now + _FUTURE, limit=1
        )
        return epoch_ms(found[0].created_at) if found else None

    async def _find(self, patient_id: str, identifier: str) -> NightscoutDocument | None:
        now = self._deps.clock.now()
        recent = await self._log.query(
            patient_id, self._collection, since=now - MAX_WINDOW, until=now + _FUTURE
        )
        wanted = stored_id(patient_id, self._collection, identifier)
        return next(
            (d for d in recent if d.doc_id in (wanted, identifier)),
            None,
        )

    async def read(self, patient_id: str, identifier: str) -> Doc | None:
        found = await self._find(patient_id, identifier)
        return None if found is None else _doc(found)

    async def create(self, write: Write, doc: Doc) -> Stored:
        demand(write.caller, self.name, "create")
        parse_dates(doc)
        resolve_identifier(doc)
        validate_create(doc)
        return await self._store(write, doc)

    async def update(self, write: Write, identifier: str, doc: Doc, *, patch: bool) -> Stored:
        demand(write.caller, self.name, "update")
        if await self._find(write.patient_id, identifier) is not None:
            raise Api3Error(400, f"stored {self.name} documents are not changed")
        if patch:
            raise Api3Error(404)
        demand(write.caller, self.name, "create")  # PUT of a new one: an insert
        parse_dates(doc)
        doc["identifier"] = identifier
        validate_common(doc)
        return await self._store(write, doc)

    async def delete(self, write: Write, identifier: str) -> None:
        """Hidden from every read and the deletion sealed (nothing stored is removed)."""
        demand(write.caller, self.name, "delete")
        found = await self._find(write.patient_id, identifier)
        if found is None or not await self._log.delete(
            write.patient_id, self._collection, [found.doc_id]
        ):
            raise Api3Error(404)

    async def _store(self, write: Write, doc: Doc) -> Stored:
        identifier = str(doc["identifier"])
        body = {k: v for k, v in doc.items() if k not in _SERVER_FIELDS}
        try:
            (item,) = parse_documents(
                json.dumps(body).encode(),
                collection=self._collection,
                patient_id=write.patient_id,
                now=self._deps.clock.now(),
            )
        except EntriesRejected as exc:
            raise Api3Error(400, str(exc), exc.reason) from None
        if item.error is not None:
            raise Api3Error(400, str(item.error), item.error.reason)
        assert item.document is not None
        document = NightscoutDocument(
            patient_id=item.document.patient_id,
            collection=self._collection,
            doc_id=stored_id(write.patient_id, self._collection, identifier),
            created_at=item.document.created_at,
            body=item.document.body,
        )
        done = await self._log.add([document])
        return Stored(
            status=201 if done.added else 200,
            identifier=identifier,
            last_modified_ms=epoch_ms(document.created_at),
            deduplicated=not done.added,
        )
