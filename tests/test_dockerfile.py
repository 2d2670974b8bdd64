"""The Docker image stays in step with the package (no Docker engine here to build it: these
checks read the Dockerfile against what the package and the hub need)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_of_the_distribution_is_copied_into_the_image() -> None:
    packages = {
        pattern.rstrip("*")
        for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = set(re.findall(r"^COPY (\w+) \./\1$", DOCKERFILE, re.M))
    assert packages <= copied, f"not copied into the image: {sorted(packages - copied)}"


def test_the_image_installs_the_postgresql_extra_and_the_report_fonts() -> None:
    assert "'.[postgresql]'" in DOCKERFILE
    ensure = (ROOT / "scripts" / "ensure-test-deps.sh").read_text()
    fonts = set(re.findall(r"missing\+=\((fonts-[\w-]+)\)", ensure))
    assert fonts, "the fonts the PDF report needs are no longer listed"
    for font in fonts:
        assert font in DOCKERFILE, f"{font} is not installed in the image"


def test_the_image_runs_the_hub_as_an_unprivileged_user_with_a_health_check() -> None:
    assert re.search(r"^USER glucohub$", DOCKERFILE, re.M)
    assert "HEALTHCHECK" in DOCKERFILE and "/healthz" in DOCKERFILE
    assert re.search(r'^CMD \["run"', DOCKERFILE, re.M)
