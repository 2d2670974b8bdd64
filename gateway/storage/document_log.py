"""What the dashboards need of Nightscout documents and deletions: the async side of the
storage contract's `NightscoutDocuments`, implemented by `gateway.services.StoreDocuments`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from gateway.storage.contract import DocumentCollection, DocumentWrite, NightscoutDocument


class DocumentLog(Protocol):
    """Nightscout devicestatus and profile documents, and Nightscout deletions, for the
    dashboards: stored off the event loop (`gateway.storage.contract.NightscoutDocuments`)."""

    async def add(self, documents: Sequence[NightscoutDocument]) -> DocumentWrite: ...

    async def query(
        self,
        patient_id: str,
        collection: DocumentCollection,
        *,
        since: datetime,
        until: datetime,
        limit: int | None = None,
    ) -> list[NightscoutDocument]:
        """Newest first, deleted ones left out."""
        ...

    async def delete(
        self, patient_id: str, collection: DocumentCollection, record_keys: Sequence[str]
    ) -> int:
        """Hide the records and seal the deletion; the count newly hidden."""
        ...

    async def deleted(self, patient_id: str, collection: DocumentCollection) -> frozenset[str]: ...
