"""Wiring of the dashboard accounts: the storage behind them, and the CLI's entry points.

The rules (`dashboards/accounts.py`) take any `AccountStorage`; this is where one is opened:
the hub's SQLite file, or a PostgreSQL database given by its URL. Each CLI function opens
the storage, runs one rule and closes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from dashboards import accounts
from dashboards.accounts import Accounts, ConsentCallback
from gateway.clock import Clock, SystemClock
from gateway.settings import StorageSettings
from gateway.storage.accounts import AccountStorage
from gateway.storage.opening import is_postgresql
from gateway.storage.sqlite_accounts import SqliteAccountStorage
from gateway.store import DB_FILENAME

_P = ParamSpec("_P")
_T = TypeVar("_T")


def open_account_storage(where: Path | str, *, clock: Clock | None = None) -> AccountStorage:
    """The account storage in the hub database `where`: a SQLite file's path, or a
    postgresql:// URL (created or migrated if needed)."""
    if isinstance(where, str) and is_postgresql(where):
        from gateway.storage.postgres_accounts import PostgresAccountStorage

        return PostgresAccountStorage(where)
    return SqliteAccountStorage.open(Path(where), now=(clock or SystemClock()).now())


def account_location(storage: StorageSettings) -> Path | str:
    """Where the accounts are: the PostgreSQL database of `[storage] url`, else the hub's
    SQLite file in the data directory."""
    return storage.url or storage.data_dir / DB_FILENAME


def open_accounts(
    db_path: Path | str,
    *,
    on_consent_change: ConsentCallback | None = None,
    clock: Clock | None = None,
) -> Accounts:
    """The web app's accounts on the hub database `db_path` (see `open_account_storage`)."""
    storage = open_account_storage(db_path, clock=clock)
    return Accounts(storage, on_consent_change=on_consent_change, clock=clock)


@contextmanager
def account_storage(db_path: Path | str) -> Iterator[AccountStorage]:
    storage = open_account_storage(db_path)
    try:
        yield storage
    finally:
        storage.close()


def _on_file(
    rule: Callable[Concatenate[AccountStorage, _P], _T],
) -> Callable[Concatenate[Path | str, _P], _T]:
    @functools.wraps(rule)
    def run(db_path: Path | str, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        with account_storage(db_path) as storage:
            return rule(storage, *args, **kwargs)

    return run


users_add = _on_file(accounts.users_add)
users_list = _on_file(accounts.users_list)
users_passwd = _on_file(accounts.users_passwd)
users_disable = _on_file(accounts.users_disable)
grant = _on_file(accounts.grant)
revoke = _on_file(accounts.revoke)
tokens_create = _on_file(accounts.tokens_create)
tokens_list = _on_file(accounts.tokens_list)
tokens_revoke = _on_file(accounts.tokens_revoke)
nightscout_secret_create = _on_file(accounts.nightscout_secret_create)
nightscout_secret_revoke = _on_file(accounts.nightscout_secret_revoke)
nightscout_token_create = _on_file(accounts.nightscout_token_create)
nightscout_secrets_list = _on_file(accounts.nightscout_secrets_list)
