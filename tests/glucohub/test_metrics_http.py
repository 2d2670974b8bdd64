"""The worker's /metrics port: what an admin sees when it cannot be had."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.errors import ConfigError
from glucohub.metrics_http import start_metrics


def test_a_port_in_use_names_the_setting_and_the_way_out() -> None:
    # A second worker started on the same machine with the same clinic.toml.
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError) as caught:
            asyncio.run(start_metrics(port, lambda: "", "clinic.metrics_port"))
    assert str(caught.value) == (
        f"config key 'clinic.metrics_port': port {port} is already in use; give each process"
        f" on this machine its own (e.g. GLUCOHUB_CLINIC__METRICS_PORT={port + 1})"
    )
