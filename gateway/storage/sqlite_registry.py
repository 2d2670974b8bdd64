"""Patients and devices in SQLite."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Mapping

from gateway.errors import RegistryError
from gateway.model import (
    Device,
    Patient,
)
from gateway.storage.rows import (
    PATIENT_COLUMNS,
    _device,
    _patient,
)
from gateway.storage.sqlite_base import SqliteBase
from gateway.storage.sqlite_errors import translate_sqlite_errors

log = logging.getLogger("glucohub.store")


@translate_sqlite_errors
class SqliteRegistry(SqliteBase):
    # -- registry -----------------------------------------------------------------------

    def add_patient(self, patient: Patient) -> None:
        try:
            self._db.execute(
                f"INSERT INTO patients ({PATIENT_COLUMNS}, name_fold, id_fold) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    patient.patient_id,
                    patient.display_name,
                    patient.timezone,
                    patient.simulated,
                    patient.team,
                    patient.ward,
                    # The triage list orders and searches by these (Python's casefold).
                    patient.display_name.casefold(),
                    patient.patient_id.casefold(),
                ),
            )
        except sqlite3.IntegrityError:
            raise RegistryError(f"patient {patient.patient_id!r} already exists") from None

    def assign_patient(self, patient_id: str, *, team: str | None, ward: str | None) -> None:
        cursor = self._db.execute(
            "UPDATE patients SET team = ?, ward = ? WHERE patient_id = ?",
            (team, ward, patient_id),
        )
        if cursor.rowcount != 1:
            raise RegistryError(f"unknown patient {patient_id!r}")

    def rename_patient(self, patient_id: str, *, display_name: str, timezone: str) -> None:
        cursor = self._db.execute(
            "UPDATE patients SET display_name = ?, timezone = ?, name_fold = ?"
            " WHERE patient_id = ?",
            (display_name, timezone, display_name.casefold(), patient_id),
        )
        if cursor.rowcount != 1:
            raise RegistryError(f"unknown patient {patient_id!r}")

    def get_patient(self, patient_id: str) -> Patient | None:
        row = self._db.execute(
            f"SELECT {PATIENT_COLUMNS} FROM patients WHERE patient_id = ?",
            (patient_id,),
        ).fetchone()
        return None if row is None else _patient(row)

    def list_patients(self) -> list[Patient]:
        rows = self._db.execute(f"SELECT {PATIENT_COLUMNS} FROM patients ORDER BY patient_id")
        return [_patient(row) for row in rows]

    def add_device(self, device: Device) -> None:
        if self.get_patient(device.patient_id) is None:
            raise RegistryError(f"unknown patient {device.patient_id!r}; add the patient first")
        try:
            self._db.execute(
                "INSERT INTO devices (device_id, patient_id, kind, transport, name, address, "
                "simulated, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    device.device_id,
                    device.patient_id,
                    device.kind.value,
                    device.transport.value,
                    device.name,
                    device.address,
                    device.simulated,
                    device.active,
                ),
            )
        except sqlite3.IntegrityError:
            if not self._reregister(device):
                raise RegistryError(f"device {device.device_id!r} already exists") from None
        self._devices = None

    def _reregister(self, device: Device) -> bool:
        """A removed device of the same patient paired again (a new battery, a new bond):
        active again under its id, its history kept. False if it is active or another's."""
        cursor = self._db.execute(
            "UPDATE devices SET kind = ?, transport = ?, name = ?, address = ?, simulated = ?, "
            "active = 1 WHERE device_id = ? AND patient_id = ? AND active = 0",
            (
                device.kind.value,
                device.transport.value,
                device.name,
                device.address,
                device.simulated,
                device.device_id,
                device.patient_id,
            ),
        )
        return cursor.rowcount == 1

    def remove_device(self, device_id: str) -> None:
        """Deactivate (never delete: stored readings still name it)."""
        cursor = self._db.execute(
            "UPDATE devices SET active = 0 WHERE device_id = ? AND active = 1", (device_id,)
        )
        if cursor.rowcount == 0:
            raise RegistryError(f"no active device {device_id!r}")
        self._devices = None

    def device_map(self) -> Mapping[str, Device]:
        """Every registered device by id, for validating each ingest chunk. Cached until
        this connection changes a device or another one commits anything (a CLI
        `devices add` while the hub runs): SQLite's data_version tells."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        if self._devices is None or version != self._devices_version:
            rows = self._db.execute(
                "SELECT device_id, patient_id, kind, transport, name, address, simulated, "
                "active FROM devices"
            )
            self._devices = {device.device_id: device for device in map(_device, rows)}
            self._devices_version = version
        return self._devices

    def get_device(self, device_id: str) -> Device | None:
        row = self._db.execute(
            "SELECT device_id, patient_id, kind, transport, name, address, simulated, active "
            "FROM devices WHERE device_id = ?",
            (device_id,),
        ).fetchone()
        return None if row is None else _device(row)

    def list_devices(self, patient_id: str | None = None) -> list[Device]:
        query = (
            "SELECT device_id, patient_id, kind, transport, name, address, simulated, active "
            "FROM devices"
        )
        params: tuple[str, ...] = ()
        if patient_id is not None:
            query += " WHERE patient_id = ?"
            params = (patient_id,)
        return [_device(row) for row in self._db.execute(query + " ORDER BY device_id", params)]
