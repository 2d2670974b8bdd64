"""The hub's side of enrolment (`glucohub enrol URL TOKEN`; the setup page calls `enrol_hub`
too): send the hub's public keys with a one-time token to the clinic's endpoint and keep
what the clinic answers as the hub's `[upstream]` settings (`gateway.settings`' enrolment
file in the data directory, 0600). Every failure is an `EnrolmentFailed` with one line a
person can act on."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from gateway.clinic.enrolment import (
    EnrolmentRequest,
    parse_grant,
    refusal_line,
    split_link,
)
from gateway.errors import InputError
from gateway.sealing import BATCH_PUBLIC_FILE, KEYS_DIR, LOG_PUBLIC_FILE, load_keys
from gateway.settings import HubSettings, Settings, write_enrolled_upstream
from gateway.topics import hub_topic_prefix

TIMEOUT_S = 20.0
_MAX_ANSWER_BYTES = 64 * 1024


class EnrolmentFailed(InputError):
    """The hub could not enrol; the message says why in one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolled:
    clinic_name: str
    hub_id: str
    broker_url: str
    with_password: bool  # the clinic gave the hub a broker account of its own
    written: Path  # the enrolment file now holding [upstream]


def hub_public_keys(settings: Settings) -> tuple[str, str]:
    """(batch key JWK, log verifier key) as `glucohub keys show` prints them."""
    directory = settings.storage.data_dir / KEYS_DIR
    try:
        jwk = (directory / BATCH_PUBLIC_FILE).read_text().strip()
        vkey = (directory / LOG_PUBLIC_FILE).read_text().strip()
    except FileNotFoundError:
        # Written on the keys' first load; a hub never run has only its private keys.
        keys = load_keys(
            settings.storage.data_dir, settings.hub.hub_id, settings.ledger.key_passphrase or None
        )
        return json.dumps(keys.batch_jwk, sort_keys=True), keys.log_verifier_key
    return jwk, vkey


async def enrol_hub(
    settings: Settings,
    url: str,
    token: str | None = None,
    *,
    ca_file: str = "",
    timeout_s: float = TIMEOUT_S,
) -> Enrolled:
    """Redeem `token` (or the token in the link `url#token`) at the clinic's endpoint `url`
    and write the `[upstream]` settings it answers with. The hub's running forwarder reads
    them when the hub next starts."""
    try:
        endpoint, token = split_link(url, token)
    except ValueError as exc:
        raise EnrolmentFailed(str(exc)) from None
    _refuse_cleartext(endpoint)
    batch_jwk, log_key = hub_public_keys(settings)
    hub_id = settings.hub.hub_id
    if hub_id == HubSettings().hub_id:
        # Every hub starts with this id; at a clinic of many hubs it names none of them.
        raise EnrolmentFailed(
            f"this hub is still called {hub_id!r}: give it a name of its own (hub.hub_id,"
            " the same the clinic knows it by) before enrolling"
        )
    data_dir = settings.storage.data_dir
    if not os.access(data_dir, os.W_OK):
        # Found out after the POST, the token would be spent and its answer lost.
        raise EnrolmentFailed(
            f"cannot write to {data_dir}: run glucohub enrol as the hub's own user"
        )
    request = EnrolmentRequest(token=token, hub_id=hub_id, batch_jwk=batch_jwk, log_key=log_key)
    status, body = await _post(endpoint, request.to_json(), ca_file, timeout_s)
    if status in (404, 405) and refusal_line(body, status) == refusal_line(b"", status):
        # Not the endpoint's own refusal (those carry a message): the URL's path is wrong.
        raise EnrolmentFailed(
            f"{endpoint} answered HTTP {status}: it is not the clinic's enrolment endpoint"
            " (the link the clinic gave ends in /v1/enrol#ghe1_…)"
        )
    if status != 200:
        verb = "could not enrol this hub" if status >= 500 else "refused"
        raise EnrolmentFailed(f"the clinic {verb}: {refusal_line(body, status)}")
    try:
        grant = parse_grant(body)
    except ValueError as exc:
        raise EnrolmentFailed(f"{exc} (is {endpoint} the clinic's enrolment URL?)") from None
    if grant.hub_id != hub_id or grant.topic_prefix != hub_topic_prefix(hub_id):
        raise EnrolmentFailed(
            f"the clinic enrolled hub {grant.hub_id!r} under {grant.topic_prefix!r}; this hub"
            f" is {hub_id!r} and publishes under {hub_topic_prefix(hub_id)}"
        )
    upstream = {"url": grant.broker_url}
    if grant.password:
        upstream |= {"username": grant.username, "password": grant.password}
    written = write_enrolled_upstream(data_dir, upstream)
    return Enrolled(
        clinic_name=grant.clinic_name,
        hub_id=hub_id,
        broker_url=grant.broker_url,
        with_password=bool(grant.password),
        written=written,
    )


def _refuse_cleartext(endpoint: str) -> None:
    """The token (and the broker password coming back) travel only over TLS, but to this
    machine (a tunnel, a test)."""
    parts = urlsplit(endpoint)
    if parts.scheme == "https":
        return
    host = parts.hostname or ""
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise EnrolmentFailed(
            f"the clinic's URL must be https:// (plain http only to this machine): {endpoint}"
        )


async def _post(endpoint: str, body: bytes, ca_file: str, timeout_s: float) -> tuple[int, bytes]:
    where = urlsplit(endpoint).netloc
    tls: ssl.SSLContext | bool = True
    if ca_file:
        try:
            tls = ssl.create_default_context(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise EnrolmentFailed(f"cannot use CA file {ca_file}: {exc}") from None
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(
                endpoint,
                data=body,
                headers={"Content-Type": "application/json"},
                ssl=tls,
                allow_redirects=False,
            ) as response,
        ):
            answer = await response.content.read(_MAX_ANSWER_BYTES)
            return response.status, answer
    except aiohttp.ClientConnectorCertificateError as exc:
        raise EnrolmentFailed(
            f"TLS failure talking to the clinic at {where}: {exc.certificate_error}"
            " (a private CA: --ca-file)"
        ) from None
    except aiohttp.ClientSSLError as exc:
        raise EnrolmentFailed(f"TLS failure talking to the clinic at {where}: {exc}") from None
    except aiohttp.ClientConnectorError as exc:
        error = exc.os_error
        # asyncio's "Connect call failed (...)" says less than the errno's own text.
        code = error.errno or 0
        reason = os.strerror(code) if code > 0 else error.strerror or str(error)
        raise EnrolmentFailed(f"cannot reach the clinic at {where}: {reason}") from None
    except TimeoutError:
        raise EnrolmentFailed(
            f"the clinic at {where} did not answer within {timeout_s:g} s"
        ) from None
    except aiohttp.ClientError as exc:
        raise EnrolmentFailed(f"talking to the clinic at {where} failed: {exc}") from None


def run_enrol(settings: Settings, url: str, token: str | None, ca_file: str) -> Enrolled:
    return asyncio.run(enrol_hub(settings, url, token, ca_file=ca_file))
