"""A real hub on first run for the setup tests: `run_hub` over an empty data directory, its
dashboard on a free port, and the setup code read from the log line it prints."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from gateway.settings import load_settings
from glucohub.runtime import Running, run_hub

CODE_RE = re.compile(r"setup code ([A-Z2-9]{4}-[A-Z2-9]{4})")
TOKEN_RE = re.compile(r'name="setup_token" value="([^"]+)"')
PASSWORD = "kettle orchard lantern"


@dataclass(frozen=True, slots=True)
class FirstRunHub:
    url: str
    code: str
    data_dir: Path
    log: list[str]
    running: Running


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@asynccontextmanager
async def first_run_hub(
    data_dir: Path, *, ble: bool = True, hub_id: str = ""
) -> AsyncIterator[FirstRunHub]:
    environ = {
        "GLUCOHUB_STORAGE__DATA_DIR": str(data_dir),
        "GLUCOHUB_DASHBOARD__PORT": "0",
        "GLUCOHUB_LEDGER__BATCH_MAX_SECONDS": "0.2",
        "GLUCOHUB_BLE__ENABLED": "true" if ble else "false",
    }
    if hub_id:
        environ["GLUCOHUB_HUB__HUB_ID"] = hub_id
    settings = load_settings(None, environ)
    lines = _Lines()
    logger = logging.getLogger("glucohub.setup")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    stop = asyncio.Event()
    ready: asyncio.Future[Running] = asyncio.get_running_loop().create_future()
    hub = asyncio.create_task(run_hub(settings, stop=stop, on_ready=ready.set_result))
    try:
        running = await asyncio.wait_for(asyncio.shield(ready), 30)
        assert running.url is not None
        found = [m.group(1) for line in lines.lines if (m := CODE_RE.search(line))]
        yield FirstRunHub(
            url=running.url,
            code=found[-1] if found else "",
            data_dir=data_dir,
            log=lines.lines,
            running=running,
        )
    finally:
        stop.set()
        await asyncio.wait_for(hub, 30)
        logger.removeHandler(lines)


def token_of(html: str) -> str:
    found = TOKEN_RE.search(html)
    assert found, html
    return found.group(1)


class SetupClient:
    """A browser-less walk through the setup pages (form posts with the page's token)."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.session = session
        self.url = url
        self.html = ""
        self.status = 0

    async def get(self, path: str = "/setup") -> str:
        async with self.session.get(self.url + path) as response:
            self.status = response.status
            self.html = await response.text()
        return self.html

    async def post(self, path: str, **form: str) -> str:
        token = TOKEN_RE.search(self.html)
        data = {**({"setup_token": token.group(1)} if token else {}), **form}
        async with self.session.post(self.url + path, data=data) as response:
            self.status = response.status
            self.html = await response.text()
        return self.html


@asynccontextmanager
async def setup_client(url: str) -> AsyncIterator[SetupClient]:
    jar = aiohttp.CookieJar(unsafe=True)  # the hub is reached by IP address
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        yield SetupClient(session, url)
