"""One PostgreSQL connection as the storage backends hold it: opened the same way (UTC,
a connect timeout, the URL's own options kept), reopened after a loss, never left inside a
transaction, and psycopg's errors turned into the contract's."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from gateway.errors import PermanentStorageError, StorageError, TransientStorageError

Row = tuple[Any, ...]
Connection = psycopg.Connection[Row]

CONNECT_TIMEOUT_S = 10  # unless the URL says otherwise: a dead server fails, never hangs

# SQLSTATEs a retry may cure. Class 08: connection exceptions; 40001/40P01: serialization
# failure, deadlock; 40003: statement completion unknown; 55P03: lock not available;
# 57014: statement timeout; 57P01-57P03: admin/crash shutdown, cannot connect now;
# 53200/53300: out of memory, too many connections. 53100 (disk full) is not: an operator acts.
_TRANSIENT = (
    *("08", "40001", "40P01", "40003", "55P03", "57014", "57P01", "57P02", "57P03"),
    *("53200", "53300"),
)

P = ParamSpec("P")
T = TypeVar("T")


def storage_error(exc: psycopg.Error, *, broken: bool = False) -> StorageError:
    """psycopg's error as ours: transient when a retry may succeed, else permanent."""
    state = exc.sqlstate
    transient = broken or (
        state.startswith(_TRANSIENT)
        if state is not None
        else isinstance(exc, psycopg.OperationalError)
    )
    kind = TransientStorageError if transient else PermanentStorageError
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return kind(f"PostgreSQL: {detail}" + (f" (SQLSTATE {state})" if state else ""))


def connect(url: str, *, read_only: bool = False, settings: Sequence[str] = ()) -> Connection:
    """An autocommit connection to `url`, with these session `settings` ("name=value");
    StorageError if there is none."""
    try:
        given = conninfo_to_dict(url)
        # Times come back in UTC whatever the server's zone; a read-only store cannot write.
        options = [str(given.get("options") or ""), "-c TimeZone=UTC"]
        if read_only:
            options.append("-c default_transaction_read_only=on")
        options += [f"-c {setting}" for setting in settings]
        return psycopg.connect(
            url,
            autocommit=True,
            options=" ".join(o for o in options if o),
            connect_timeout=int(str(given.get("connect_timeout") or CONNECT_TIMEOUT_S)),
            application_name=str(given.get("application_name") or "glucohub"),
        )
    except psycopg.Error as exc:
        raise storage_error(exc) from exc


class PostgresConnection:
    """The connection a backend object holds, one thread at a time."""

    url: str
    read_only: bool = False
    _db: Connection

    def _open(self) -> Connection:
        return connect(self.url, read_only=self.read_only)

    def _lost(self) -> bool:
        return self._db.closed or self._db.broken

    def _connect_if_lost(self) -> None:
        if self._lost():
            self._db.close()
            self._db = self._open()

    def _end_open_transaction(self) -> None:
        """Never leave a transaction open (an error inside one, a caller's interrupt)."""
        if self._lost():
            return
        if self._db.info.transaction_status != TransactionStatus.IDLE:
            try:
                self._db.rollback()
            except psycopg.Error:
                self._db.close()

    def close(self) -> None:
        self._db.close()


C = TypeVar("C", bound=PostgresConnection)


def translated(method: Callable[Concatenate[C, P], T]) -> Callable[Concatenate[C, P], T]:
    """Run `method` on a live connection; psycopg's errors leave as StorageErrors."""

    @functools.wraps(method)
    def run(self: C, /, *args: P.args, **kwargs: P.kwargs) -> T:
        self._connect_if_lost()
        try:
            return method(self, *args, **kwargs)
        except psycopg.Error as exc:
            raise storage_error(exc, broken=self._lost()) from exc
        finally:
            self._end_open_transaction()

    return run
