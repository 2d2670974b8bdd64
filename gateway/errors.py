"""The gateway's exception tree: each class says whose fault it is."""

from __future__ import annotations


class GlucohubError(Exception):
    """Base of every error the hub raises on purpose."""


class ConfigError(GlucohubError):
    """The user's configuration is wrong; the message names the key."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"config key {key!r}: {reason}")
        self.key = key
        self.reason = reason


class InputError(GlucohubError):
    """A device, uploader or user sent something we cannot accept."""


class UnknownUnit(InputError):
    def __init__(self, unit: str) -> None:
        super().__init__(f"unknown unit {unit!r}")
        self.unit = unit


class RegistryError(GlucohubError):
    """A patient or device registry operation was refused (unknown id, duplicate id)."""


class StorageError(GlucohubError):
    """The durable store failed or holds something it should not.

    Callers decide by subclass: a `TransientStorageError` may succeed if retried (the database
    restarted, a lock timed out, a connection dropped); a `PermanentStorageError` will not (a
    full disk, a schema from newer code, a corrupt or missing database, a constraint the data
    breaks). A bare `StorageError` is treated as permanent."""

    transient = False


class TransientStorageError(StorageError):
    """Retry later: nothing was written, and the same call may succeed."""

    transient = True


class PermanentStorageError(StorageError):
    """Retrying the same call will fail the same way; an operator must act."""
