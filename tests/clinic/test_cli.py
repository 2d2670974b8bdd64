"""`glucohub hubs ...` and `glucohub clinic` on a real PostgreSQL: what an admin types and sees."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.storage.postgres_clinic import ClinicArchive
from glucohub.cli import main
from tests.clinic.hubs import copy_hub, make_hub, produce
from tests.clinic.test_archive import NOW, _deliver


@pytest.fixture
def config(tmp_path: Path, postgres_url: str) -> Path:
    path = tmp_path / "clinic.toml"
    path.write_text(f'[clinic]\nurl = "{postgres_url}"\n')
    return path


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_an_admin_enrols_lists_and_resolves_a_hub(
    tmp_path: Path, config: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(tmp_path, "home-17")
    hub_id, jwk, vkey = hub.enrolment
    code, out, _ = _run(
        capsys, "hubs", "add", "--config", str(config), "--hub", hub_id,
        "--batch-key", jwk, "--log-key", vkey,
    )  # fmt: skip
    assert (code, out) == (0, "enrolled hub home-17\n")
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(config))
    assert out == "home-17\tactive\tbatches 0\tcheckpoint -\topen alarms 0\n"
    # the hub forks: the archive stops it; the admin resolves it
    twin = copy_hub(hub, tmp_path / "twin")
    archive = ClinicArchive(postgres_url)
    try:
        _deliver(archive, produce(hub, 1) + produce(twin, 1, start_minute=5))
    finally:
        archive.close()
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(config))
    assert out == "home-17\tstopped\tbatches 1\tcheckpoint 1\topen alarms 1\n"
    code, out, _ = _run(capsys, "hubs", "alarms", "--open", "--config", str(config))
    assert "\thome-17\tfork\topen\tx" in out
    code, out, _ = _run(capsys, "hubs", "resolve", "home-17", "--config", str(config))
    assert (code, out) == (
        0,
        "hub home-17: 1 alarm(s) resolved; its items are accepted again"
        " (0 held while it was stopped or not yet enrolled replayed)\n",
    )
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(config))
    assert out == "home-17\tactive\tbatches 1\tcheckpoint 1\topen alarms 0\n"


def test_a_log_key_of_another_hub_is_one_line_and_exit_2(
    tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = make_hub(tmp_path, "home-17")
    _, jwk, vkey = hub.enrolment
    code, out, err = _run(
        capsys, "hubs", "add", "--config", str(config), "--hub", "home-18",
        "--batch-key", jwk, "--log-key", vkey,
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "glucohub.local/home-17" in err and "home-18" in err


def test_a_worker_without_a_broker_or_an_id_says_which_key_to_set(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(capsys, "clinic", "--config", str(config), "--worker-id", "w1")
    assert code == 2 and "clinic.mqtt_url" in err and err.count("\n") == 1
    config.write_text(config.read_text() + 'mqtt_url = "mqtt://127.0.0.1:1"\n')
    code, _, err = _run(capsys, "clinic", "--config", str(config))
    assert code == 2 and "--worker-id" in err and err.count("\n") == 1


def test_clinic_accounts_are_the_dashboards_and_need_no_data_directory(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The README's clinic.toml names the archive and nothing else: the account commands
    # work from any directory and leave no data directory behind.
    config = tmp_path / "clinic.toml"
    config.write_text(f'[clinic]\nurl = "{postgres_url}"\n[storage]\nurl = "{postgres_url}"\n')
    workdir = tmp_path / "anywhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    # the dashboards' database: `[clinic] url` alone names it for them and for these commands
    alone = tmp_path / "clinic-alone.toml"
    alone.write_text(f'[clinic]\nurl = "{postgres_url}"\n')
    for name, file in (("dr-ada", config), ("dr-bob", alone)):
        monkeypatch.setattr("sys.stdin", io.StringIO("a long clinic passphrase 2026\n"))
        code, out, err = _run(
            capsys, "users", "add", name, "--role", "clinician", "--password-stdin",
            "--config", str(file),
        )  # fmt: skip
        assert (code, out, err) == (0, f"added clinician {name}\n", "")
    code, out, err = _run(capsys, "users", "list", "--config", str(config))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["dr-ada\tclinician\t-\tno", "dr-bob\tclinician\t-\tno"]
    # a data directory that exists (a hub's, the default var/data) changes nothing
    (workdir / "var" / "data").mkdir(parents=True)
    code, out, err = _run(capsys, "users", "list", "--config", str(alone))
    assert (code, err) == (0, "")
    assert out.splitlines()[1:] == ["dr-ada\tclinician\t-\tno", "dr-bob\tclinician\t-\tno"]
    assert list((workdir / "var" / "data").iterdir()) == []
    (workdir / "var" / "data").rmdir()
    (workdir / "var").rmdir()
    assert list(workdir.iterdir()) == []


def test_what_a_hub_sent_before_it_was_added_is_taken_in_by_resolve(
    tmp_path: Path, config: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The hub forwards before the admin types `hubs add`: its first items are dead-lettered
    # (unknown hub) and the hub never sends them again.
    hub = make_hub(tmp_path, "home-17")
    early, late = produce(hub, 2), produce(hub, 1, start_minute=10)
    archive = ClinicArchive(postgres_url)
    try:
        assert _deliver(archive, early) == ["dead_letter"] * 4
    finally:
        archive.close()
    hub_id, jwk, vkey = hub.enrolment
    code, out, _ = _run(
        capsys, "hubs", "add", "--config", str(config), "--hub", hub_id,
        "--batch-key", jwk, "--log-key", vkey,
    )  # fmt: skip
    assert (code, out) == (
        0,
        "enrolled hub home-17\n4 item(s) it sent before it was enrolled are held;"
        " `glucohub hubs resolve home-17` takes them in\n",
    )
    archive = ClinicArchive(postgres_url)
    try:
        _deliver(archive, late)
    finally:
        archive.close()
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(config))
    assert out == "home-17\tactive\tbatches 1\tcheckpoint -\topen alarms 1\n"
    code, out, _ = _run(capsys, "hubs", "resolve", "home-17", "--config", str(config))
    assert (code, out) == (
        0,
        "hub home-17: 1 alarm(s) resolved; its items are accepted again"
        " (4 held while it was stopped or not yet enrolled replayed)\n",
    )
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(config))
    assert out == "home-17\tactive\tbatches 3\tcheckpoint 3\topen alarms 0\n"


def test_an_admin_names_a_patient_the_hubs_batches_registered(
    tmp_path: Path,
    config: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    hub = make_hub(tmp_path, "home-17")
    archive = ClinicArchive(postgres_url)
    try:
        archive.enrol(*hub.enrolment, NOW)
        _deliver(archive, produce(hub, 1))
    finally:
        archive.close()
    code, out, _ = _run(capsys, "patients", "list", "--config", str(config))
    first = out.splitlines()[0].split("\t")
    patient_id = first[0]
    assert patient_id.startswith("home-17:") and first[1:3] == [patient_id, "UTC"]
    code, out, err = _run(
        capsys, "patients", "add", patient_id, "--name", "Ada Lovelace", "--config", str(config)
    )
    assert (code, out) == (2, "")
    assert err == (
        f"glucohub: patient {patient_id!r} already exists; change its name or time zone with"
        f" `glucohub patients assign {patient_id} --name NAME --timezone ZONE`\n"
    )
    code, out, err = _run(
        capsys, "patients", "assign", patient_id, "--name", "Ada Lovelace",
        "--timezone", "Europe/London", "--config", str(config),
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert (
        out.splitlines()[0] == f"patient {patient_id}: name Ada Lovelace, time zone Europe/London"
    )
    code, _, err = _run(
        capsys, "patients", "assign", patient_id, "--timezone", "London", "--config", str(config)
    )
    assert (code, err) == (
        2,
        "glucohub: unknown time zone 'London': give an IANA zone such as Europe/London\n",
    )
    # the hub's next batch keeps the name
    archive = ClinicArchive(postgres_url)
    try:
        _deliver(archive, produce(hub, 1, start_minute=5))
    finally:
        archive.close()
    code, out, _ = _run(capsys, "patients", "list", "--config", str(config))
    assert out.splitlines()[0].split("\t")[:3] == [patient_id, "Ada Lovelace", "Europe/London"]
    # registering one at the clinic leaves no data directory behind
    code, out, _ = _run(capsys, "patients", "add", "home-17:p9", "--config", str(config))
    assert (code, out) == (0, "added patient home-17:p9\n")
    assert not (tmp_path / "var").exists()
