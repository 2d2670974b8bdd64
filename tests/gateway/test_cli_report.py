"""`glucohub report` writes the dashboard's AGP report: the self-contained HTML and the PDF with
embedded Unicode fonts, so any patient's name prints."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from glucohub.cli import main
from tests.dashboards.pdftext import pdf_text


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("patient", "name"), [("p-lw", "Łukasz Wójcik"), ("p-wf", "王芳"), ("p-x", "Zoë <b> & Ann")]
)
def test_the_cli_pdf_prints_any_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], patient: str, name: str
) -> None:
    hub = tmp_path / "hub"
    assert _run(capsys, "patients", "add", patient, "--name", name, "--data-dir", str(hub))[0] == 0
    out = tmp_path / "report.pdf"
    code, err = _run(
        capsys, "report", "--patient", patient, "--format", "pdf", "--out", str(out),
        "--data-dir", str(hub),
    )  # fmt: skip
    assert code == 0, err
    text = pdf_text(out.read_bytes())
    assert name in text, text[:200]
    assert "?" not in text.splitlines()[0]


def test_the_cli_html_is_the_self_contained_agp_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = tmp_path / "hub"
    _run(capsys, "patients", "add", "p-lw", "--name", "Łukasz <Wójcik>", "--data-dir", str(hub))
    out = tmp_path / "report.html"
    code, err = _run(
        capsys, "report", "--patient", "p-lw", "--unit", "mg/dL", "--out", str(out),
        "--data-dir", str(hub),
    )  # fmt: skip
    assert code == 0, err
    html = out.read_text(encoding="utf-8")
    assert "AGP Report: Łukasz &lt;Wójcik&gt;" in html  # escaped, not markup
    assert "glucose in mg/dL" in html
    # opens anywhere: stylesheet inlined, no scripts, no links into a dashboard
    lowered = html.lower()
    for forbidden in ("<script", "<link", 'href="/', "@import"):
        assert forbidden not in lowered
    assert "<style>" in html and ".agp-report" in html


def test_a_pdf_is_not_written_to_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`glucohub report --format pdf` typed at a terminal without --out: one line naming --out,
    exit 2, and no binary written over the terminal."""
    hub = tmp_path / "hub"
    assert _run(capsys, "patients", "add", "p-1", "--data-dir", str(hub))[0] == 0
    leader, follower = pty.openpty()
    shown = b""
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "glucohub", "report", "--patient", "p-1", "--format", "pdf",
             "--data-dir", str(hub)],
            stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(follower)
        while True:  # read what the terminal shows while the command runs (a full pty blocks it)
            if select.select([leader], [], [], 0.2)[0]:
                try:
                    chunk = os.read(leader, 65536)
                except OSError:  # EIO: the command has closed its side
                    chunk = b""
                shown += chunk
                if chunk:
                    continue
            if run.poll() is not None:
                break
        err = run.communicate(timeout=120)[1]
    finally:
        os.close(leader)
    done = subprocess.CompletedProcess(run.args, run.returncode, b"", err)
    assert done.returncode == 2
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("glucohub") and "--out" in lines[0], lines
    assert b"%PDF" not in shown
    # The same command into a file or pipe still writes the PDF.
    piped = subprocess.run(
        [sys.executable, "-m", "glucohub", "report", "--patient", "p-1", "--format", "pdf",
         "--data-dir", str(hub)],
        capture_output=True, timeout=120,
    )  # fmt: skip
    assert piped.returncode == 0 and piped.stdout.startswith(b"%PDF")
