"""`glucohub report` writes the dashboard's AGP report: the self-contained HTML and the PDF with
embedded Unicode fonts, so any patient's name prints."""

from __future__ import annotations

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
