"""A device's collection stops when its patient forgets it, and only then."""

from __future__ import annotations

import asyncio

import pytest

from glucohub.devicestops import DeviceStops


async def test_forgetting_a_device_stops_only_its_collection() -> None:
    stops = DeviceStops()
    cancelled: list[str] = []

    async def collect_forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(name)
            raise

    meter = asyncio.create_task(stops.until_forgotten("meter", lambda: collect_forever("meter")))
    strap = asyncio.create_task(stops.until_forgotten("strap", lambda: collect_forever("strap")))
    await asyncio.sleep(0.01)
    stops.forget("meter")
    await asyncio.wait_for(meter, 1)  # returns normally: the supervisor sees it finished
    assert cancelled == ["meter"] and not strap.done()
    strap.cancel()
    with pytest.raises(asyncio.CancelledError):
        await strap
    # A source started after its device was forgotten does not run at all.
    started: list[str] = []

    async def record() -> None:
        started.append("meter")

    await stops.until_forgotten("meter", record)
    assert started == []


async def test_a_source_failing_on_its_own_still_raises_for_the_supervisor() -> None:
    async def broken() -> None:
        raise OSError("adapter gone")

    with pytest.raises(OSError, match="adapter gone"):
        await DeviceStops().until_forgotten("meter", broken)
