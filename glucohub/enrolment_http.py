"""The clinic's enrolment endpoint (`glucohub hubs serve`): `POST /v1/enrol`, nothing else.

A process of its own, apart from the workers: it is the one part of the clinic that hubs
reach over HTTP, so a trust's IT publishes it alone (a reverse proxy route or a firewall
rule), while the workers' /metrics stay internal. Its only credential is the one-time token
in the request body; it reads and writes the archive's token and hub tables and answers
with nothing but the hub's own `[upstream]` settings. The token never reaches a log: not in
the URL, and aiohttp's access log is off.

Failed redemptions are throttled per source address (`dashboards.ratelimit`): after 5, each
further attempt waits twice as long, up to an hour (a 429 meanwhile). Behind a proxy every
hub shares the proxy's address; with `trust_forwarded` the last `X-Forwarded-For` hop is
the source instead.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiohttp import web

from dashboards.ratelimit import PER_SOURCE, Backoff, source_key
from gateway.clinic.enrolment import (
    ENROL_PATH,
    MAX_REQUEST_BYTES,
    EnrolmentGrant,
    EnrolmentRefused,
    EnrolmentRequest,
    Refused,
    mosquitto_hash,
    new_broker_password,
    parse_request,
)
from gateway.clock import Clock, SystemClock, utc_now
from gateway.errors import ConfigError, StorageError
from gateway.settings import Settings
from gateway.storage.postgres_enrolment import ClinicEnrolment, Redeemed
from gateway.topics import hub_topic_prefix

log = logging.getLogger("glucohub.enrolment")

# Refusals that say something about the token: what a guesser collects.
_GUESSES = {Refused.UNKNOWN, Refused.USED, Refused.EXPIRED, Refused.REVOKED, Refused.WRONG_HUB}
_MAX_SOURCES = 10_000  # sources remembered; the least recently failed is forgotten beyond


@dataclass(slots=True)
class FailureThrottle:
    """Failed attempts per source, in memory (one endpoint process)."""

    clock: Clock
    backoff: Backoff = PER_SOURCE
    _failures: OrderedDict[str, tuple[int, float]] = field(default_factory=OrderedDict)

    def wait_s(self, source: str) -> float:
        count, last = self._failures.get(source, (0, 0.0))
        now = self.clock.monotonic()
        if count and now - last > self.backoff.forget_s:
            del self._failures[source]
            return 0.0
        return max(0.0, last + self.backoff.delay_s(count) - now) if count else 0.0

    def failed(self, source: str) -> None:
        count, _ = self._failures.pop(source, (0, 0.0))
        self._failures[source] = (count + 1, self.clock.monotonic())
        while len(self._failures) > _MAX_SOURCES:
            self._failures.popitem(last=False)


Redeem = Callable[[EnrolmentRequest, str | None], Redeemed]


def enrolment_app(
    settings: Settings,
    redeem: Redeem,
    run: Callable[[Callable[[], Redeemed]], Awaitable[Redeemed]],
    *,
    clock: Clock | None = None,
    trust_forwarded: bool = False,
) -> web.Application:
    """The endpoint over `redeem` (run in the archive's thread by `run`)."""
    enrolment = settings.enrolment
    throttle = FailureThrottle(clock or SystemClock())

    def refuse(refused: Refused, detail: str = "", retry_after_s: float = 0) -> web.Response:
        message = f"{refused.message}{': ' + detail if detail else ''}"
        response = web.json_response({"error": refused.code, "message": message})
        response.set_status(refused.status)
        if retry_after_s:
            response.headers["Retry-After"] = str(math.ceil(retry_after_s))
        return response

    async def enrol(request: web.Request) -> web.StreamResponse:
        source = source_key(_source_address(request, trust_forwarded))
        wait = throttle.wait_s(source)
        if wait > 0:
            return refuse(Refused.TOO_MANY, retry_after_s=wait)
        try:
            body = await request.read()  # at most client_max_size, else 413
        except web.HTTPRequestEntityTooLarge:
            return refuse(Refused.MALFORMED, "too large")
        try:
            parsed = parse_request(body)
            password = new_broker_password() if enrolment.mqtt_passwords else ""
            hashed = mosquitto_hash(password) if password else None
            redeemed = await run(lambda: redeem(parsed, hashed))
        except EnrolmentRefused as exc:
            if exc.refused in _GUESSES:
                throttle.failed(source)
            log.info("enrolment refused from %s: %s", source, exc.refused.code)
            return refuse(exc.refused, exc.detail)
        except StorageError as exc:  # nothing was consumed: the hub may simply try again
            log.error("enrolment from %s not possible: %s", source, exc)
            return refuse(Refused.UNAVAILABLE, retry_after_s=30)
        log.info(
            "enrolment: hub %s %s with token #%d from %s",
            redeemed.hub_id,
            "enrolled again" if redeemed.re_enrolled else "enrolled",
            redeemed.token_id,
            source,
        )
        grant = EnrolmentGrant(
            clinic_name=enrolment.clinic_name,
            hub_id=redeemed.hub_id,
            broker_url=enrolment.broker_url,
            topic_prefix=hub_topic_prefix(redeemed.hub_id),
            username=redeemed.hub_id if password else "",
            password=password,
        )
        response = web.Response(body=grant.to_json(), content_type="application/json")
        response.headers["Cache-Control"] = "no-store"
        return response

    app = web.Application(client_max_size=MAX_REQUEST_BYTES)
    app.router.add_post(ENROL_PATH, enrol)
    return app


def _source_address(request: web.Request, trust_forwarded: bool) -> str:
    if trust_forwarded:
        hops = [h.strip() for h in request.headers.get("X-Forwarded-For", "").split(",")]
        if hops and hops[-1]:
            return hops[-1]
    return request.remote or "unknown"


def check_serving(settings: Settings) -> None:
    enrolment = settings.enrolment
    if not enrolment.broker_url:
        raise ConfigError(
            "enrolment.broker_url", "the hubs' broker, e.g. mqtts://clinic.example:8883"
        )
    if not 1 <= enrolment.port <= 65535:
        raise ConfigError("enrolment.port", f"must be 1..65535, got {enrolment.port}")


def _tls(settings: Settings) -> ssl.SSLContext | None:
    enrolment = settings.enrolment
    if not enrolment.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(enrolment.tls_cert, enrolment.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("enrolment.tls_cert", f"cannot load the certificate: {exc}") from None
    return context


async def serve_enrolment(
    settings: Settings, database_url: str, *, stop: asyncio.Event | None = None
) -> None:
    """Serve the endpoint until `stop` is set, or else until SIGTERM or SIGINT (then saying
    where it listens on standard output once it does)."""
    check_serving(settings)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clinic-enrolment")
    loop = asyncio.get_running_loop()
    store = await loop.run_in_executor(executor, ClinicEnrolment, database_url, utc_now())

    def redeem(request: EnrolmentRequest, password_hash: str | None) -> Redeemed:
        return store.redeem(request, utc_now(), password_hash)

    def run(call: Callable[[], Redeemed]) -> asyncio.Future[Redeemed]:
        return loop.run_in_executor(executor, call)

    enrolment = settings.enrolment
    app = enrolment_app(settings, redeem, run, trust_forwarded=enrolment.trust_forwarded)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, enrolment.host, enrolment.port, ssl_context=_tls(settings))
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                "enrolment.port", f"cannot listen on {enrolment.host}:{enrolment.port}: {exc}"
            ) from None
        scheme = "https" if enrolment.tls_cert else "http"
        line = f"enrolment endpoint on {scheme}://{enrolment.host}:{enrolment.port}{ENROL_PATH}"
        log.info(line)
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            print(line, flush=True)
        await stop.wait()
    finally:
        await runner.cleanup()
        await loop.run_in_executor(executor, store.close)
        executor.shutdown(wait=True)
