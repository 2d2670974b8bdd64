"""Live events between the processes of a clinic, through PostgreSQL LISTEN/NOTIFY.

Whoever commits an alert transition (a worker's alert engine, a dashboard process where a
clinician acknowledged) calls `notify_alerts` inside the same transaction, and a worker
that stores readings calls `notify_readings` once per group: PostgreSQL delivers a NOTIFY
only when its transaction commits, once to every connection listening on the channel, so
every dashboard process hears each committed change exactly once and never one that was
rolled back. `PostgresLiveFeed` is a dashboard process's listening connection, as the
`LiveFeed` the dashboards already take: alerts arrive as `AlertChanged`, new readings as
`ReadingsStored`, the events a hub's pipeline publishes, so the dashboards filter them per
viewer (`dashboards.live`) and refresh their fragments exactly as on a hub. A worker that
applies a hub's consent change calls `notify_consent` there and then, so each listener has
its viewers' patients re-read (`on_consent`) before it passes on anything stored after it:
a revocation stops a clinician's stream at once, not within the second the dashboards
otherwise allow for a revocation made elsewhere.

A notification is shorter than 8,000 bytes (PostgreSQL's limit): an alert's JSON is well
under. A group's readings are announced, not carried: their patients and the smallest
ranges of reading ids and times that hold them; the feed reads them back with one indexed
query (`announced_readings`). The group holds its hubs' rows locked (`postgres_clinic_group`)
and a patient belongs to one hub, so no other transaction writes those patients' readings
inside the group's id range: the patients and the ranges select exactly what the group
stored. When the patients' names would not fit, the notification names none and the feed
reads every reading in the ranges, which may repeat a concurrent group's (a refresh too
many, never one missing).

While a listener is disconnected it misses what is sent; the dashboards re-read their
fragments on the next message and on every page load, so a missed message costs freshness,
not data.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from gateway.model import Alert, Reading
from gateway.protocols import AlertChanged, LiveEvent, ReadingsStored
from gateway.shapes import alert_from_json, alert_to_json
from gateway.storage.postgres_connection import CONNECT_TIMEOUT_S, storage_error
from gateway.storage.postgres_store import _READING_COLUMNS
from gateway.storage.rows import reading_from_row

log = logging.getLogger("glucohub.live")

CHANNEL = "glucohub_live"
# PostgreSQL, NOTIFY: "the payload string [...] must be shorter than 8000 bytes".
NOTIFY_MAX_BYTES = 7999
# Readings one announcement passes on in full; beyond, the newest of each kind per patient.
ANNOUNCED_READINGS_MAX = 5000


def notify_alerts(db: psycopg.Connection[tuple[object, ...]], alerts: Sequence[Alert]) -> None:
    """Queue a notification per alert transition (the caller owns the transaction)."""
    for alert in alerts:
        payload = json.dumps({"type": "alert", "alert": alert_to_json(alert)})
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def notify_consent(db: psycopg.Connection[tuple[object, ...]]) -> None:
    """Queue the notification that who may see whom changed (the caller owns the
    transaction). PostgreSQL delivers identical notifications of one transaction once, at
    the first one's place."""
    db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, json.dumps({"type": "consent"})))


@dataclass(slots=True)
class NewReadings:
    """The readings one transaction stored, as `notify_readings` announces them: their
    patients and the smallest ranges of reading ids and stored times that hold them."""

    patients: set[str] = field(default_factory=set)
    ids: tuple[int, int] | None = None
    times: tuple[datetime, datetime] | None = None

    def add_all(
        self, patient_ids: Sequence[str], reading_ids: Sequence[int], times: Sequence[datetime]
    ) -> None:
        """`add` each (patient, reading id, time) of the three sequences."""
        if not reading_ids:
            return
        self.patients.update(patient_ids)
        low, high = min(reading_ids), max(reading_ids)
        first, last = min(times), max(times)
        self.ids = (
            (low, high) if self.ids is None else (min(self.ids[0], low), max(self.ids[1], high))
        )
        self.times = (
            (first, last)
            if self.times is None
            else (min(self.times[0], first), max(self.times[1], last))
        )

    def add(self, patient_id: str, reading_id: int, time: datetime) -> None:
        self.patients.add(patient_id)
        self.ids = (
            (reading_id, reading_id)
            if self.ids is None
            else (min(self.ids[0], reading_id), max(self.ids[1], reading_id))
        )
        self.times = (
            (time, time)
            if self.times is None
            else (min(self.times[0], time), max(self.times[1], time))
        )


def readings_payload(new: NewReadings) -> str | None:
    """The notification announcing `new` (None when it holds nothing): the patients named
    when they fit in a notification, else none (read: every reading in the ranges)."""
    if new.ids is None or new.times is None:
        return None
    message: dict[str, Any] = {
        "type": "readings",
        "ids": list(new.ids),
        "times": [t.isoformat() for t in new.times],
        "patients": sorted(new.patients),
    }
    payload = json.dumps(message, separators=(",", ":"))
    if len(payload.encode()) > NOTIFY_MAX_BYTES:
        del message["patients"]
        payload = json.dumps(message, separators=(",", ":"))
    return payload


def notify_readings(db: psycopg.Connection[tuple[object, ...]], new: NewReadings) -> None:
    """Queue the one notification announcing `new` (the caller owns the transaction)."""
    payload = readings_payload(new)
    if payload is not None:
        db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


@dataclass(frozen=True, slots=True, kw_only=True)
class Announcement:
    """New readings as a notification announced them; `patients` None: every patient."""

    ids: tuple[int, int]
    times: tuple[datetime, datetime]
    patients: tuple[str, ...] | None


@dataclass(frozen=True, slots=True)
class ConsentChanged:
    """Who may see whom changed in the database."""


Message = AlertChanged | Announcement | ConsentChanged


def message_from_payload(payload: str) -> Message | None:
    """What a notification carries; None for one this version does not know."""
    try:
        message = json.loads(payload)
        kind = message.get("type")
        if kind == "alert":
            return AlertChanged(alert=alert_from_json(message["alert"]))
        if kind == "consent":
            return ConsentChanged()
        if kind == "readings":
            first, last = (int(i) for i in message["ids"])
            earliest, latest = (datetime.fromisoformat(str(t)) for t in message["times"])
            patients = message.get("patients")
            return Announcement(
                ids=(first, last),
                times=(earliest, latest),
                patients=None if patients is None else tuple(str(p) for p in patients),
            )
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        log.warning("live notification not understood, ignored: %s", exc)
    return None


async def announced_readings(
    conn: psycopg.AsyncConnection[tuple[Any, ...]],
    announced: Announcement,
    *,
    limit: int = ANNOUNCED_READINGS_MAX,
) -> list[Reading]:
    """The readings `announced` names, in the order they were stored. More than `limit`
    (a hub's backlog arriving at once): the newest of each kind per patient, which is what
    the pages refetch to show, so a huge group costs the listeners no more than a small one."""
    where = "id BETWEEN %s AND %s AND time BETWEEN %s AND %s"
    params: list[object] = [*announced.ids, *announced.times]
    if announced.patients is not None:
        where += " AND patient_id = ANY(%s::text[])"
        params.append(list(announced.patients))
    columns = f"{_READING_COLUMNS}, received_at"
    cursor = await conn.execute(
        f"SELECT {columns} FROM readings WHERE {where} ORDER BY id LIMIT %s".encode(),
        [*params, limit + 1],
    )
    rows = await cursor.fetchall()
    if len(rows) > limit:
        cursor = await conn.execute(
            f"SELECT * FROM (SELECT DISTINCT ON (patient_id, kind) {columns} FROM readings"
            f" WHERE {where} ORDER BY patient_id, kind, time DESC, id DESC) AS newest"
            " ORDER BY id".encode(),
            params,
        )
        rows = await cursor.fetchall()
    return [reading_from_row(row) for row in rows]


class PostgresLiveFeed:
    """A `LiveFeed` from LISTEN on `CHANNEL`: one connection per subscription, which also
    reads the readings each notification announces. `on_consent` is called, before the
    next event is yielded, when a consent change was committed. A lost connection ends the
    subscription with a StorageError (the dashboard resubscribes)."""

    def __init__(
        self,
        url: str,
        *,
        readings_max: int = ANNOUNCED_READINGS_MAX,
        on_consent: Callable[[], None] | None = None,
    ) -> None:
        self._url = url
        self._readings_max = readings_max
        self._on_consent = on_consent

    async def subscribe(self) -> AsyncIterator[LiveEvent]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S
            )
        except psycopg.Error as exc:
            raise storage_error(exc) from exc
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(CHANNEL)))
            while True:
                # Out of the generator before querying: it holds the connection while it
                # runs, and psycopg keeps what arrives meanwhile for the next round.
                received = [n.payload async for n in conn.notifies(stop_after=1)]
                for payload in received:
                    message = message_from_payload(payload)
                    if isinstance(message, Announcement):
                        readings = await announced_readings(conn, message, limit=self._readings_max)
                        if readings:
                            yield ReadingsStored(readings=tuple(readings))
                    elif isinstance(message, ConsentChanged):
                        if self._on_consent is not None:
                            self._on_consent()
                    elif message is not None:
                        yield message
        except psycopg.Error as exc:
            raise storage_error(exc, broken=True) from exc
        finally:
            await conn.close()
