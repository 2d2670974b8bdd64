"""Open the hub's storage backend that the settings name: SQLite in the data directory, or
PostgreSQL at `[storage] url`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gateway.errors import ConfigError
from gateway.storage.contract import HubStorage

StorageOpener = Callable[[], HubStorage]


def open_storage(data_dir: Path, url: str = "", *, read_only: bool = False) -> HubStorage:
    """A new storage object (one connection) for one thread."""
    if not url:
        from gateway.store import Store

        return Store(data_dir, read_only=read_only)
    try:
        # Imported only here: psycopg is an optional dependency of a SQLite-only hub.
        backend = importlib.import_module("gateway.storage.postgres_store")
    except ModuleNotFoundError as exc:
        if exc.name not in ("psycopg", "psycopg_binary"):
            raise
        raise ConfigError(
            "storage.url",
            "PostgreSQL needs psycopg: pip install 'glucohub[postgresql]'",
        ) from None
    store: HubStorage = backend.PostgresStore(url, read_only=read_only, data_dir=data_dir)
    return store


def storage_opener(data_dir: Path, url: str = "", *, read_only: bool = False) -> StorageOpener:
    """`open_storage` with its arguments bound, for threads that open their own."""
    return lambda: open_storage(data_dir, url, read_only=read_only)


@dataclass(frozen=True, slots=True)
class StorageLocation:
    """Where the hub's storage is, as a value another process can be handed (it pickles) to
    open a connection of its own: the report worker reads readings this way."""

    data_dir: Path
    url: str = ""

    def open(self, *, read_only: bool = False) -> HubStorage:
        return open_storage(self.data_dir, self.url, read_only=read_only)


def is_postgresql(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))
