"""Nightscout API v3's collections over the hub's storage: the `Collection` each name is
served by, and what a write hands it.

The generic operations (lib/api3/generic/*) are the route layer's (`api3_routes`, which also
holds the name -> collection table); a collection only answers "which documents", "find this
one" and "store this". `api3_entries` serves the patient's readings (sealed, so read-only
documents), `api3_treatments` their treatments. Other collections (devicestatus, profile,
food, settings) plug in as a module like those and a line in the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiohttp import web

from dashboards.nightscout.api3 import Api3Error, Doc, SearchQuery
from gateway.model import Source
from gateway.protocols import Origin
from gateway.storage.accounts import NightscoutSecretRecord


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
