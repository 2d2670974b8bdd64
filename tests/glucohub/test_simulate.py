"""`glucohub simulate` against a real Mosquitto: what its summary line counts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.storage.postgres_clinic import ClinicArchive
from glucohub.simulate import open_hubs, run_simulate, simulate
from tests.support.mosquitto import Mosquitto


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker") as running:
        yield running


def _run(root: Path, broker: Mosquitto, batches: int) -> tuple[int, int]:
    hubs = open_hubs(root, 2, 3, "sim")
    try:
        result = asyncio.run(simulate(hubs, mqtt_url=broker.url, rate=20, batches=batches))
    finally:
        for hub in hubs:
            hub.close()
    return result.batches, result.readings


def test_a_second_run_on_the_same_hubs_counts_only_its_own_batches(
    tmp_path: Path, broker: Mosquitto
) -> None:
    # 2 hubs x `batches`, each batch one reading of each of 3 patients
    assert _run(tmp_path / "hubs", broker, 2) == (4, 12)
    assert _run(tmp_path / "hubs", broker, 3) == (6, 18)


def test_hubs_enrolled_into_the_archive_print_no_lines_to_paste(
    tmp_path: Path, broker: Mosquitto, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_simulate(
        hubs=2, patients=1, rate=20, batches=1, mqtt_url=broker.url, data_dir=tmp_path,
        prefix="ward", enrol_file=None, enrol_into=postgres_url,
    )  # fmt: skip
    assert (result.hubs, result.batches) == (2, 2)
    assert capsys.readouterr().out == "enrolled 2 hubs in the clinic archive\n"
    archive = ClinicArchive(postgres_url)
    try:
        assert [row.hub_id for row in archive.hubs()] == ["ward-0000", "ward-0001"]
    finally:
        archive.close()
