"""The `backup` and `restore` subcommands: arguments, the passphrase, what is printed.

`glucohub.cli` registers them with `add_subcommands`; the work is `glucohub.backup`'s.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from gateway.errors import InputError
from gateway.sealing import log_origin
from gateway.settings import Settings
from gateway.storage.sqlite_backup import Published
from glucohub.backup import backup, learn_published, restore

PASSPHRASE_ENV = "GLUCOHUB_BACKUP_PASSPHRASE"
POSTGRESQL_ADVICE = (
    "the hub's database is PostgreSQL ([storage] url): back it up with PostgreSQL's own tools"
    " (pg_dump, or base backups with WAL archiving); see the README"
)

SettingsOf = Callable[[argparse.Namespace], Settings]


def add_subcommands(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    *,
    common: Callable[[argparse.ArgumentParser], None],
    settings_of: SettingsOf,
) -> None:
    p = sub.add_parser("backup", help="write an encrypted backup of the hub (while it runs)")
    common(p)
    p.add_argument("--out", type=Path, required=True, help="backup file to write (0600)")
    p.add_argument(
        "--with-keys", action="store_true", help="include the ledger's private signing keys"
    )
    p.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from stdin")
    p.set_defaults(func=lambda args: cmd_backup(args, settings_of(args)))

    p = sub.add_parser(
        "restore", help="restore a backup into a data directory (or record the published size)"
    )
    common(p)
    p.add_argument("file", type=Path, nargs="?", help="the backup file")
    p.add_argument("--force", action="store_true", help="replace an existing database")
    p.add_argument("--passphrase-stdin", action="store_true", help="read the passphrase from stdin")
    p.add_argument(
        "--published-size", type=_size, help="size of the last checkpoint the hub published"
    )
    p.add_argument("--published-root", type=_root, help="its root hash (hex or base64)")
    p.add_argument(
        "--witness-state",
        type=Path,
        action="append",
        help="a witness's state.json: its size and root (repeat for each witness)",
    )
    p.set_defaults(func=lambda args: cmd_restore(args, settings_of(args)))


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    if settings.storage.url:
        raise InputError(f"backup: {POSTGRESQL_ADVICE}")
    data_dir = settings.storage.data_dir
    if not data_dir.is_dir():
        raise InputError(f"data directory {data_dir} does not exist; check --data-dir")
    if not args.out.parent.is_dir():
        raise InputError(f"cannot write {args.out}: {args.out.parent} is not a directory")
    passphrase = _passphrase(args, twice=True)
    report = backup(data_dir, args.out, passphrase, with_keys=args.with_keys)
    keys = "with the ledger's private keys" if report.with_keys else "without private keys"
    print(f"wrote {report.out} ({report.bytes_written} bytes, encrypted, {keys})")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    if settings.storage.url:
        raise InputError(f"restore: {POSTGRESQL_ADVICE}")
    data_dir = settings.storage.data_dir
    published = _published(args, settings)
    if args.file is None:
        if not published:
            raise InputError(
                "give a backup FILE, or --published-size and --published-root (or "
                "--witness-state) for a restored hub"
            )
        report = learn_published(data_dir, published)
    else:
        if not args.file.is_file():
            raise InputError(f"cannot read the backup {args.file}: no such file")
        if (data_dir / "glucohub.sqlite3").exists() and not args.force:
            raise InputError(
                f"{data_dir / 'glucohub.sqlite3'} exists; --force replaces it (stop the hub first)"
            )
        passphrase = _passphrase(args, twice=False)
        from glucohub.runtime import one_hub  # the hub's lock: never restore under a running hub

        # A running hub has made D/hub.lock; without one, none runs (and none is made here).
        lock_file = (data_dir / "hub.lock").exists()
        with one_hub(data_dir) if lock_file else contextlib.nullcontext():
            report = restore(args.file, data_dir, passphrase, force=args.force, published=published)
        keys = "keys restored" if report.keys_restored else "no private keys in the backup"
        print(
            f"restored {report.readings} readings and a log of {report.tree_size} batches "
            f"into {data_dir} ({keys})"
        )
    if report.hold is None:
        print("the published checkpoint matches: the hub seals again when it runs")
    else:
        print(f"sealing held: {report.hold}")
    return 0


def _published(args: argparse.Namespace, settings: Settings) -> list[Published]:
    """Every published checkpoint given: the clinic's, each witness's."""
    if (args.published_size is None) != (args.published_root is None):
        raise InputError("--published-size and --published-root go together")
    origin = log_origin(settings.hub.hub_id)
    seen = [_from_witness_state(path, origin) for path in args.witness_state or ()]
    if args.published_size is not None:
        seen.append(Published(size=args.published_size, root_hash=args.published_root))
    return seen


def _from_witness_state(path: Path, origin: str) -> Published:
    from ledger.errors import MalformedNote
    from ledger.witness import WitnessState

    try:
        state = WitnessState.from_json(path.read_text())
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    except (MalformedNote, UnicodeDecodeError) as exc:
        raise InputError(f"{path} is not a witness state: {exc}") from None
    if state.origin != origin:
        raise InputError(f"{path} is a witness state of {state.origin!r}, not of {origin!r}")
    return Published(size=state.size, root_hash=state.root_hash)


def _passphrase(args: argparse.Namespace, *, twice: bool) -> str:
    if args.passphrase_stdin:
        passphrase = sys.stdin.readline().rstrip("\n")
    elif os.environ.get(PASSPHRASE_ENV):
        passphrase = os.environ[PASSPHRASE_ENV]
    else:
        if not sys.stdin.isatty():
            raise InputError(
                f"no terminal to ask for the backup passphrase; use --passphrase-stdin or "
                f"set {PASSPHRASE_ENV}"
            )
        import getpass

        try:
            passphrase = getpass.getpass("backup passphrase: ")
            if twice and getpass.getpass("again: ") != passphrase:
                raise InputError("the two entries differ; nothing written")
        except EOFError:
            raise InputError("nothing was typed; nothing written") from None
    if not passphrase:
        raise InputError("the backup passphrase is empty")
    return passphrase


def _size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"not a log size: {value}")
    return value


def _root(text: str) -> bytes:
    text = text.strip()
    try:
        root = bytes.fromhex(text) if len(text) == 64 else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        root = b""
    if len(root) != 32:
        raise argparse.ArgumentTypeError(
            f"not a SHA-256 root hash (64 hex digits or 44 base64 characters): {text!r}"
        )
    return root
