"""Retention in SQLite: the readings of batches the clinic acknowledged, once old enough,
removed; the batch rows, leaves, tree and checkpoints kept (see `Retention`)."""

from __future__ import annotations

import json
from datetime import datetime

from gateway.clock import to_rfc3339
from gateway.storage.contract import PruneResult
from gateway.storage.sqlite_alerts import SqliteAlerts
from gateway.storage.sqlite_errors import translate_sqlite_errors


@translate_sqlite_errors
class SqliteRetention(SqliteAlerts):
    def prune_acknowledged(self, cutoff: datetime, now: datetime, *, limit: int) -> PruneResult:
        """See `Retention`: the oldest acknowledged batches first. Freed pages are reused by
        later writes (the file stops growing; it does not shrink)."""
        self._begin()
        try:
            seqs = [
                int(r[0])
                for r in self._db.execute(
                    "SELECT b.seq FROM batches AS b JOIN outbox AS o ON o.id = b.outbox_id "
                    "WHERE b.pruned_at IS NULL AND b.reading_count > 0 "
                    "AND o.sent_at IS NOT NULL AND b.last_time < ? ORDER BY b.seq LIMIT ?",
                    (to_rfc3339(cutoff), limit),
                )
            ]
            chosen = json.dumps(seqs)
            removed = self._db.execute(
                "DELETE FROM readings WHERE batch_seq IN (SELECT value FROM json_each(?))",
                (chosen,),
            ).rowcount
            self._db.execute(
                "UPDATE batches SET pruned_at = ? WHERE seq IN (SELECT value FROM json_each(?))",
                (to_rfc3339(now), chosen),
            )
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return PruneResult(batches=len(seqs), readings=removed)

    def pruned_batch_seqs(self, first: int, end: int) -> set[int]:
        rows = self._db.execute(
            "SELECT seq FROM batches WHERE seq >= ? AND seq < ? AND pruned_at IS NOT NULL",
            (first, end),
        )
        return {int(r[0]) for r in rows}
