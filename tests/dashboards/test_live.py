from __future__ import annotations

import asyncio
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from dashboards.accounts import Role, User
from dashboards.live import Broadcaster, Viewer, messages_for
from gateway.model import AlertKind, AlertLevel, Batch
from gateway.protocols import AlertChanged, BatchSealed, ReadingsStored
from tests.dashboards.fakes import NOW, alert, cgm

CLINICIAN = User(username="dr", role=Role.CLINICIAN)
PATIENT = User(username="ann", role=Role.PATIENT, patient_id="a")
BATCH = BatchSealed(
    batch=Batch(
        seq=3,
        reading_count=2,
        first_time=NOW,
        last_time=NOW,
        sealed_at=NOW,
        jws=b"x",
        leaf_hash=b"\x00" * 32,
    ),
    tree_size=4,
    root_hash=b"\xff" * 32,
)


def test_readings_are_split_per_patient_and_filtered() -> None:
    event = ReadingsStored(
        readings=(cgm("a", NOW, 100.0), cgm("b", NOW, 60.0), cgm("a", NOW, 101.0))
    )
    out = list(messages_for(event, CLINICIAN, frozenset({"a"})))
    assert [(m["patient_id"], len(m["readings"])) for m in out] == [("a", 2)]
    assert list(messages_for(event, CLINICIAN, frozenset())) == []


def test_alerts_of_invisible_patients_are_not_sent() -> None:
    event = AlertChanged(alert=alert("x", "b", AlertKind.LOW, AlertLevel.WARNING))
    assert list(messages_for(event, CLINICIAN, frozenset({"a"}))) == []
    assert [m["type"] for m in messages_for(event, CLINICIAN, frozenset({"b"}))] == ["alert"]


def test_batch_metadata_goes_to_staff_not_patients() -> None:
    (message,) = messages_for(BATCH, CLINICIAN, frozenset())
    # 32 bytes of 0xff in base64: ten groups "////" for 30 bytes, then 0xffff -> "//8=".
    assert message == {
        "type": "batch",
        "seq": 3,
        "tree_size": 4,
        "root_hash": "//////////////////////////////////////////8=",
    }
    assert list(messages_for(BATCH, PATIENT, frozenset({"a"}))) == []


async def test_viewer_queue_drops_oldest() -> None:
    viewer = Viewer(user=CLINICIAN, session_id=None, visible=frozenset({"a"}), maxlen=3)
    for i in range(5):
        viewer.offer({"n": i})
    assert viewer.dropped == 2 and viewer.pending() == 3
    assert [await viewer.next() for _ in range(3)] == [{"n": 2}, {"n": 3}, {"n": 4}]
    viewer.close()
    assert await viewer.next() is None


async def test_viewer_wakes_on_offer() -> None:
    viewer = Viewer(user=CLINICIAN, session_id=None, visible=frozenset())
    waiting = asyncio.ensure_future(viewer.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    viewer.offer({"n": 1})
    assert await asyncio.wait_for(waiting, 1.0) == {"n": 1}


@given(st.integers(1, 20), st.integers(0, 60))
def test_queue_keeps_the_newest(maxlen: int, count: int) -> None:
    viewer = Viewer(user=CLINICIAN, session_id=None, visible=frozenset(), maxlen=maxlen)
    for i in range(count):
        viewer.offer({"n": i})
    kept = list(viewer._queue)
    assert kept == [{"n": i} for i in range(max(0, count - maxlen), count)]
    assert viewer.dropped == max(0, count - maxlen)


def test_broadcaster_closes_only_the_logged_out_session() -> None:
    hub = Broadcaster()
    one = Viewer(user=CLINICIAN, session_id="s1", visible=frozenset({"a"}))
    two = Viewer(user=CLINICIAN, session_id="s2", visible=frozenset({"a"}))
    hub.add(one)
    hub.add(two)
    hub.publish(ReadingsStored(readings=(cgm("a", NOW + timedelta(minutes=5), 90.0),)))
    assert one.pending() == two.pending() == 1
    hub.close_session("s1")
    assert one.closed and not two.closed


def test_dropped_total_survives_viewers_leaving() -> None:
    hub = Broadcaster()
    slow = Viewer(user=CLINICIAN, session_id="s", visible=frozenset({"a"}), maxlen=1)
    hub.add(slow)
    for i in range(3):
        hub.publish(ReadingsStored(readings=(cgm("a", NOW + timedelta(minutes=5 * i), 90.0),)))
    assert hub.dropped_total == 2  # three messages into a queue of one
    hub.remove(slow)
    assert hub.dropped_total == 2
