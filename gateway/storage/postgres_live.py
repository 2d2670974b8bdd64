"""Live events between the processes of a clinic, through PostgreSQL LISTEN/NOTIFY.

Whoever commits an alert transition (a worker's alert engine, a dashboard process where a
clinician acknowledged) calls `notify_alerts` inside the same transaction: PostgreSQL
delivers a NOTIFY only when its transaction commits, once to every connection listening
on the channel, so every dashboard process hears each committed transition exactly once
and never one that was rolled back. `PostgresLiveFeed` is a dashboard process's listening
connection, as the `LiveFeed` the dashboards already take.

A notification is at most 8,000 bytes (PostgreSQL's limit): an alert's JSON is well under.
While a listener is disconnected it misses what is sent; the dashboards re-read their
fragments on the next message and on every page load, so a missed message costs freshness,
not data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence

import psycopg
from psycopg import sql

from gateway.model import Alert
from gateway.protocols import AlertChanged, LiveEvent
from gateway.shapes import alert_from_json, alert_to_json
from gateway.storage.postgres_connection import CONNECT_TIMEOUT_S, storage_error

log = logging.getLogger("glucohub.live")

CHANNEL = "glucohub_live"


def notify_alerts(db: psycopg.Connection[tuple[object, ...]], alerts: Sequence[Alert]) -> None:
    """Queue a notification per alert transition (the caller owns the transaction)."""
    for alert in alerts:
        payload = json.dumps({"type": "alert", "alert": alert_to_json(alert)})
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def event_from_payload(payload: str) -> LiveEvent | None:
    """The live event a notification carries; None for one this version does not know."""
    try:
        message = json.loads(payload)
        if message.get("type") == "alert":
            return AlertChanged(alert=alert_from_json(message["alert"]))
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("live notification not understood, ignored: %s", exc)
    return None


class PostgresLiveFeed:
    """A `LiveFeed` from LISTEN on `CHANNEL`: one connection per subscription. A lost
    connection ends the subscription with a StorageError (the dashboard resubscribes)."""

    def __init__(self, url: str) -> None:
        self._url = url

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise storage_error(exc) from exc
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            async for notification in conn.notifies():
                event = event_from_payload(notification.payload)
                if event is not None:
                    yield event
        except psycopg.Error as exc:
            raise storage_error(exc, broken=True) from exc
        finally:
            await conn.close()
