"""`glucohub patients add --team --ward` and `patients assign`: the care units triage filters by."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store import Store
from tests.gateway.test_cli import run


def test_a_patient_gets_a_team_and_ward_and_moves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "hub")
    assert (
        run(capsys, "patients", "add", "p1", "--team", "Paeds", "--ward", "W1", "--data-dir", d)[0]
        == 0
    )
    assert run(capsys, "patients", "add", "p2", "--data-dir", d)[0] == 0
    code, out, _ = run(capsys, "patients", "list", "--data-dir", d)
    assert code == 0
    assert out.splitlines() == ["p1\tp1\tUTC\tPaeds\tW1", "p2\tp2\tUTC\t-\t-"]
    code, out, _ = run(capsys, "patients", "assign", "p1", "--ward", "W2", "--data-dir", d)
    assert (code, out) == (0, "patient p1: team Paeds, ward W2\n")  # the team stays
    code, out, _ = run(capsys, "patients", "assign", "p1", "--team", "", "--data-dir", d)
    assert (code, out) == (0, "patient p1: team -, ward W2\n")
    store = Store(tmp_path / "hub")
    try:
        p1 = store.get_patient("p1")
        assert p1 is not None and (p1.team, p1.ward) == (None, "W2")
    finally:
        store.close()


def test_assigning_an_unknown_patient_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = str(tmp_path / "hub")
    assert run(capsys, "patients", "add", "p1", "--data-dir", d)[0] == 0
    code, out, err = run(capsys, "patients", "assign", "nobody", "--team", "X", "--data-dir", d)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "unknown patient 'nobody'" in err
    assert "Traceback" not in err
