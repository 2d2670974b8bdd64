"""A process's Prometheus /metrics on a port of its own (the clinic worker has no dashboard).

Only /metrics, text exposition format 0.0.4; anything else is 404. Unauthenticated, like the
hub's: what it serves must carry no hub or patient identity (`gateway.telemetry`).
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

from aiohttp import web

from gateway.errors import ConfigError

log = logging.getLogger("glucohub.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def metrics_app(render: Callable[[], str]) -> web.Application:
    async def metrics(_request: web.Request) -> web.StreamResponse:
        response = web.Response(text=render())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def start_metrics(port: int, render: Callable[[], str], config_key: str) -> web.AppRunner:
    """Serve /metrics on every interface at `port` (the caller calls `cleanup()`); a port
    that cannot be bound is the fault of the setting `config_key`."""
    runner = web.AppRunner(metrics_app(render), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, port=port).start()
    except OSError as exc:
        await runner.cleanup()
        if exc.errno == errno.EADDRINUSE:
            # Most often a second worker started on this machine with the same config.
            env = "GLUCOHUB_" + config_key.upper().replace(".", "__")
            raise ConfigError(
                config_key,
                f"port {port} is already in use; give each process on this machine its own"
                f" (e.g. {env}={port + 1})",
            ) from None
        raise ConfigError(config_key, f"cannot listen on port {port}: {exc}") from None
    log.info("metrics on port %d (/metrics)", port)
    return runner
