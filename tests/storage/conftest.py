"""The `backend` fixture: every contract test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.storage.postgres_store import PostgresStore
from gateway.store import Store

AnyStore = Store | PostgresStore


@dataclass
class Backend:
    """One empty hub database; `open` gives another store object on it (its own connection)."""

    name: str
    data_dir: Path
    url: str | None = None
    opened: list[AnyStore] = field(default_factory=list)

    def open(self, *, read_only: bool = False) -> AnyStore:
        store: AnyStore
        if self.url is None:
            store = Store(self.data_dir, read_only=read_only)
        else:
            store = PostgresStore(self.url, read_only=read_only, data_dir=self.data_dir)
        self.opened.append(store)
        return store


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    b = Backend(request.param, tmp_path / "data", url)
    yield b
    for store in b.opened:
        store.close()


def register(store: AnyStore) -> None:
    store.add_patient(
        Patient(patient_id="p1", display_name="Patient One", timezone="Europe/London")
    )
    store.add_patient(Patient(patient_id="p2", display_name="Patient Two"))
    store.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    store.add_device(
        Device(device_id="meter-2", patient_id="p2", kind=DeviceKind.METER, transport=Transport.BLE)
    )


@pytest.fixture
def store(backend: Backend) -> AnyStore:
    """A store with patients p1 (cgm-1) and p2 (meter-2) registered."""
    s = backend.open()
    register(s)
    return s
