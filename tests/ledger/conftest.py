"""Shared fixtures for the ledger tests: the published signed-note vectors and fresh keys."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DATA = Path(__file__).parent.parent / "data" / "ledger"


@pytest.fixture(scope="session")
def note_vectors() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((DATA / "signed_note_vectors.json").read_text("utf-8"))
    return loaded


@pytest.fixture
def log_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def witness_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()
