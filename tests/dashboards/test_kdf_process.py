"""A hub computes password hashes in a process of its own: scrypt's 32 MiB is never the hub's."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from dashboards import accounts


@pytest.fixture
def kdf_apart() -> Iterator[None]:
    accounts.hash_in_process()
    try:
        yield
    finally:
        pool, accounts._kdf_pool = accounts._kdf_pool, None
        assert pool is not None
        pool.shutdown(wait=True)


def test_hashes_are_computed_in_another_process(
    kdf_apart: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def not_here(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("scrypt ran in the hub's own process")

    stored = accounts.hash_password("correct horse battery staple", n=2**10)
    monkeypatch.setattr(hashlib, "scrypt", not_here)  # the parent's only: the child is apart
    assert accounts.verify_password("correct horse battery staple", stored)
    assert not accounts.verify_password("correct horse battery stapler", stored)
    assert accounts.hash_password("x" * 12, n=2**10).startswith("scrypt$1024$8$1$")


def test_a_hash_made_apart_verifies_in_process_and_back(kdf_apart: None) -> None:
    apart = accounts.hash_password("lantern orchard kettle", n=2**10)
    pool, accounts._kdf_pool = accounts._kdf_pool, None
    try:
        assert accounts.verify_password("lantern orchard kettle", apart)
        here = accounts.hash_password("lantern orchard kettle", n=2**10)
    finally:
        accounts._kdf_pool = pool
    assert accounts.verify_password("lantern orchard kettle", here)
