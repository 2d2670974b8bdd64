"""`glucohub` command line: the composition root's front door."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import dataclasses
import errno
import json
import logging
import math
import os
import re
import sys
import zoneinfo
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NoReturn

from gateway.clock import parse_rfc3339, utc_now
from gateway.errors import GlucohubError, InputError
from gateway.model import Device, DeviceKind, Patient, Transport
from gateway.settings import Settings, StorageSettings, load_settings
from gateway.shapes import EXPORT_FIELDS, export_record, json_line
from gateway.storage.contract import HubStorage
from gateway.storage.opening import open_storage
from gateway.store import DB_FILENAME

log = logging.getLogger("glucohub")


def _settings(args: argparse.Namespace) -> Settings:
    data_dir = getattr(args, "data_dir", None)
    return load_settings(getattr(args, "config", None), os.environ, data_dir=data_dir)


def _data_dir(args: argparse.Namespace, *, need_database: bool = True) -> Path:
    """The configured data directory, which must exist: only `run`, `demo`, `keys init` and
    `patients add` create one, so a mistyped --data-dir is an error, not a new empty hub."""
    storage = _settings(args).storage
    data_dir = storage.data_dir
    if not data_dir.is_dir():
        state = "is not a directory" if data_dir.exists() else "does not exist"
        raise InputError(
            f"data directory {data_dir} {state}; check --data-dir (or storage.data_dir)"
            " - `glucohub patients add` or `glucohub run` creates one"
        )
    if need_database and not storage.url and not (data_dir / DB_FILENAME).is_file():
        raise InputError(f"no Glucohub database ({DB_FILENAME}) in {data_dir}; check --data-dir")
    return data_dir


def _registry_storage(args: argparse.Namespace) -> StorageSettings:
    """Where the registry and account commands act: `[storage]`, or at a clinic whose
    config names only `clinic.url` the archive, as its dashboards do."""
    settings = _settings(args)
    url = settings.storage.url or settings.clinic.url
    return dataclasses.replace(settings.storage, url=url)


def _open_store(args: argparse.Namespace, *, create: bool = False) -> HubStorage:
    storage = _registry_storage(args)
    # On PostgreSQL the data directory holds only a hub's keys, which these commands never
    # read (`keys init` and `run` make it): a clinic has none.
    if not storage.url:
        if create:
            storage.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        else:
            _data_dir(args)
    return open_storage(storage.data_dir, storage.url)


def _setup_logging(settings: Settings) -> None:
    from glucohub.logs import setup_logging

    setup_logging(settings.hub, os.environ)


# -- commands --------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from glucohub.runtime import run_hub
    from glucohub.systemd import Notifier

    settings = _settings(args)
    _setup_logging(settings)
    _hash_passwords_apart(settings)
    notifier = Notifier.from_environ(os.environ)
    with _port_in_use(settings, "set dashboard.port in the config (or GLUCOHUB_DASHBOARD__PORT)"):
        asyncio.run(run_hub(settings, notifier=notifier))
    return 0


def _hash_passwords_apart(settings: Settings) -> None:
    """A hub serving sign-ins computes scrypt in a small process of its own: 32 MiB for a
    tenth of a second per sign-in would otherwise be the hub's peak memory."""
    if settings.dashboard.enabled:
        from dashboards import accounts

        accounts.hash_in_process()


def cmd_demo(args: argparse.Namespace) -> int:
    from glucohub.demo import run_demo

    settings = _settings(args)
    if args.port is not None:
        settings = settings.replace("dashboard", port=args.port)
    if args.patients is not None:
        settings = settings.replace("demo", patients=args.patients)
    if args.history_days is not None:
        settings = settings.replace("demo", history_days=args.history_days)
    _setup_logging(settings)
    _hash_passwords_apart(settings)
    with _port_in_use(settings, "choose another with --port, e.g. --port 8081"):
        asyncio.run(run_demo(settings))
    return 0


@contextlib.contextmanager
def _port_in_use(settings: Settings, advice: str) -> Iterator[None]:
    """The dashboard's port taken by another program: one line naming it and the way out."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        where = f"{settings.dashboard.host}:{settings.dashboard.port}"
        raise InputError(f"dashboard port {where} is already in use; {advice}") from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from glucohub.doctor import SYSTEM_BUS, Host, report, run_checks

    settings = _settings(args)
    host = Host(system_bus=os.environ.get("DBUS_SYSTEM_BUS_ADDRESS") or SYSTEM_BUS)
    text, code = report(run_checks(settings, host))
    print(text)
    return code


def _require_patient(store: HubStorage, patient_id: str | None) -> None:
    """Refuse a --patient the registry does not hold (a typo would otherwise print nothing)."""
    if patient_id is not None and store.get_patient(patient_id) is None:
        raise InputError(f"unknown patient {patient_id!r}: see `glucohub patients list`")


def cmd_export(args: argparse.Namespace) -> int:
    since: datetime | None = args.since
    out = sys.stdout
    with contextlib.closing(_open_store(args)) as store:
        _require_patient(store, args.patient)
        writer = csv.writer(out) if args.format == "csv" else None
        if writer is not None:
            writer.writerow(EXPORT_FIELDS)
        for reading in store.readings(patient_id=args.patient, since=since):
            record = export_record(reading)
            if writer is not None:
                writer.writerow(["" if v is None else v for v in record.values()])
            else:
                out.write(json_line(record) + "\n")
    return 0


def cmd_ledger_verify(args: argparse.Namespace) -> int:
    if args.bundle is not None:
        return _verify_bundle(args)
    from gateway.verify import verify_data_dir

    settings = _settings(args)
    report = verify_data_dir(
        _data_dir(args),
        settings.hub.hub_id,
        workers=os.cpu_count() or 1,
        storage_url=settings.storage.url,
    )
    print(report.message)
    return 0 if report.ok else 1


def _verify_bundle(args: argparse.Namespace) -> int:
    from gateway.ledger_tools import read_batch_key
    from ledger.bundle import verify_bundle
    from ledger.errors import LedgerError

    if not args.log_key or not args.batch_key:
        print("glucohub: --bundle needs --log-key and --batch-key", file=sys.stderr)
        return 2
    try:
        with Path(args.bundle).open("rb") as handle:
            report = verify_bundle(
                handle,
                log_vkey=args.log_key,
                batch_jwk=read_batch_key(args.batch_key),
                witness_vkeys=args.witness_key or (),
            )
    except LedgerError as exc:
        print(f"FAIL: {exc}")
        return 1
    except OSError as exc:
        raise InputError(f"cannot read the bundle: {_os_error_text(exc)}") from None
    witnesses = f"; cosigned by {', '.join(report.witnessed_by)}" if report.witnessed_by else ""
    print(
        f"OK: {report.batches} batches, {report.readings} readings, "
        f"checkpoint {report.tree_size} verifies{witnesses}"
    )
    return 0


def cmd_ledger_export(args: argparse.Namespace) -> int:
    from gateway.ledger_tools import export_bundle

    settings = _settings(args)
    count = export_bundle(
        _data_dir(args), settings.hub.hub_id, args.out, storage_url=settings.storage.url
    )
    print(f"wrote {count} batches and the latest checkpoint to {args.out}")
    return 0


def cmd_ledger_prove(args: argparse.Namespace) -> int:
    from gateway.ledger_tools import prove_batch

    hub_id = _settings(args).hub.hub_id
    size = prove_batch(
        _data_dir(args),
        hub_id,
        args.batch,
        args.out,
        args.patient,
        storage_url=_settings(args).storage.url,
    )
    print(f"wrote the inclusion proof of batch {args.batch} in a tree of {size} to {args.out}")
    return 0


def cmd_ledger_check_proof(args: argparse.Namespace) -> int:
    from gateway.ledger_tools import read_batch_key
    from ledger.errors import LedgerError
    from ledger.proof import check_inclusion_bundle

    try:
        proof = Path(args.file).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read the proof: {_os_error_text(exc)}") from None
    try:
        report = check_inclusion_bundle(
            proof,
            args.log_key,
            batch_jwk=read_batch_key(args.batch_key) if args.batch_key else None,
        )
    except LedgerError as exc:
        print(f"FAIL: {exc}")
        return 1
    if report.records:
        readings = f", {len(report.records)} disclosed records verify against the batch"
    elif report.payload and report.payload.readings:
        readings = f", {len(report.payload.readings)} readings"
    else:
        readings = ""
    print(
        f"OK: batch {report.batch_seq} is in the checkpointed log of {report.tree_size}{readings}"
    )
    return 0


def cmd_witness(args: argparse.Namespace) -> int:
    from ledger import witness

    argv = [
        "--log-url",
        args.log_url,
        "--log-key",
        args.log_key,
        "--state-dir",
        str(args.state_dir),
        "--key-file",
        str(args.key_file),
        "--name",
        args.name,
        "--interval",
        str(args.interval),
    ]
    if args.once:
        argv.append("--once")
    if args.print_vkey:
        argv.append("--print-vkey")
    return witness.main(argv)


def _time_zone(name: str) -> str:
    if name not in zoneinfo.available_timezones():
        raise InputError(f"unknown time zone {name!r}: give an IANA zone such as Europe/London")
    return name


# A patient id is a level of the MQTT readings topic and a segment of the pages' URLs; at a
# clinic, the hub's id and ':' come before it (gateway.clinic.projection.clinic_id).
_ID_PART = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
_PATIENT_ID = re.compile(rf"(?:{_ID_PART}:)?{_ID_PART}")


def cmd_patients_add(args: argparse.Namespace) -> int:
    if not _PATIENT_ID.fullmatch(args.patient_id):
        raise InputError(
            f"patient id {args.patient_id!r}: use 1-64 of A-Z a-z 0-9 . _ - starting with "
            "a letter or digit (it goes into MQTT topics and web addresses; at a clinic, "
            "HUB:ID)"
        )
    _time_zone(args.timezone)
    with contextlib.closing(_open_store(args, create=True)) as store:
        if store.get_patient(args.patient_id) is not None:
            # At a clinic, the usual case: the hub's first batch registered the patient.
            raise InputError(
                f"patient {args.patient_id!r} already exists; change its name or time zone"
                f" with `glucohub patients assign {args.patient_id} --name NAME --timezone ZONE`"
            )
        store.add_patient(
            Patient(
                patient_id=args.patient_id,
                display_name=args.name or args.patient_id,
                timezone=args.timezone,
                team=args.team or None,
                ward=args.ward or None,
            )
        )
    print(f"added patient {args.patient_id}")
    return 0


def cmd_patients_assign(args: argparse.Namespace) -> int:
    """Rename a patient, or move them to another time zone, care team or ward; an option
    left out keeps its value."""
    if args.timezone is not None:
        _time_zone(args.timezone)
    with contextlib.closing(_open_store(args)) as store:
        patient = store.get_patient(args.patient_id)
        if patient is None:
            raise InputError(f"unknown patient {args.patient_id!r}: see `glucohub patients list`")
        if args.name is not None or args.timezone is not None:
            name = args.name or patient.display_name
            zone = args.timezone or patient.timezone
            store.rename_patient(args.patient_id, display_name=name, timezone=zone)
            print(f"patient {args.patient_id}: name {name}, time zone {zone}")
        team = patient.team if args.team is None else args.team or None
        ward = patient.ward if args.ward is None else args.ward or None
        store.assign_patient(args.patient_id, team=team, ward=ward)
    print(f"patient {args.patient_id}: team {team or '-'}, ward {ward or '-'}")
    return 0


def cmd_patients_list(args: argparse.Namespace) -> int:
    with contextlib.closing(_open_store(args)) as store:
        patients = store.list_patients()
    for patient in patients:
        print(
            f"{patient.patient_id}\t{patient.display_name}\t{patient.timezone}"
            f"\t{patient.team or '-'}\t{patient.ward or '-'}"
        )
    return 0


def cmd_devices_add(args: argparse.Namespace) -> int:
    store = _open_store(args)
    store.add_device(
        Device(
            device_id=args.device_id,
            patient_id=args.patient,
            kind=DeviceKind(args.kind),
            transport=Transport(args.transport),
            name=args.name or "",
            address=args.address or "",
        )
    )
    print(f"added device {args.device_id} for patient {args.patient}")
    return 0


def cmd_devices_list(args: argparse.Namespace) -> int:
    for d in _open_store(args).list_devices(args.patient):
        state = "active" if d.active else "removed"
        print(f"{d.device_id}\t{d.patient_id}\t{d.kind}\t{d.transport}\t{state}\t{d.name}")
    return 0


def cmd_devices_remove(args: argparse.Namespace) -> int:
    _open_store(args).remove_device(args.device_id)
    print(f"removed device {args.device_id} (its stored readings are kept)")
    return 0


def cmd_deadletters(args: argparse.Namespace) -> int:
    for letter in _open_store(args).dead_letters():
        record = {
            "id": letter.row_id,
            "received_at": letter.received_at,
            "source": letter.source,
            "topic": letter.topic,
            "device_id": letter.device_id,
            "reason": letter.reason,
            "detail": letter.detail,
            # The first 4 KiB at most; the whole input's length and SHA-256 are kept.
            "payload": letter.payload.decode("utf-8", errors="backslashreplace"),
            "payload_bytes": letter.payload_bytes,
            "payload_sha256": letter.payload_sha256,
            "payload_truncated": letter.truncated,
        }
        if args.format == "jsonl":
            print(json_line(record))
        else:
            print(
                f"{letter.received_at}\t{letter.reason}\t{letter.topic}\t{letter.detail}"
                f"\t{letter.payload_bytes} bytes, sha256 {letter.payload_sha256}"
            )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    store = _open_store(args)  # a read-write open applies the missing migrations
    try:
        print(f"{store.location}: schema version {store.schema_version}")
    finally:
        store.close()
    return 0


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.sealing import init_keys

    settings = _settings(args)
    passphrase = settings.ledger.key_passphrase or None
    if args.passphrase:
        _need_terminal(
            "the passphrase", "set ledger.key_passphrase (GLUCOHUB_LEDGER__KEY_PASSPHRASE) instead"
        )
        passphrase = _ask_twice("key passphrase: ")
        if not passphrase:
            raise InputError("the passphrase is empty; nothing created")
    created = init_keys(settings.storage.data_dir, passphrase)
    for path in created:
        print(f"created {path} (mode 0600)")
    if not created:
        print("keys already exist; nothing changed")
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    from gateway.sealing import load_keys

    settings = _settings(args)
    data_dir = _data_dir(args, need_database=False)
    keys = load_keys(data_dir, settings.hub.hub_id, settings.ledger.key_passphrase or None)
    print(f"log-key: {keys.log_verifier_key}")
    print(f"batch-key: {json.dumps(keys.batch_jwk, separators=(',', ':'), sort_keys=True)}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    from gateway.shapes import alert_to_json

    with contextlib.closing(_open_store(args)) as store:
        _require_patient(store, args.patient)
        alerts = store.alerts(args.patient, open_only=args.open)
    for alert in reversed(alerts):  # oldest first
        if args.format == "jsonl":
            print(json_line(alert_to_json(alert)))
        else:
            who = f" (ack {alert.acknowledged_by})" if alert.acknowledged_by else ""
            print(
                f"{alert.updated_at.isoformat()}\t{alert.patient_id}\t{alert.kind}\t"
                f"{alert.level}\t{alert.state}{who}\t{alert.message}"
            )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from dashboards.agppdf import MissingFont
    from dashboards.reportfile import render_report_file
    from gateway.model import ReadingKind
    from gateway.units import glucose_unit

    if args.format == "pdf" and args.out is None and sys.stdout.isatty():
        print(
            "glucohub: a PDF is not for the terminal; write it to a file with --out FILE",
            file=sys.stderr,
        )
        return 2
    store = _open_store(args)
    patient = store.get_patient(args.patient)
    if patient is None:
        store.close()
        print(f"glucohub: unknown patient {args.patient!r}", file=sys.stderr)
        return 2
    now = utc_now()
    readings = list(
        store.readings(
            patient_id=args.patient,
            since=now - timedelta(days=args.days),
            kinds=[ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE],
        )
    )
    treatments = store.treatments(args.patient, since=now - timedelta(days=args.days), until=now)
    store.close()
    unit = glucose_unit(args.unit or _settings(args).dashboard.default_unit)
    try:
        body = render_report_file(
            patient, readings, days=args.days, now=now, fmt=args.format, unit=unit,
            treatments=treatments,
        )  # fmt: skip
    except MissingFont as missing:
        print(f"glucohub report: {missing}", file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.write_bytes(body)
        print(f"wrote {args.format} report for {args.patient} to {args.out}")
    else:
        sys.stdout.buffer.write(body)
    return 0


def _need_terminal(what: str, instead: str) -> None:
    if not sys.stdin.isatty():
        raise InputError(f"no terminal to ask for {what}; {instead}")


def _ask_twice(prompt: str) -> str:
    import getpass

    try:
        first = getpass.getpass(prompt)
        again = getpass.getpass("again: ")
    except EOFError:
        raise InputError("nothing was typed; nothing changed") from None
    if first != again:
        raise InputError("the two entries differ; nothing changed")
    return first


def _password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    _need_terminal("the password", "pipe it in with --password-stdin")
    return _ask_twice("password: ")


def _db_path(args: argparse.Namespace, *, create: bool = False) -> Path | str:
    """The hub database of an existing data dir (or `[storage] url`); `create` makes the
    database (0600) in an existing directory (the first admin account on a fresh volume),
    never the directory."""
    from glucohub.accounts import account_location

    storage = _registry_storage(args)
    if storage.url:  # the accounts are in that database; a clinic has no data directory
        if create:
            open_storage(storage.data_dir, storage.url).close()
        return storage.url
    data_dir = _data_dir(args, need_database=not create)
    if create:
        open_storage(data_dir, storage.url).close()
    return account_location(dataclasses.replace(storage, data_dir=data_dir))


def cmd_users_add(args: argparse.Namespace) -> int:
    from glucohub import accounts

    if (args.role == "patient") != (args.patient is not None):
        raise InputError(
            "a patient account needs --patient with the patient's id; other roles take none"
        )
    if not _registry_storage(args).url:  # a mistyped --data-dir fails before the prompt
        _data_dir(args, need_database=False)
    _refuse_taken_username(args)
    password = _password(args)
    accounts.users_add(
        _db_path(args, create=True), args.username, args.role, password, args.patient
    )
    print(f"added {args.role} {args.username}")
    return 0


def _refuse_taken_username(args: argparse.Namespace) -> None:
    """A name already taken is said before the password is asked for (and typed twice)."""
    from glucohub import accounts

    try:
        location = _db_path(args)
    except GlucohubError:
        return  # no database yet: no accounts either
    if any(user.username == args.username for user in accounts.users_list(location)):
        raise InputError(f"user {args.username!r} already exists")


def cmd_users_passwd(args: argparse.Namespace) -> int:
    from glucohub import accounts

    accounts.users_passwd(_db_path(args), args.username, _password(args))
    print(f"password changed for {args.username}; their sessions were ended")
    return 0


def cmd_users_list(args: argparse.Namespace) -> int:
    from glucohub import accounts

    users = accounts.users_list(_db_path(args))
    print("username\trole\tpatient\tdisabled")
    for user in users:
        disabled = "yes" if user.disabled else "no"
        print(f"{user.username}\t{user.role}\t{user.patient_id or '-'}\t{disabled}")
    return 0


def cmd_users_disable(args: argparse.Namespace) -> int:
    from glucohub import accounts

    accounts.users_disable(_db_path(args), args.username, disabled=not args.enable)
    print(f"{'enabled' if args.enable else 'disabled'} {args.username}")
    return 0


def cmd_users_grant(args: argparse.Namespace) -> int:
    return _consent_change(args, grant=True)


def cmd_users_revoke(args: argparse.Namespace) -> int:
    return _consent_change(args, grant=False)


def _consent_change(args: argparse.Namespace, *, grant: bool) -> int:
    from dashboards.accounts import ConsentChange
    from glucohub import accounts

    change = accounts.grant if grant else accounts.revoke
    # The consent row and its ledger event are one transaction (a running hub seals it).
    outcome = change(_db_path(args), args.patient, args.clinician, by="cli")
    verb = "may see" if grant else "may no longer see"
    note = {
        ConsentChange.CHANGED: "",
        ConsentChange.UNCHANGED: " (unchanged)",
        ConsentChange.REPAIRED: " (unchanged, but the ledger lacked its event: added)",
    }[outcome]
    print(f"{args.clinician} {verb} {args.patient}{note}")
    return 0


def cmd_users_token(args: argparse.Namespace) -> int:
    from glucohub import accounts

    token = accounts.tokens_create(
        _db_path(args), args.username, args.label, expires_days=args.expires_days
    )
    print(token)
    print(
        f"(shown once: store it now; it expires in {args.expires_days} days;"
        " use it as 'Authorization: Bearer <token>')",
        file=sys.stderr,
    )
    return 0


def cmd_users_tokens(args: argparse.Namespace) -> int:
    from gateway.clock import to_rfc3339
    from glucohub import accounts

    now = utc_now()
    tokens = accounts.tokens_list(_db_path(args), args.username)
    print("id\tlabel\tcreated\texpires\tlast-used\tstate")
    for t in tokens:
        used = to_rfc3339(t.last_used_at) if t.last_used_at else "never"
        created, expires = to_rfc3339(t.created_at), to_rfc3339(t.expires_at)
        print(f"{t.token_id}\t{t.label}\t{created}\t{expires}\t{used}\t{t.state(now)}")
    return 0


def cmd_users_revoke_token(args: argparse.Namespace) -> int:
    from glucohub import accounts

    accounts.tokens_revoke(_db_path(args), args.token_id)
    print(f"revoked token {args.token_id}")
    return 0


def _uploader_device(args: argparse.Namespace) -> str:
    """The patient's Nightscout uploader device (registered on first use), as its id."""
    from glucohub import uploaders

    store = _open_store(args)
    try:
        return uploaders.ensure_uploader_device(store, args.patient)
    finally:
        store.close()


def cmd_nightscout_secret(args: argparse.Namespace) -> int:
    from glucohub import uploaders

    device_id = _uploader_device(args)
    secret_id, secret = uploaders.create_secret(
        _db_path(args), args.patient, device_id, read_only=args.read_only, label=args.label
    )
    settings = _settings(args).dashboard
    base = args.url or (
        f"{'https' if settings.tls_cert else 'http'}://{settings.host}:{settings.port}"
    )
    links = uploaders.links(base, secret)
    print(f"secret: {secret}")
    print(f"xDrip+ base URL: {links.xdrip_url}")
    print(f"Nightscout URL (Juggluco, AndroidAPS, followers): {links.nightscout_url}")
    access = "read-only" if args.read_only else "read and upload"
    print(
        f"(shown once: secret {secret_id}, {access}, for patient {args.patient}'s device"
        f" {device_id}; `glucohub nightscout revoke {secret_id}` ends it)",
        file=sys.stderr,
    )
    return 0


def cmd_nightscout_token(args: argparse.Namespace) -> int:
    from glucohub import accounts

    device_id = _uploader_device(args)
    roles = args.role or ["readable"]
    token_id, token = accounts.nightscout_token_create(
        _db_path(args), args.patient, device_id, subject=args.name, roles=roles
    )
    print(f"token: {token}")
    print(
        f"(shown once: token {token_id}, roles {', '.join(sorted(set(roles)))}, for patient"
        f" {args.patient}; apps take it as ?token= or trade it for a JWT at"
        f" /api/v2/authorization/request/<token>; `glucohub nightscout revoke {token_id}`"
        " ends it)",
        file=sys.stderr,
    )
    return 0


def cmd_nightscout_list(args: argparse.Namespace) -> int:
    from glucohub import accounts

    for found in accounts.nightscout_secrets_list(_db_path(args), args.patient):
        kind = f"token {','.join(found.roles)}" if found.roles else "secret"
        access = "read-write" if found.can_write else "read-only"
        print(
            f"{found.secret_id}\t{found.patient_id}\t{kind}\t{access}\t{found.label}"
            f"\t{found.created_at.isoformat()}"
        )
    return 0


def cmd_nightscout_revoke(args: argparse.Namespace) -> int:
    from glucohub import accounts

    accounts.nightscout_secret_revoke(_db_path(args), args.secret_id)
    print(f"revoked Nightscout secret {args.secret_id}")
    return 0


def cmd_gatt_decode(args: argparse.Namespace) -> int:
    from device_adapters.ble.cli import gatt_decode

    return gatt_decode(args.uuid, args.hex)


def cmd_ble_scan(args: argparse.Namespace) -> int:
    from device_adapters.ble.cli import scan

    return asyncio.run(scan(args.timeout))


async def _ask_passkey(address: str) -> int | None:
    """The passkey a device shows while pairing, typed on the terminal (empty: cancel)."""
    text = await asyncio.to_thread(input, f"{address} shows a passkey; type it (Enter cancels): ")
    digits = "".join(text.split())
    return int(digits) if digits.isdigit() else None


def cmd_ble_pair(args: argparse.Namespace) -> int:
    from device_adapters.ble.cli import pair

    store = _open_store(args)
    if store.get_patient(args.patient) is None:
        store.close()
        print(f"glucohub: unknown patient {args.patient!r}; add the patient first", file=sys.stderr)
        return 2
    try:
        ask = _ask_passkey if sys.stdin.isatty() else None
        return asyncio.run(pair(args.address, args.patient, args.name or "", store.add_device, ask))
    finally:
        store.close()


# -- parser ----------------------------------------------------------------------------


class UsageError(Exception):
    """A command line argparse refuses (unknown flag, missing or mistyped value)."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming `--help` (main prints it, exit 2)
    instead of the usage block, and subcommand parsers inherit this (parser_class)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {' '.join(message.split())} (see {self.prog} --help)")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low} to {high}, not {value}")
        return value

    return parse


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _positive_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r}") from None
    if not (math.isfinite(value) and 0 < value <= 1000):
        raise argparse.ArgumentTypeError(f"must be a rate per second in (0, 1000], not {text}")
    return value


def _since(text: str) -> datetime:
    """An RFC 3339 time with an offset, or a bare date meaning midnight UTC of that day (the
    times `export` prints are UTC too)."""
    try:
        if len(text.strip()) == len("2026-11-30"):
            return datetime.combine(date.fromisoformat(text.strip()), datetime.min.time(), UTC)
        return parse_rfc3339(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date or an RFC 3339 time (e.g. 2026-11-30 or 2026-11-30T08:00:00Z): {text!r}"
        ) from None


_MAX_SQLITE_INT = 2**63 - 1
_port = _int_in(0, 65535)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"glucohub {version('glucohub')}"
    except PackageNotFoundError:
        return "glucohub (version unknown: not installed as a distribution)"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="data directory (overrides the config)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="glucohub",
        description="Home diabetes monitoring hub: readings, signed ledger, alerts, dashboard.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the gateway from a configuration file")
    _common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="run the whole gateway on simulated patients and devices")
    _common(p)
    p.add_argument("--port", type=_port, help="dashboard port (default 8080)")
    p.add_argument(
        "--patients", type=_int_in(1, 1000), help="number of simulated patients (default 3)"
    )
    p.add_argument(
        "--history-days", type=_int_in(0, 366), help="days of history to seed (default 14)"
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "doctor", help="check the installation: one line per check with its fix (exit 1: a failure)"
    )
    _common(p)
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("export", help="print every stored reading")
    _common(p)
    p.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    p.add_argument("--patient", help="only this patient")
    p.add_argument(
        "--since",
        type=_since,
        help="only readings at or after this RFC 3339 time (a bare date: midnight UTC)",
    )
    p.set_defaults(func=cmd_export)

    ledger = sub.add_parser("ledger", help="verify the signed ledger").add_subparsers(
        dest="ledger_command", required=True, metavar="ACTION"
    )
    p = ledger.add_parser("verify", help="recompute and check every batch and the tree root")
    _common(p)
    p.add_argument("--bundle", type=Path, help="verify an exported bundle instead of a data dir")
    p.add_argument("--log-key", help="with --bundle: the log's signed-note verifier key")
    p.add_argument("--batch-key", help="with --bundle: the batch key JWK (JSON or a file)")
    p.add_argument("--witness-key", action="append", help="a witness cosignature key to check")
    p.set_defaults(func=cmd_ledger_verify)
    p = ledger.add_parser("export", help="write a self-contained bundle a third party verifies")
    _common(p)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_ledger_export)
    p = ledger.add_parser("prove", help="write an offline inclusion proof for one batch")
    _common(p)
    p.add_argument("--batch", type=_int_in(0, _MAX_SQLITE_INT), required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--patient", help="disclose this patient's records of the batch, proven")
    p.set_defaults(func=cmd_ledger_prove)
    p = ledger.add_parser("check-proof", help="check an inclusion proof file")
    p.add_argument("file", type=Path)
    p.add_argument("--log-key", required=True)
    p.add_argument("--batch-key", help="also open the batch with this JWK (JSON or a file)")
    p.set_defaults(func=cmd_ledger_check_proof)

    p = sub.add_parser("witness", help="witness another hub's log: check, cosign, alarm")
    p.add_argument("--log-url", required=True, help="e.g. http://hub:8080/log")
    p.add_argument("--log-key", required=True, help="the log's verifier key")
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--key-file", type=Path, required=True, help="witness key, created 0600")
    p.add_argument("--name", default="witness.local/glucohub", help="witness key name")
    p.add_argument("--interval", type=_positive_seconds, default=10.0, help="seconds between polls")
    p.add_argument("--once", action="store_true", help="poll once and exit")
    p.add_argument("--print-vkey", action="store_true", help="print the witness key and exit")
    p.set_defaults(func=cmd_witness)

    patients = sub.add_parser("patients", help="the patient registry").add_subparsers(
        dest="patients_command", required=True, metavar="ACTION"
    )
    p = patients.add_parser("add", help="register a patient")
    _common(p)
    p.add_argument("patient_id")
    p.add_argument("--name", help="display name")
    p.add_argument("--timezone", default="UTC", help="IANA time zone (default UTC)")
    p.add_argument("--team", help="care team (the triage list filters by it)")
    p.add_argument("--ward", help="ward or clinic (the triage list filters by it)")
    p.set_defaults(func=cmd_patients_add)
    p = patients.add_parser("assign", help="change a patient's name, time zone, care team or ward")
    _common(p)
    p.add_argument("patient_id")
    p.add_argument("--name", help="new display name (left out: unchanged)")
    p.add_argument("--timezone", help="new IANA time zone (left out: unchanged)")
    p.add_argument("--team", help="new care team ('' clears it; left out: unchanged)")
    p.add_argument("--ward", help="new ward ('' clears it; left out: unchanged)")
    p.set_defaults(func=cmd_patients_assign)
    p = patients.add_parser("list", help="list patients")
    _common(p)
    p.set_defaults(func=cmd_patients_list)

    devices = sub.add_parser("devices", help="the device registry").add_subparsers(
        dest="devices_command", required=True, metavar="ACTION"
    )
    p = devices.add_parser("add", help="register a device for a patient")
    _common(p)
    p.add_argument("device_id")
    p.add_argument("--patient", required=True)
    p.add_argument("--kind", required=True, choices=[k.value for k in DeviceKind])
    p.add_argument("--transport", required=True, choices=[t.value for t in Transport])
    p.add_argument("--name")
    p.add_argument("--address", help="BLE address")
    p.set_defaults(func=cmd_devices_add)
    p = devices.add_parser("list", help="list devices")
    _common(p)
    p.add_argument("--patient")
    p.set_defaults(func=cmd_devices_list)
    p = devices.add_parser("remove", help="deactivate a device (readings are kept)")
    _common(p)
    p.add_argument("device_id")
    p.set_defaults(func=cmd_devices_remove)

    p = sub.add_parser("deadletters", help="list refused inputs with their reasons")
    _common(p)
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.set_defaults(func=cmd_deadletters)

    p = sub.add_parser("migrate", help="upgrade the database to this version's schema")
    _common(p)
    p.set_defaults(func=cmd_migrate)
    from glucohub.backup_cli import add_subcommands as add_backup_subcommands

    add_backup_subcommands(sub, common=_common, settings_of=_settings)

    keys = sub.add_parser("keys", help="the hub's signing keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    p = keys.add_parser("init", help="create the batch and log keys (0600)")
    _common(p)
    p.add_argument(
        "--passphrase",
        action="store_true",
        help="encrypt the keys; asks for the passphrase (the hub reads ledger.key_passphrase)",
    )
    p.set_defaults(func=cmd_keys_init)
    p = keys.add_parser("show", help="print the public keys to hand to verifying sites")
    _common(p)
    p.set_defaults(func=cmd_keys_show)

    p = sub.add_parser("alerts", help="list alerts and their transitions")
    _common(p)
    p.add_argument("--patient")
    p.add_argument("--open", action="store_true", help="only alerts not yet resolved")
    p.add_argument("--format", choices=("text", "jsonl"), default="text")
    p.set_defaults(func=cmd_alerts)

    p = sub.add_parser("report", help="the one-page AGP report of a patient")
    _common(p)
    p.add_argument("--patient", required=True)
    p.add_argument("--days", type=_int_in(1, 366), default=14)
    p.add_argument("--format", choices=("json", "html", "pdf"), default="html")
    p.add_argument(
        "--unit",
        choices=("mmol/L", "mg/dL"),
        help="glucose unit of the HTML and PDF (default: the site's dashboard.default_unit)",
    )
    p.add_argument("--out", type=Path, help="file to write (default: standard output)")
    p.set_defaults(func=cmd_report)

    users = sub.add_parser("users", help="dashboard accounts").add_subparsers(
        dest="users_command", required=True, metavar="ACTION"
    )
    p = users.add_parser("add", help="create an account (asks for the password)")
    _common(p)
    p.add_argument("username")
    p.add_argument("--role", required=True, choices=("admin", "clinician", "patient"))
    p.add_argument("--patient", help="the patient record a patient account may see")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.set_defaults(func=cmd_users_add)
    p = users.add_parser("passwd", help="set a new password (ends the user's sessions)")
    _common(p)
    p.add_argument("username")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_users_passwd)
    p = users.add_parser("list", help="list accounts: user name, role, patient, disabled")
    _common(p)
    p.set_defaults(func=cmd_users_list)
    p = users.add_parser("disable", help="disable an account (or --enable it again)")
    _common(p)
    p.add_argument("username")
    p.add_argument("--enable", action="store_true")
    p.set_defaults(func=cmd_users_disable)

    p = users.add_parser("grant", help="let a clinician see a patient (a ledger event)")
    _common(p)
    p.add_argument("clinician")
    p.add_argument("--patient", required=True)
    p.set_defaults(func=cmd_users_grant)
    p = users.add_parser("revoke", help="withdraw a clinician's access to a patient")
    _common(p)
    p.add_argument("clinician")
    p.add_argument("--patient", required=True)
    p.set_defaults(func=cmd_users_revoke)
    p = users.add_parser("token", help="create an API token for integrations")
    _common(p)
    p.add_argument("username")
    p.add_argument("--label", default="integration")
    p.add_argument(
        "--expires-days", type=_int_in(1, 3650), default=90, help="lifetime (default: 90)"
    )
    p.set_defaults(func=cmd_users_token)
    p = users.add_parser("tokens", help="list a user's API tokens (never their secrets)")
    _common(p)
    p.add_argument("username")
    p.set_defaults(func=cmd_users_tokens)
    p = users.add_parser("revoke-token", help="revoke one API token by its id")
    _common(p)
    p.add_argument("token_id", type=_int_in(1, _MAX_SQLITE_INT))
    p.set_defaults(func=cmd_users_revoke_token)

    nightscout = sub.add_parser(
        "nightscout", help="Nightscout API uploader secrets (xDrip+, Juggluco, AndroidAPS)"
    ).add_subparsers(dest="nightscout_command", required=True, metavar="ACTION")
    p = nightscout.add_parser("secret", help="create a patient's uploader secret (shown once)")
    _common(p)
    p.add_argument("--patient", required=True)
    p.add_argument("--read-only", action="store_true", help="for followers: cannot upload")
    p.add_argument("--label", default="uploader", help="what it is for, e.g. the app's name")
    p.add_argument("--url", help="the hub's address as phones reach it, e.g. https://hub:8080")
    p.set_defaults(func=cmd_nightscout_secret)
    p = nightscout.add_parser(
        "token", help="create a patient's access token with Nightscout roles (shown once)"
    )
    _common(p)
    p.add_argument("--patient", required=True)
    p.add_argument("--name", required=True, help="who uses it (Nightscout's subject name)")
    p.add_argument(
        "--role",
        action="append",
        choices=("readable", "careportal", "admin"),
        help="readable reads; careportal and admin also upload and delete (repeatable;"
        " default readable)",
    )
    p.set_defaults(func=cmd_nightscout_token)
    p = nightscout.add_parser("list", help="list unrevoked uploader secrets and access tokens")
    _common(p)
    p.add_argument("--patient")
    p.set_defaults(func=cmd_nightscout_list)
    p = nightscout.add_parser("revoke", help="revoke one uploader secret or token by its id")
    _common(p)
    p.add_argument("secret_id", type=_int_in(1, _MAX_SQLITE_INT))
    p.set_defaults(func=cmd_nightscout_revoke)
    _clinic_commands(sub)

    gatt = sub.add_parser("gatt", help="Bluetooth GATT debugging").add_subparsers(
        dest="gatt_command", required=True, metavar="ACTION"
    )
    p = gatt.add_parser("decode", help="decode one captured characteristic value as JSON")
    p.add_argument("uuid", help="e.g. 2A18, 0x2A37 or a full UUID")
    p.add_argument("hex", help="the value's bytes in hex")
    p.set_defaults(func=cmd_gatt_decode)

    ble = sub.add_parser("ble", help="Bluetooth LE devices").add_subparsers(
        dest="ble_command", required=True, metavar="ACTION"
    )
    p = ble.add_parser("scan", help="list nearby devices with a supported health service")
    p.add_argument("--timeout", type=_positive_seconds, default=10.0)
    p.set_defaults(func=cmd_ble_scan)
    p = ble.add_parser("pair", help="connect, bond and register a device for a patient")
    _common(p)
    p.add_argument("address")
    p.add_argument("--patient", required=True)
    p.add_argument("--name")
    p.set_defaults(func=cmd_ble_pair)
    return parser


def _clinic_commands(sub: argparse._SubParsersAction[_Parser]) -> None:
    """The clinic tier: `clinic`, `hubs`, `simulate` (their code: glucohub/clinic.py and
    glucohub/simulate.py)."""
    p = sub.add_parser("clinic", help="run one stateless clinic worker (hubs' batches -> archive)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--worker-id", help="this worker's fixed MQTT client id (clinic.client_id)")
    p.set_defaults(func=cmd_clinic)
    p = sub.add_parser(
        "dashboard", help="serve the dashboards on the clinic archive (one of several processes)"
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--port", type=_port, help="dashboard port (default: dashboard.port)")
    p.set_defaults(func=cmd_dashboard)
    hubs = sub.add_parser("hubs", help="the hubs enrolled at this clinic").add_subparsers(
        dest="hubs_command", required=True, metavar="ACTION"
    )
    p = hubs.add_parser("add", help="enrol a hub with its public keys (`glucohub keys show`)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--hub", required=True)
    p.add_argument("--batch-key", required=True, help="the hub's batch key as a JWK")
    p.add_argument("--log-key", required=True, help="the hub's log verifier key")
    p.set_defaults(func=cmd_hubs_add)
    p = hubs.add_parser("list", help="hubs, their state, batches and last checkpoint")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.set_defaults(func=cmd_hubs_list)
    p = hubs.add_parser("resolve", help="resolve a hub's alarms and accept its items again")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("hub")
    p.add_argument("--by", default=os.environ.get("USER", "admin"), help="who decided")
    p.set_defaults(func=cmd_hubs_resolve)
    p = hubs.add_parser(
        "reproject", help="project every stored batch for the dashboards again (idempotent)"
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.set_defaults(func=cmd_hubs_reproject)
    p = hubs.add_parser("alarms", help="the clinic's alarms, oldest first")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--open", action="store_true", help="only unresolved alarms")
    p.set_defaults(func=cmd_hubs_alarms)
    _enrolment_commands(hubs)
    p = sub.add_parser("enrol", help="enrol this hub at a clinic with a one-time token")
    _common(p)
    p.add_argument("url", help="the clinic's enrolment URL, or its link ending in #TOKEN")
    p.add_argument("token", nargs="?", help="the token (ghe1_...) unless in the link")
    p.add_argument("--ca-file", help="the CA certificate of the clinic's endpoint, if private")
    p.set_defaults(func=cmd_enrol)
    p = sub.add_parser("simulate", help="load generator: simulated hubs forwarding upstream")
    p.add_argument("--hubs", type=_int_in(1, 100_000), required=True)
    p.add_argument("--patients-per-hub", type=_int_in(1, 10_000), default=1)
    p.add_argument("--rate", type=_positive_rate, default=1.0, help="batches/s per hub")
    p.add_argument("--batches", type=_int_in(0, 10**9), default=0, help="per hub; 0: forever")
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--data-dir", type=Path, help="keep the hubs here (default: temporary)")
    p.add_argument("--prefix", default="sim", help="hub ids are PREFIX-0000, PREFIX-0001, ...")
    p.add_argument("--enrol-file", type=Path, help="write the `hubs add` lines here")
    p.add_argument("--enrol-into", default="", help="enrol the hubs in this clinic database")
    p.set_defaults(func=cmd_simulate)


def _enrolment_commands(hubs: argparse._SubParsersAction[_Parser]) -> None:
    """One-time enrolment tokens at the clinic (glucohub/clinic_enrolment.py)."""
    p = hubs.add_parser("token", help="make a one-time enrolment token (shown once)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--hub", help="only this hub id may use it (default: any new hub)")
    p.add_argument("--expires", default="24h", help="lifetime: 30m, 24h, 7d (at most 30d)")
    p.add_argument("--by", default=os.environ.get("USER", "admin"), help="who made it")
    p.add_argument("--qr", action="store_true", help="also print the link as a QR code")
    p.set_defaults(func=cmd_hubs_token)
    p = hubs.add_parser("tokens", help="enrolment tokens and their state (never the tokens)")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.set_defaults(func=cmd_hubs_tokens)
    p = hubs.add_parser("revoke-token", help="revoke an unused enrolment token by its number")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("token_id", type=_int_in(1, 2**63 - 1))
    p.set_defaults(func=cmd_hubs_revoke_token)
    p = hubs.add_parser(
        "mosquitto-passwords", help="the broker accounts enrolment gave hubs, for Mosquitto"
    )
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.add_argument("--into", type=Path, help="merge into this Mosquitto password file")
    p.set_defaults(func=cmd_hubs_mosquitto_passwords)
    p = hubs.add_parser("serve", help="serve the enrolment endpoint hubs redeem tokens at")
    p.add_argument("--config", type=Path, help="TOML configuration file")
    p.set_defaults(func=cmd_hubs_serve)


def cmd_hubs_token(args: argparse.Namespace) -> int:
    from glucohub.clinic_enrolment import hubs_token

    return hubs_token(_settings(args), args.hub, args.expires, args.by, qr=args.qr)


def cmd_hubs_tokens(args: argparse.Namespace) -> int:
    from glucohub.clinic_enrolment import hubs_tokens

    return hubs_tokens(_settings(args))


def cmd_hubs_revoke_token(args: argparse.Namespace) -> int:
    from glucohub.clinic_enrolment import hubs_revoke_token

    return hubs_revoke_token(_settings(args), args.token_id)


def cmd_hubs_mosquitto_passwords(args: argparse.Namespace) -> int:
    from glucohub.clinic_enrolment import mosquitto_passwords

    return mosquitto_passwords(_settings(args), args.into)


def cmd_hubs_serve(args: argparse.Namespace) -> int:
    from glucohub.clinic_enrolment import serve

    settings = _settings(args)
    _setup_logging(settings)
    return serve(settings)


def cmd_enrol(args: argparse.Namespace) -> int:
    from glucohub.enrol import run_enrol

    enrolled = run_enrol(_settings(args), args.url, args.token, args.ca_file or "")
    where = f" ({enrolled.clinic_name})" if enrolled.clinic_name else ""
    account = (
        "with its own broker account"
        if enrolled.with_password
        else "with its configured broker account"
    )
    print(
        f"hub {enrolled.hub_id} enrolled at the clinic{where}: it forwards to"
        f" {enrolled.broker_url} {account}; settings in {enrolled.written} (restart the hub)"
    )
    return 0


def cmd_clinic(args: argparse.Namespace) -> int:
    from glucohub.clinic import run_clinic

    settings = _settings(args)
    _setup_logging(settings)
    asyncio.run(run_clinic(settings, args.worker_id or settings.clinic.client_id, sys.stdout))
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from glucohub.clinic import clinic_database
    from glucohub.clinic_dashboard import run_clinic_dashboard

    settings = _settings(args)
    clinic_database(settings)  # a missing database URL is a one-line error before anything starts
    if args.port is not None:
        settings = settings.replace("dashboard", port=args.port)
    _setup_logging(settings)
    _hash_passwords_apart(settings)

    def ready(url: str) -> None:
        print(f"clinic dashboard on {url}", flush=True)

    with _port_in_use(settings, "choose another with --port"):
        asyncio.run(run_clinic_dashboard(settings, on_ready=ready))
    return 0


def cmd_hubs_reproject(args: argparse.Namespace) -> int:
    from glucohub.clinic import hubs_reproject

    return hubs_reproject(_settings(args))


def cmd_hubs_add(args: argparse.Namespace) -> int:
    from glucohub.clinic import hubs_add

    return hubs_add(_settings(args), args.hub, args.batch_key, args.log_key)


def cmd_hubs_list(args: argparse.Namespace) -> int:
    from glucohub.clinic import hubs_list
    from glucohub.clinic_enrolment import print_tokens

    settings = _settings(args)
    code = hubs_list(settings)
    print_tokens(settings, outstanding_only=True, out=sys.stdout)
    return code


def cmd_hubs_resolve(args: argparse.Namespace) -> int:
    from glucohub.clinic import hubs_resolve

    return hubs_resolve(_settings(args), args.hub, args.by)


def cmd_hubs_alarms(args: argparse.Namespace) -> int:
    from glucohub.clinic import alarms_list

    return alarms_list(_settings(args), args.open)


def cmd_simulate(args: argparse.Namespace) -> int:
    from glucohub.simulate import run_simulate

    result = run_simulate(
        hubs=args.hubs,
        patients=args.patients_per_hub,
        rate=args.rate,
        batches=args.batches,
        mqtt_url=args.mqtt_url,
        data_dir=args.data_dir,
        prefix=args.prefix,
        enrol_file=args.enrol_file,
        enrol_into=args.enrol_into,
    )
    print(
        f"simulated {result.hubs} hubs: {result.batches} batches, {result.readings} readings"
        " forwarded",
        file=sys.stderr,
    )
    return 0


EXIT_ERROR = 2
EXIT_PIPE_CLOSED = 128 + 13  # what a shell reports for a program ended by SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Every error is one line on stderr and exit 2, never a traceback; a
    reader that closed the pipe early (`| head`) ends the command quietly."""
    try:
        code = _dispatch(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()
        return EXIT_PIPE_CLOSED
    return code


def _misplaced_common_flag(argv: Sequence[str]) -> str | None:
    """The one line for `glucohub --data-dir D COMMAND …` (or --config): those flags belong to
    each command, so argparse would take D for the command, or the flag for an unknown one."""
    if not argv:
        return None
    flag, _, value = argv[0].partition("=")
    if flag not in ("--data-dir", "--config"):
        return None
    given = [argv[0]] if value else list(argv[:2])
    rest = list(argv[len(given) :])
    words = []
    while rest and not rest[0].startswith("-"):
        words.append(rest.pop(0))
    command = " ".join([*words, *given, *rest]) if words else f"COMMAND {' '.join(given)}"
    return f"glucohub: {flag} goes after the command: glucohub {command}"


def _dispatch(argv: Sequence[str] | None) -> int:
    misplaced = _misplaced_common_flag(sys.argv[1:] if argv is None else argv)
    if misplaced is not None:
        print(misplaced, file=sys.stderr)
        return EXIT_ERROR
    try:
        args = build_parser().parse_args(argv)
        result: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:  # the last stop before a traceback: one line instead
        print(_error_line(_single(exc)), file=sys.stderr)
        return EXIT_ERROR
    return result


def _single(exc: BaseException) -> BaseException:
    """The one error inside a task group's wrapper (a group of several stays as it is)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _error_line(exc: BaseException) -> str:
    if isinstance(exc, UsageError):  # already starts with the command: "glucohub report: ..."
        return str(exc)
    if isinstance(exc, GlucohubError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = _os_error_text(exc)
    else:  # our bug: say so, still in one line
        text = f"unexpected {type(exc).__name__}: {exc} (a bug: please report it)"
    return "glucohub: " + " ".join(text.split())


def _os_error_text(exc: OSError) -> str:
    if exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def _drop_stdout() -> None:
    """Point stdout at /dev/null so the flush at interpreter exit cannot fail again (the
    Python documentation's advice for SIGPIPE, `signal` module)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a file descriptor (tests capture it)
        pass


if __name__ == "__main__":
    sys.exit(main())
