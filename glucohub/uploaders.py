"""A patient's Nightscout uploader (xDrip+, Juggluco, a follower app): the hub device its
entries arrive as, and a secret for it. One implementation for `glucohub nightscout secret`
and the first-run setup page."""

from __future__ import annotations

from pathlib import Path

from dashboards.nightscout.links import UploaderLinks as UploaderLinks
from dashboards.nightscout.links import links as links
from gateway.errors import InputError
from gateway.model import Device, DeviceKind, Transport
from gateway.storage.contract import Registry
from glucohub import accounts


def nightscout_device_id(patient_id: str) -> str:
    """The hub device every Nightscout uploader of a patient sends as: one per patient, so the
    same entry uploaded by two apps (xDrip+ and AndroidAPS) is stored once."""
    return f"nightscout-{patient_id}"


def ensure_uploader_device(registry: Registry, patient_id: str) -> str:
    """Register the patient's uploader device if it is not there; return its id."""
    device_id = nightscout_device_id(patient_id)
    device = registry.get_device(device_id)
    if device is None:
        registry.add_device(
            Device(
                device_id=device_id,
                patient_id=patient_id,
                kind=DeviceKind.UPLOADER,  # sgv and mbg entries: CGM and meter glucose
                transport=Transport.HTTP,
                name="Nightscout uploader",
            )
        )
    elif device.patient_id != patient_id or not device.active:
        raise InputError(
            f"device {device_id} exists but is removed or another patient's; uploads"
            " would be refused"
        )
    return device_id


def create_secret(
    db_path: Path | str, patient_id: str, device_id: str, *, read_only: bool, label: str
) -> tuple[int, str]:
    """A new secret for the patient's uploader device: (its id, the secret, shown once)."""
    return accounts.nightscout_secret_create(
        db_path, patient_id, device_id, can_write=not read_only, label=label
    )
