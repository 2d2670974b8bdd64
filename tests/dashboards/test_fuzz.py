"""A bounded fuzz run over every route of the app: random and mutated paths, query strings,
form, multipart and raw bodies, as an admin, a clinician and a patient holding a valid CSRF
token. Bad input is the client's fault: never a 5xx, never a traceback in the body."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.dashboards.conftest import Login, csrf_of

SEED = 20260115
REQUESTS_PER_USER = 1500
PARAM = re.compile(r"\{([^}:]+)(?::[^}]*)?\}")

HUGE = [
    "99999999999999999999999",
    "-99999999999999999999999",
    "1" + "0" * 400,
    "9223372036854775808",
    "18446744073709551616",
    "1e309",
    "-1e309",
    "10**30",
    "1e-400",
    "nan",
    "inf",
    "-0",
    "0x10",
    "٣",  # an Arabic-Indic digit: int() accepts it
    "1_000",
]
TEXT = [
    "",
    " ",
    "pat-a",
    "pat-b",
    "pat-c",
    "al-a",
    "1",
    "0",
    "-1",
    "2",
    "..",
    "%2e%2e",
    "%ff%fe",
    "%00",
    "%C0%AF",
    "é",
    "💉",
    "a" * 300,
    "<script>",
    "x001/x234/067",
    "0/000.p/2",
    "entries/000",
    "html",
    "pdf",
    "json",
    "urgent_low",
    "cgm_glucose",
    "2026-01-15T12:00:00Z",
    "ge2026-01-01",
    "2026-13-45T99:99:99Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59Z",
]
QUERY_KEYS = [
    "days",
    "since",
    "until",
    "kind",
    "patient",
    "date",
    "old",
    "new",
    "format",
    "next",
    "minutes",
    "id",
    "%ff",
]
FORM_KEYS = ["kind", "minutes", "clinician", "body", "unit", "username", "password", "next"]
BAD_BYTES = [b"\xff\xfe", b"\xc0\xaf", b"\x80", b"\xed\xa0\x80", b"%ff", b"%"]


def value(rng: random.Random) -> str:
    pool = rng.choice((HUGE, TEXT, TEXT))
    found = rng.choice(pool)
    if rng.random() < 0.2:  # mutate: duplicate, cut, or splice in a random character
        i = rng.randrange(len(found) + 1)
        found = found[:i] + rng.choice(("", found, chr(rng.randrange(1, 0x3000)))) + found[i:]
    return found


def fill(path: str, rng: random.Random) -> str:
    return PARAM.sub(lambda m: value(rng).replace("/", "%2F") if m else "", path)


def query(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randrange(4)):
        key = rng.choice(QUERY_KEYS)
        parts.append(f"{key}={value(rng)}" if rng.random() < 0.9 else key)
    return "&".join(parts)


def body(rng: random.Random, csrf: str) -> tuple[bytes, dict[str, str]]:
    kind = rng.randrange(5)
    fields = [(rng.choice(FORM_KEYS), value(rng)) for _ in range(rng.randrange(4))]
    if kind == 0:  # a well-formed form with the token
        from urllib.parse import urlencode

        form = urlencode([("csrf_token", csrf), *fields]).encode()
        return form, {"Content-Type": "application/x-www-form-urlencoded"}
    if kind == 1:  # a form that is not UTF-8
        raw = b"&".join(
            k.encode() + b"=" + rng.choice(BAD_BYTES) + v.encode("utf-8", "replace")
            for k, v in fields or [("kind", "x")]
        )
        return raw, {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}
    if kind == 2:  # junk multipart: a boundary that never comes, or broken parts
        boundary = "b0undary"
        choices = [
            b"garbage without any boundary",
            b"--b0undary\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b0undary--\r\n",
            b'--b0undary\r\nContent-Disposition: form-data; name="kind"\r\n\r\n\xff\xfe'
            b"\r\n--b0undary--\r\n",
            b"--b0undary\r\n\r\n\r\n",
            b"--b0undary\r\nContent-Type: text/plain; charset=unknown-8bit\r\n"
            b'Content-Disposition: form-data; name="body"\r\n\r\nx\r\n--b0undary--\r\n',
            bytes(rng.randrange(256) for _ in range(rng.randrange(200))),
        ]
        content_type = rng.choice(
            (f"multipart/form-data; boundary={boundary}", "multipart/form-data")
        )
        return rng.choice(choices), {"Content-Type": content_type}
    if kind == 3:  # random bytes under a random type
        raw = bytes(rng.randrange(256) for _ in range(rng.randrange(300)))
        content_type = rng.choice(
            ("application/json", "application/x-www-form-urlencoded", "text/plain", "")
        )
        return raw, {"Content-Type": content_type} if content_type else {}
    return b"", {}


Send = Callable[[str, str, bytes, dict[str, str]], Awaitable[tuple[int, bytes]]]


def app_routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path template) of every route, but /logout (it would end the session)."""
    found = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "*"
    }
    return sorted(r for r in found if r[1] != "/logout")


async def fuzz(
    send: Send, routes: list[tuple[str, str]], csrf: str, rng: random.Random, count: int
) -> list[str]:
    """`count` random requests; the ones answered with a 5xx or a traceback."""
    failures: list[str] = []
    for _ in range(count):
        method, template = rng.choice(routes)
        path = fill(template, rng) if rng.random() < 0.9 else template
        q = query(rng)
        url = path + ("?" + q if q else "")
        headers = {"X-CSRF-Token": csrf} if rng.random() < 0.8 else {}
        data, extra = body(rng, csrf) if method == "POST" else (b"", {})
        status, raw = await send(method, url, data, {**headers, **extra})
        if status >= 500 or b"Traceback" in raw:
            failures.append(f"{method} {url!r} {extra} -> {status}")
    return failures


def client_sender(client: TestClient[web.Request, web.Application]) -> Send:
    async def send(
        method: str, url: str, data: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        response = await client.request(
            method, url, data=data, headers=headers, allow_redirects=False
        )
        return response.status, await response.read()

    return send


async def test_fuzzed_requests_never_give_a_server_error(
    app: web.Application, login: Login
) -> None:
    rng = random.Random(SEED)
    routes = app_routes(app)
    assert len(routes) > 30
    failures: list[str] = []
    started = time.monotonic()
    for username in ("root", "dr-grant", "alice"):
        client: TestClient[web.Request, web.Application] = await login(username)

        send = client_sender(client)
        found = await fuzz(send, routes, await csrf_of(client), rng, REQUESTS_PER_USER)
        failures += [f"{username} {f}" for f in found]
    assert failures == [], "\n".join(failures[:40]) + f"\n({len(failures)} in all)"
    assert time.monotonic() - started < 120
