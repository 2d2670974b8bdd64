"""The clinical package's exception tree; each error carries the fields that locate it."""

from __future__ import annotations

from gateway.errors import GlucohubError


class ClinicalError(GlucohubError):
    """Base of the errors `gateway.clinical` raises on purpose."""


class UnknownAlert(ClinicalError):
    """The caller named an alert this patient's engine has no open record of (their fault)."""

    def __init__(self, patient_id: str, alert_id: str) -> None:
        super().__init__(f"patient {patient_id!r} has no open alert {alert_id!r}")
        self.patient_id = patient_id
        self.alert_id = alert_id


class EngineStateError(ClinicalError):
    """A persisted engine state cannot be restored (corrupt store or another version)."""

    def __init__(self, patient_id: str, key: str, reason: str) -> None:
        super().__init__(f"alert state of patient {patient_id!r}, key {key!r}: {reason}")
        self.patient_id = patient_id
        self.key = key
        self.reason = reason


class MetricsInputError(ClinicalError):
    """Glucose data handed to the metrics cannot be used (naive times, bad values, bad zone)."""

    def __init__(self, reason: str, *, patient_id: str | None = None) -> None:
        where = f" (patient {patient_id!r})" if patient_id else ""
        super().__init__(f"metrics input{where}: {reason}")
        self.patient_id = patient_id
        self.reason = reason


class InvalidSnooze(ClinicalError):
    """A snooze request that cannot be honoured (e.g. it ends before it starts)."""

    def __init__(self, patient_id: str, kind: str, reason: str) -> None:
        super().__init__(f"snooze of {kind!r} for patient {patient_id!r}: {reason}")
        self.patient_id = patient_id
        self.kind = kind
        self.reason = reason
