"""The clinic admin's enrolment commands: `glucohub hubs token`, `tokens`, `revoke-token`,
`mosquitto-passwords` and `serve` (the endpoint: `glucohub.enrolment_http`)."""

from __future__ import annotations

import asyncio
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TextIO

import segno

from gateway.clinic.enrolment import enrolment_link, parse_expiry
from gateway.clinic.projection import SEPARATOR
from gateway.clock import utc_now
from gateway.errors import InputError
from gateway.settings import Settings
from gateway.storage.postgres_enrolment import ClinicEnrolment, TokenRow
from gateway.topics import hub_topic_prefix
from glucohub.clinic import clinic_database


def _open(settings: Settings) -> ClinicEnrolment:
    return ClinicEnrolment(clinic_database(settings), utc_now())


def hubs_token(
    settings: Settings, hub_id: str | None, expires: str, by: str, *, qr: bool = False
) -> int:
    try:
        lifetime = parse_expiry(expires)
        if hub_id is not None:
            hub_topic_prefix(hub_id)  # refuses an id no topic can carry
            if SEPARATOR in hub_id:
                raise ValueError(f"hub_id {hub_id!r} cannot contain {SEPARATOR!r}")
    except ValueError as exc:
        # A token no hub could ever redeem.
        raise InputError(f"{exc}; no token made") from None
    now = utc_now()
    store = _open(settings)
    try:
        token_id, token = store.create_token(hub_id, lifetime, by, now)
    finally:
        store.close()
    whom = f"hub {hub_id}" if hub_id else "any new hub"
    print(
        f"enrolment token #{token_id} for {whom}, valid until {_when(now + lifetime)};"
        " shown only now, give it to the hub's installer"
    )
    print(token)
    public_url = settings.enrolment.public_url
    if public_url:
        link = enrolment_link(public_url, token)
        print(f"on the hub: glucohub enrol {link}")
        if qr:
            segno.make(link, error="m").terminal(out=sys.stdout, compact=True)
    else:
        print("on the hub: glucohub enrol https://CLINIC/v1/enrol TOKEN (set enrolment.public_url")
        print("to print the one-line link and its QR code)")
    return 0


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def token_line(row: TokenRow, now: datetime) -> str:
    whom = f"hub {row.hub_id}" if row.hub_id else "any hub"
    state = row.state(now)
    if state == "used":
        detail = f"used by {row.used_by_hub} at {_when(row.used_at or now)}"
    elif state == "revoked":
        detail = f"revoked at {_when(row.revoked_at or now)}"
    else:
        detail = f"{'expired' if state == 'expired' else 'expires'} {_when(row.expires_at)}"
    return f"token #{row.token_id}\t{state}\t{whom}\t{detail}\tmade by {row.created_by}"


def print_tokens(settings: Settings, *, outstanding_only: bool, out: TextIO) -> None:
    now = utc_now()
    store = _open(settings)
    try:
        rows = store.tokens()
    finally:
        store.close()
    for row in rows:
        if not outstanding_only or row.state(now) == "outstanding":
            print(token_line(row, now), file=out)


def hubs_tokens(settings: Settings) -> int:
    print_tokens(settings, outstanding_only=False, out=sys.stdout)
    return 0


def hubs_revoke_token(settings: Settings, token_id: int) -> int:
    store = _open(settings)
    try:
        store.revoke(token_id, utc_now())
    finally:
        store.close()
    print(f"enrolment token #{token_id} revoked")
    return 0


def mosquitto_passwords(settings: Settings, into: Path | None) -> int:
    """The `hub:hash` lines of hubs given a broker password; with `into`, merged into that
    Mosquitto password file (its other accounts kept)."""
    store = _open(settings)
    try:
        credentials = store.broker_credentials()
    finally:
        store.close()
    lines = [f"{hub_id}:{hashed}" for hub_id, hashed in credentials]
    if into is None:
        for line in lines:
            print(line)
        return 0
    hubs = {hub_id for hub_id, _ in credentials}
    kept = []
    if into.exists():
        kept = [
            line
            for line in into.read_text().splitlines()
            if line.strip() and line.split(":", 1)[0] not in hubs
        ]
    # Rewritten in place, not renamed over: a container's bind mount of this one file
    # (deploy/clinic/compose.yaml) keeps seeing the old inode after a rename. Mosquitto reads
    # it only at start and on SIGHUP, which the admin sends afterwards. A new file is 0600;
    # an existing one keeps its mode and owner (the broker's user must read it).
    fd = os.open(into, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.truncate()
        handle.write("".join(f"{line}\n" for line in [*kept, *lines]))
        handle.flush()
        os.fsync(handle.fileno())
    print(f"{into}: {len(kept)} other account(s) kept, {len(lines)} hub account(s) written")
    return 0


def serve(settings: Settings) -> int:
    from glucohub.enrolment_http import serve_enrolment

    asyncio.run(serve_enrolment(settings, clinic_database(settings)))
    return 0
