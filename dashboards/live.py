"""Live events for browsers: one subscription to the hub's `LiveFeed`, fanned out per viewer.

Each viewer (one open WebSocket) has its own bounded queue that drops its OLDEST message
when full, so a slow tablet never holds up the hub or other viewers; the browser refetches
server-rendered fragments on each message, so losing old messages loses nothing that
matters. Filtering happens here: a viewer only ever receives events of patients it may see.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from dashboards.accounts import Role, User
from dashboards.alerttext import alert_text
from gateway.clock import to_rfc3339
from gateway.model import Alert, AlertState
from gateway.protocols import AlertChanged, BatchSealed, LiveEvent, ReadingsStored
from gateway.shapes import alert_to_json

DEFAULT_VIEWER_QUEUE = 1000


def as_seen_by(alert: Alert, user: User) -> Alert:
    """The alert as `user`'s view shows it: a patient's own acknowledgement or snooze makes it
    acknowledged on the patient's pages and notifications only; the care team sees it raised
    (and escalating) until a clinician acknowledges it or it resolves."""
    if (
        user.role is Role.PATIENT
        and alert.state is AlertState.RAISED
        and alert.patient_acknowledged_by is not None
    ):
        return replace(
            alert,
            state=AlertState.ACKNOWLEDGED,
            acknowledged_by=alert.patient_acknowledged_by,
            acknowledged_at=alert.patient_acknowledged_at,
        )
    return alert


def messages_for(event: LiveEvent, user: User, visible: frozenset[str]) -> Iterator[dict[str, Any]]:
    """The JSON messages `user` (who may see `visible`) receives for `event`; maybe none."""
    if isinstance(event, ReadingsStored):
        by_patient: dict[str, list[dict[str, Any]]] = {}
        for r in event.readings:
            if r.patient_id in visible:
                by_patient.setdefault(r.patient_id, []).append(
                    {"time": to_rfc3339(r.time), "kind": r.kind.value, "value": r.value}
                )
        for patient_id, readings in by_patient.items():
            yield {"type": "readings", "patient_id": patient_id, "readings": readings}
    elif isinstance(event, AlertChanged):
        if event.alert.patient_id in visible:
            seen = alert_to_json(as_seen_by(event.alert, user))
            # `message` stays the engine's; `text` is what the viewer reads, in their unit.
            seen["text"] = alert_text(event.alert, user.unit)
            yield {"type": "alert", "alert": seen}
    elif isinstance(event, BatchSealed) and user.role is not Role.PATIENT:
        # What the public log shows anyway (sequence, tree size, root); not the batch's
        # reading count, which counts patients this viewer may not see.
        yield {
            "type": "batch",
            "seq": event.batch.seq,
            "tree_size": event.tree_size,
            "root_hash": base64.b64encode(event.root_hash).decode("ascii"),
        }


def message_patient(message: dict[str, Any]) -> str | None:
    """The patient a live message is about (None for batch metadata)."""
    alert = message.get("alert")
    found = alert.get("patient_id") if isinstance(alert, dict) else message.get("patient_id")
    return found if isinstance(found, str) else None


@dataclass(eq=False, slots=True, kw_only=True)
class Viewer:
    """One open live channel: who is watching, what they may see, and their pending messages.

    `visible` was read from the accounts store when their consent version was
    `consent_version` and at monotonic time `checked_at`; the sender re-checks it before
    each message when either is out of date, so a revocation stops the stream at once.
    """

    user: User
    session_id: str | None
    visible: frozenset[str]
    consent_version: int = 0
    checked_at: float = 0.0
    maxlen: int = DEFAULT_VIEWER_QUEUE
    dropped: int = 0
    closed: bool = False
    _queue: deque[dict[str, Any]] = field(init=False)
    _ready: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._queue = deque(maxlen=self.maxlen)

    def offer(self, message: dict[str, Any]) -> None:
        """Queue without waiting; the oldest pending message goes when the queue is full."""
        if len(self._queue) == self.maxlen:
            self.dropped += 1
        self._queue.append(message)
        self._ready.set()

    def close(self) -> None:
        self.closed = True
        self._ready.set()

    async def next(self) -> dict[str, Any] | None:
        """The next message, or None once the viewer is closed."""
        while not self._queue:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        return self._queue.popleft()

    def pending(self) -> int:
        return len(self._queue)


@dataclass(slots=True)
class Broadcaster:
    viewers: set[Viewer] = field(default_factory=set)
    events_seen: int = 0
    dropped_closed: int = 0  # drops of viewers that have gone, so the total never goes down

    @property
    def dropped_total(self) -> int:
        """Messages dropped (oldest first) from slow viewers' queues since start."""
        return self.dropped_closed + sum(v.dropped for v in self.viewers)

    def publish(self, event: LiveEvent) -> None:
        self.events_seen += 1
        for viewer in list(self.viewers):
            for message in messages_for(event, viewer.user, viewer.visible):
                viewer.offer(message)

    def add(self, viewer: Viewer) -> None:
        self.viewers.add(viewer)

    def remove(self, viewer: Viewer) -> None:
        if viewer in self.viewers:
            self.viewers.discard(viewer)
            self.dropped_closed += viewer.dropped

    def close_session(self, session_id: str) -> None:
        for viewer in list(self.viewers):
            if viewer.session_id == session_id:
                viewer.close()

    def close_all(self) -> None:
        for viewer in list(self.viewers):
            viewer.close()
