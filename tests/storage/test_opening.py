"""`open_storage` gives each backend behind the one contract, by `[storage] url`."""

from __future__ import annotations

from pathlib import Path

from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from gateway.storage.postgres_migrations import SCHEMA_VERSION as PG_VERSION
from gateway.storage.postgres_store import PostgresStore
from gateway.storage.sqlite_migrations import SCHEMA_VERSION as SQLITE_VERSION
from gateway.store import DB_FILENAME, Store


def test_an_empty_url_is_sqlite_in_the_data_directory(tmp_path: Path) -> None:
    store: HubStorage = open_storage(tmp_path)
    try:
        assert isinstance(store, Store)
        assert store.location == str(tmp_path / DB_FILENAME)
        assert store.schema_version == SQLITE_VERSION
    finally:
        store.close()


def test_a_postgresql_url_is_postgresql_and_its_password_is_never_shown(
    tmp_path: Path, postgres_url: str
) -> None:
    with_password = postgres_url.replace("@", ":hunter2-secret@", 1)
    store: HubStorage = open_storage(tmp_path, with_password)
    try:
        assert isinstance(store, PostgresStore)
        assert store.schema_version == PG_VERSION
        assert "hunter2-secret" not in store.location
        assert store.location.startswith("postgresql://")
    finally:
        store.close()
    assert not (tmp_path / DB_FILENAME).exists()  # nothing of SQLite was made
