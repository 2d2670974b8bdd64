"""`glucohub backup` and `glucohub restore` of a SQLite hub: files, SQLite, the restore marker.

Backup: SQLite's online backup API copies the database from a read connection into a
temporary file in the data directory (one step, so one consistent snapshot while `glucohub
run` goes on writing to its WAL; a file copy of a WAL database can be torn), which is then
streamed as a tar archive through `gateway.backup_format` into `<out>.tmp-*` (0600), synced
and renamed. Restore decrypts into temporary files beside their destinations and renames them
only once the last chunk has authenticated: a wrong passphrase or a damaged file writes nothing.

The restored database carries a restore marker (`meta` row "restored"): until the size of the
last checkpoint the hub published is known and matches, the hub does not seal (see
`gateway.sealing.restored_log_hold`).
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gateway.backup_format import Decryptor, Encryptor
from gateway.errors import InputError
from gateway.sealing import (
    BATCH_KEY_FILE,
    BATCH_PUBLIC_FILE,
    KEYS_DIR,
    LOG_KEY_FILE,
    LOG_PUBLIC_FILE,
)
from gateway.storage.sqlite_backup import Published, mark_restored, snapshot
from gateway.storage.sqlite_backup import learn_published as learn_published_in_db
from gateway.store import DB_FILENAME, Store

PRIVATE_KEYS = (f"{KEYS_DIR}/{BATCH_KEY_FILE}", f"{KEYS_DIR}/{LOG_KEY_FILE}")
PUBLIC_KEYS = (f"{KEYS_DIR}/{BATCH_PUBLIC_FILE}", f"{KEYS_DIR}/{LOG_PUBLIC_FILE}")
MEMBERS = (DB_FILENAME, *PRIVATE_KEYS, *PUBLIC_KEYS)  # nothing else is ever restored
_READ_BYTES = 1 << 16


@dataclass(frozen=True, slots=True, kw_only=True)
class BackupReport:
    out: Path
    bytes_written: int
    with_keys: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreReport:
    data_dir: Path
    tree_size: int
    readings: int
    keys_restored: bool
    hold: str | None  # why sealing stays held, or None: the hub seals again


# -- backup -----------------------------------------------------------------------------


def backup(data_dir: Path, out: Path, passphrase: str, *, with_keys: bool) -> BackupReport:
    db_path = data_dir / DB_FILENAME
    if not db_path.is_file():
        raise InputError(f"no Glucohub database ({DB_FILENAME}) in {data_dir}; check --data-dir")
    files: list[tuple[str, Path]] = [
        (name, data_dir / name) for name in PUBLIC_KEYS if (data_dir / name).is_file()
    ]
    if with_keys:
        missing = [name for name in PRIVATE_KEYS if not (data_dir / name).is_file()]
        if missing:
            raise InputError(f"--with-keys: {data_dir / missing[0]} does not exist")
        files += [(name, data_dir / name) for name in PRIVATE_KEYS]
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: {out.parent} is not a directory")
    encryptor = Encryptor(passphrase)  # derives the key: refuses an empty passphrase first
    with _temporary(data_dir, ".backup-", ".sqlite3") as copy:
        snapshot(db_path, copy)
        with _temporary(out.parent, f".{out.name}.tmp-", "") as tmp:
            with tmp.open("wb") as raw:
                sink = _EncryptingFile(raw, encryptor)
                with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                    _add(tar, DB_FILENAME, copy)
                    for name, path in files:
                        _add(tar, name, path)
                sink.finish()
                raw.flush()
                os.fsync(raw.fileno())
                written = sink.written
            tmp.replace(out)
    _sync_dir(out.parent)
    return BackupReport(out=out, bytes_written=written, with_keys=with_keys)


def _add(tar: tarfile.TarFile, name: str, path: Path) -> None:
    info = tarfile.TarInfo(name)
    info.size = path.stat().st_size
    info.mode = 0o600
    info.mtime = int(path.stat().st_mtime)
    with path.open("rb") as handle:
        tar.addfile(info, handle)


class _EncryptingFile(io.RawIOBase):
    """The write end tarfile sees: everything written goes through the encryptor."""

    def __init__(self, raw: BinaryIO, encryptor: Encryptor) -> None:
        self._raw = raw
        self._encryptor = encryptor
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self._put(self._encryptor.feed(bytes(data)))
        return len(data)

    def finish(self) -> None:
        self._put(self._encryptor.finish())

    def _put(self, data: bytes) -> None:
        self._raw.write(data)
        self.written += len(data)


# -- restore ----------------------------------------------------------------------------


def restore(
    backup_file: Path,
    data_dir: Path,
    passphrase: str,
    *,
    force: bool,
    published: Sequence[Published],
) -> RestoreReport:
    db_path = data_dir / DB_FILENAME
    if db_path.exists() and not force:
        raise InputError(f"{db_path} exists; --force replaces it (stop the hub first)")
    if data_dir.exists() and not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} is not a directory")
    try:
        handle = backup_file.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read the backup {backup_file}: {exc.strerror}") from None
    created_dir = not data_dir.exists()
    keys_dir_existed = (data_dir / KEYS_DIR).exists()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    staged: dict[str, Path] = {}
    try:
        with handle:
            _unpack(handle, Decryptor(passphrase), data_dir, staged)
        if DB_FILENAME not in staged:
            raise InputError("the backup holds no database; nothing was restored")
        if not force:
            clash = [name for name, tmp in staged.items() if _differs(data_dir / name, tmp)]
            if clash:
                raise InputError(f"{data_dir / clash[0]} exists; --force replaces it")
        tree_size, readings, hold = mark_restored(staged[DB_FILENAME], published)
        keys_restored = all(name in staged for name in PRIVATE_KEYS)
        _install(staged, data_dir)
    except BaseException:
        for path in staged.values():
            path.unlink(missing_ok=True)
        if not keys_dir_existed:
            with contextlib.suppress(OSError):
                (data_dir / KEYS_DIR).rmdir()
        if created_dir:
            with contextlib.suppress(OSError):
                data_dir.rmdir()
        raise
    Store(data_dir).close()  # a backup from an earlier version: upgraded, as `migrate` would
    return RestoreReport(
        data_dir=data_dir,
        tree_size=tree_size,
        readings=readings,
        keys_restored=keys_restored,
        hold=hold,
    )


def _differs(existing: Path, restored: Path) -> bool:
    """An existing file restore would replace with other contents (the same public key
    copied beforehand is no clash)."""
    if not existing.exists():
        return False
    if existing.name == DB_FILENAME:
        return True
    return existing.read_bytes() != restored.read_bytes()


def _unpack(
    handle: BinaryIO, decryptor: Decryptor, data_dir: Path, staged: dict[str, Path]
) -> None:
    """Decrypt and unpack into temporary files (added to `staged` as they are made)."""
    reader = _DecryptingFile(handle, decryptor)
    try:
        with tarfile.open(fileobj=reader, mode="r|") as tar:
            for member in tar:
                if member.name not in MEMBERS or not member.isfile() or member.name in staged:
                    raise InputError(f"the backup holds an unexpected entry {member.name!r}")
                target = data_dir / member.name
                target.parent.mkdir(exist_ok=True, mode=0o700)
                tmp = target.with_name(f".{target.name}.restore-{secrets.token_hex(4)}")
                staged[member.name] = tmp
                source = tar.extractfile(member)
                assert source is not None  # a regular file
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := source.read(_READ_BYTES):
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
    except tarfile.TarError as exc:
        raise InputError(
            f"the backup's contents are unreadable ({exc}); nothing restored"
        ) from None
    reader.drain()  # the end of the archive is not the end of the stream: check it all


class _DecryptingFile(io.RawIOBase):
    def __init__(self, raw: BinaryIO, decryptor: Decryptor) -> None:
        self._raw = raw
        self._decryptor = decryptor
        self._plain = bytearray()
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._plain and not self._eof:
            data = self._raw.read(_READ_BYTES)
            if data:
                self._plain += self._decryptor.feed(data)
            else:
                self._plain += self._decryptor.finish()
                self._eof = True
        count = min(len(buffer), len(self._plain))
        buffer[:count] = self._plain[:count]
        del self._plain[:count]
        return count

    def drain(self) -> None:
        while self.readinto(memoryview(bytearray(_READ_BYTES))):
            pass


def _install(staged: dict[str, Path], data_dir: Path) -> None:
    db_path = data_dir / DB_FILENAME
    # A WAL left by the database being replaced would be replayed into the restored one.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    for name, tmp in list(staged.items()):
        tmp.replace(data_dir / name)
        del staged[name]
    _sync_dir(data_dir)
    if (data_dir / KEYS_DIR).is_dir():
        _sync_dir(data_dir / KEYS_DIR)


# -- files ------------------------------------------------------------------------------


@contextlib.contextmanager
def _temporary(directory: Path, prefix: str, suffix: str) -> Iterator[Path]:
    """A new 0600 file's path in `directory`, removed afterwards unless renamed away."""
    path = directory / f"{prefix}{secrets.token_hex(6)}{suffix}"
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def learn_published(data_dir: Path, published: Sequence[Published]) -> RestoreReport:
    """Record the published checkpoints on an already restored hub (the hub reads the
    outcome at its next start)."""
    tree_size, readings, hold = learn_published_in_db(data_dir, published)
    return RestoreReport(
        data_dir=data_dir, tree_size=tree_size, readings=readings, keys_restored=False, hold=hold
    )
