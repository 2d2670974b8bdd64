"""Shared fixtures: temporary data dirs and registered patients/devices."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.store import Store
from tests.support.postgres import Postgres

# Generation speed depends on the machine's load, not on the code under test: a busy CI
# runner must not fail a property test for being slow to draw examples.
settings.register_profile("glucohub", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("glucohub")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[Store]:
    s = Store(data_dir)
    s.add_patient(Patient(patient_id="p1", display_name="Patient One", timezone="Europe/London"))
    s.add_patient(Patient(patient_id="p2", display_name="Patient Two"))
    s.add_device(
        Device(device_id="cgm-1", patient_id="p1", kind=DeviceKind.CGM, transport=Transport.MQTT)
    )
    s.add_device(
        Device(device_id="meter-2", patient_id="p2", kind=DeviceKind.METER, transport=Transport.BLE)
    )
    yield s
    s.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One PostgreSQL server for the whole run (initdb takes seconds); each test gets a database."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A fresh, empty database on the run's server."""
    return postgres_server.create_database(f"t_{next(_database_numbers)}")


_database_numbers = itertools.count(1)
