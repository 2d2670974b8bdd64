"""Where `glucohub run` and `demo` log: standard error (under systemd, the journal, which
rotates and bounds it), or a file of bounded size with numbered backups (`hub.log_file`)."""

from __future__ import annotations

import io
import logging
import logging.handlers
import os
from collections.abc import Mapping
from pathlib import Path

from gateway.settings import HubSettings

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# journald stamps every line itself (JOURNAL_STREAM names the stream it reads, systemd.exec(5))
JOURNAL_FORMAT = "%(levelname)s %(name)s: %(message)s"


class OwnerOnlyRotatingFileHandler(logging.handlers.RotatingFileHandler):
    """A log names patients and devices: each file it starts is created 0600."""

    def _open(self) -> io.TextIOWrapper:
        os.close(os.open(self.baseFilename, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600))
        return super()._open()


def log_handler(hub: HubSettings, environ: Mapping[str, str]) -> logging.Handler:
    if hub.log_file:
        path = Path(hub.log_file)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler: logging.Handler = OwnerOnlyRotatingFileHandler(
            path,
            maxBytes=max(1, int(hub.log_file_max_mb * 1024 * 1024)),
            backupCount=hub.log_file_backups,
            encoding="utf-8",
        )
        handler.setFormatter(logging.Formatter(FORMAT))
        return handler
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(JOURNAL_FORMAT if environ.get("JOURNAL_STREAM") else FORMAT)
    )
    return handler


def setup_logging(hub: HubSettings, environ: Mapping[str, str]) -> logging.Handler:
    """Send the root logger's records at `hub.log_level` and above to one handler."""
    handler = log_handler(hub, environ)
    logging.basicConfig(
        level=getattr(logging, hub.log_level.upper(), logging.INFO), handlers=[handler]
    )
    return handler
