"""SQLite's exceptions as the storage contract's: transient (busy, locked) or permanent."""

from __future__ import annotations

import functools
import inspect
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from gateway.errors import PermanentStorageError, StorageError, TransientStorageError

_TRANSIENT = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT"}
_TRANSIENT_BASES = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_INTERRUPT}


def storage_error(exc: sqlite3.Error) -> StorageError:
    """The contract's error for one SQLite error, its message kept."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    code = getattr(exc, "sqlite_errorcode", None)
    transient = name in _TRANSIENT or (code is not None and code & 0xFF in _TRANSIENT_BASES)
    kind: type[StorageError] = TransientStorageError if transient else PermanentStorageError
    return kind(f"SQLite: {exc}" + (f" ({name})" if name else ""))


C = TypeVar("C", bound=type)


def translate_sqlite_errors(cls: C) -> C:
    """Wrap the constructor and each public method of `cls` so that a `sqlite3.Error` leaves it as a
    `StorageError` (generators too, for errors raised while iterating)."""
    for name, member in list(vars(cls).items()):
        if (name.startswith("_") and name != "__init__") or not inspect.isfunction(member):
            continue
        setattr(cls, name, _wrapped(member))
    return cls


def _wrapped(fn: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def generator(*args: Any, **kwargs: Any) -> Iterator[Any]:
            try:
                yield from fn(*args, **kwargs)
            except sqlite3.Error as exc:
                raise storage_error(exc) from exc

        return generator

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise storage_error(exc) from exc

    return call
