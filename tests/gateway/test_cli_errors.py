"""Every `glucohub` subcommand given the mistakes people make: exit 2, one line, no traceback.

The table below has a row for every subcommand of the real parser (a new subcommand without
bad-argument cases fails `test_every_subcommand_has_bad_argument_cases`)."""

from __future__ import annotations

import argparse
import ast
import asyncio
import io
import json
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from gateway.model import Reading, ReadingKind, Source
from gateway.protocols import Origin
from gateway.settings import load_settings
from gateway.store import DB_FILENAME
from gateway.units import Unit
from glucohub import accounts as hub_accounts
from glucohub.cli import build_parser, main
from glucohub.runtime import Running, run_hub

REPO = Path(__file__).resolve().parents[2]
READINGS = 3000  # ~400 KB of JSON Lines: far more than a pipe buffer holds


@dataclass(frozen=True)
class Hub:
    data_dir: Path
    log_key: str
    batch_key: str


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Hub:
    """A sealed hub: patient p1 (account dr-who may not see it yet), device cgm-1 and
    READINGS CGM readings in batches with a signed checkpoint."""
    d = tmp_path_factory.mktemp("cli-errors") / "hub"
    assert main(["patients", "add", "p1", "--data-dir", str(d)]) == 0
    argv = ["devices", "add", "cgm-1", "--patient", "p1", "--kind", "cgm", "--transport", "mqtt"]
    assert main([*argv, "--data-dir", str(d)]) == 0
    now = datetime.now(UTC).replace(microsecond=0)
    readings = [
        Reading(
            patient_id="p1",
            device_id="cgm-1",
            kind=ReadingKind.CGM_GLUCOSE,
            value=100.0 + i % 50,
            unit=Unit.MG_DL,
            time=now - timedelta(minutes=READINGS - i),
            source=Source.MQTT,
            seq=i,
        )
        for i in range(READINGS)
    ]
    env = {"GLUCOHUB_STORAGE__DATA_DIR": str(d), "GLUCOHUB_DASHBOARD__ENABLED": "false"}

    async def ingest() -> None:
        stop = asyncio.Event()

        async def source(sink, clock) -> None:  # type: ignore[no-untyped-def]
            await sink.submit(origin=Origin(source=Source.MQTT), readings=readings)
            stop.set()

        await run_hub(load_settings(None, env), sources=[source], stop=stop)

    asyncio.run(ingest())
    keys = d / "keys"
    log_key = (keys / "log-key.vkey").read_text().strip()
    return Hub(data_dir=d, log_key=log_key, batch_key=str(keys / "batch-key.jwk"))


def leaf_commands(parser: argparse.ArgumentParser, prefix: str = "") -> set[str]:
    """Every runnable subcommand ("users add", "export", ...) of the parser, walked."""
    found: set[str] = set()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= leaf_commands(sub, f"{prefix} {name}".strip())
    return found or {prefix}


TYPO = ("--data-dir", "{typo}")  # a mistyped data dir: must not be created
EMPTY = ("--data-dir", "{empty}")  # an existing directory without a hub: must stay empty
HUB = ("--data-dir", "{hub}")
PW = "--password-stdin"  # stdin holds a good password in every case

CASES: dict[str, dict[str, tuple[str, ...]]] = {
    "": {"no command": (), "unknown command": ("frobnicate",)},
    "run": {
        "config file missing": ("--config", "{tmp}/nope.toml"),
        "data dir is a file": ("--data-dir", "{file}"),
    },
    "demo": {
        "port not a number": ("--port", "eighty", *TYPO),
        "port out of range": ("--port", "70000", *TYPO),
        "negative patients": ("--patients", "-1", *TYPO),
        "history days not a number": ("--history-days", "two weeks", *TYPO),
        "data dir is a file": ("--data-dir", "{file}", "--port", "0"),
    },
    "export": {
        "missing data dir": TYPO,
        "data dir without a hub": EMPTY,
        "--since garbage": ("--since", "garbage", *HUB),
        "--since not a date": ("--since", "2026-11-31", *HUB),
        "--since without offset": ("--since", "2026-11-30T08:00", *HUB),
        "unknown format": ("--format", "xml", *HUB),
        "unknown patient": ("--patient", "nobody", *HUB),
    },
    "migrate": {"missing data dir": TYPO, "data dir without a hub": EMPTY},
    # A missing or empty data dir is one of the doctor's findings (exit 1), not a mistake.
    "doctor": {
        "config file missing": ("--config", "{tmp}/nope.toml"),
        "config not TOML": ("--config", "{file}"),
    },
    "backup": {
        "missing data dir": (
            *TYPO,
            "--out",
            "{tmp}/b.backup",
            "--passphrase-stdin",
        ),
        "data dir without a hub": (*EMPTY, "--out", "{tmp}/b.backup", "--passphrase-stdin"),
        "out in a missing directory": (*HUB, "--out", "{tmp}/no/such/b", "--passphrase-stdin"),
        "no terminal for the passphrase": (*HUB, "--out", "{tmp}/b.backup"),
        "keys asked for but none": (
            *EMPTY,
            "--out",
            "{tmp}/b",
            "--with-keys",
            "--passphrase-stdin",
        ),
    },
    "restore": {
        "backup missing": ("{tmp}/none.backup", *TYPO, "--passphrase-stdin"),
        "not a backup": ("{file}", *TYPO, "--passphrase-stdin"),
        "a directory": ("{tmp}", *TYPO, "--passphrase-stdin"),
        "over a hub without --force": ("{file}", *HUB, "--passphrase-stdin"),
        "no file and no published size": TYPO,
        "published size without root": ("--published-size", "3", *TYPO),
        "published root not a hash": ("--published-size", "3", "--published-root", "zz", *TYPO),
        "published size negative": ("--published-size", "-3", "--published-root", "00", *TYPO),
        "published size on a hub never restored": (
            *("--published-size", "0", "--published-root", "{empty_root}", *HUB),
        ),
        "witness state not one": ("--witness-state", "{file}", *TYPO),
    },
    "ledger verify": {
        "missing data dir": TYPO,
        "data dir without a hub": EMPTY,
        "bundle missing": (
            "--bundle",
            "{tmp}/none.jsonl",
            "--log-key",
            "{vkey}",
            "--batch-key",
            "{jwk}",
        ),
        "bundle without keys": ("--bundle", "{file}"),
        "batch key missing": (
            "--bundle",
            "{file}",
            "--log-key",
            "{vkey}",
            "--batch-key",
            "{tmp}/x.jwk",
        ),
    },
    "ledger export": {
        "missing data dir": (*TYPO, "--out", "{tmp}/b.jsonl"),
        "out in a missing directory": (*HUB, "--out", "{tmp}/no/such/b.jsonl"),
    },
    "ledger prove": {
        "missing data dir": (*TYPO, "--batch", "0", "--out", "{tmp}/p.json"),
        "batch not a number": (*HUB, "--batch", "first", "--out", "{tmp}/p.json"),
        "negative batch": (*HUB, "--batch", "-1", "--out", "{tmp}/p.json"),
        "unknown batch": (*HUB, "--batch", "99999", "--out", "{tmp}/p.json"),
        "huge batch": (*HUB, "--batch", str(2**70), "--out", "{tmp}/p.json"),
        "unknown patient": (*HUB, "--batch", "0", "--patient", "nobody", "--out", "{tmp}/p"),
        "out in a missing directory": (*HUB, "--batch", "0", "--out", "{tmp}/no/such/p.json"),
    },
    "ledger check-proof": {
        "missing file": ("{tmp}/missing.json", "--log-key", "{vkey}"),
        "a directory": ("{tmp}", "--log-key", "{vkey}"),
        "batch key missing": ("{file}", "--log-key", "{vkey}", "--batch-key", "{tmp}/x.jwk"),
        "no log key": ("{file}",),
    },
    "witness": {
        "interval not a number": (
            *("--log-url", "http://127.0.0.1:9/log", "--log-key", "{vkey}"),
            *("--state-dir", "{tmp}/w", "--key-file", "{tmp}/w.key", "--interval", "soon"),
        ),
        "zero interval": (
            *("--log-url", "http://127.0.0.1:9/log", "--log-key", "{vkey}"),
            *("--state-dir", "{tmp}/w", "--key-file", "{tmp}/w.key", "--interval", "0"),
        ),
        "key file in a file": (
            *("--log-url", "http://127.0.0.1:9/log", "--log-key", "{vkey}"),
            *("--state-dir", "{tmp}/w", "--key-file", "{file}/w.key", "--print-vkey"),
        ),
    },
    "patients add": {
        "unknown time zone": ("p9", "--timezone", "Mars/Olympus", *TYPO),
        "empty time zone": ("p9", "--timezone", "", *HUB),
        "duplicate id": ("p1", *HUB),
        # an id is a level of the MQTT topic and a path segment of the pages' URLs
        "empty id": ("", *HUB),
        "id with a slash": ("ward/p9", *HUB),
        "id with an MQTT wildcard": ("p#", *HUB),
        "id with a space": ("p 9", *HUB),
        "id that is a path step": ("..", *HUB),
        "id with two hub prefixes": ("a:b:c", *HUB),
        "data dir is a file": ("p9", "--data-dir", "{file}"),
    },
    "patients list": {"missing data dir": TYPO, "data dir without a hub": EMPTY},
    "patients assign": {
        "missing data dir": ("p1", "--team", "Red", *TYPO),
        "unknown patient": ("nobody", "--ward", "W1", *HUB),
    },
    "devices add": {
        "missing data dir": ("d9", "--patient", "p1", "--kind", "cgm", "--transport", "ble", *TYPO),
        "unknown patient": (
            "d9",
            "--patient",
            "nobody",
            "--kind",
            "cgm",
            "--transport",
            "ble",
            *HUB,
        ),
        "unknown kind": ("d9", "--patient", "p1", "--kind", "toaster", "--transport", "ble", *HUB),
    },
    "devices list": {"missing data dir": TYPO, "data dir without a hub": EMPTY},
    "devices remove": {"missing data dir": ("cgm-1", *TYPO), "unknown device": ("nope", *HUB)},
    "deadletters": {"missing data dir": TYPO, "unknown format": ("--format", "xml", *HUB)},
    "keys init": {
        "data dir is a file": ("--data-dir", "{file}"),
        "passphrase without a terminal": ("--passphrase", *TYPO),
    },
    "keys show": {"missing data dir": TYPO, "no keys": EMPTY},
    "alerts": {
        "missing data dir": TYPO,
        "unknown format": ("--format", "xml", *HUB),
        "unknown patient": ("--patient", "nobody", *HUB),
    },
    "report": {
        "missing data dir": ("--patient", "p1", *TYPO),
        "unknown patient": ("--patient", "nobody", *HUB),
        "days not a number": ("--patient", "p1", "--days", "x", *HUB),
        "zero days": ("--patient", "p1", "--days", "0", *HUB),
        "out in a missing directory": ("--patient", "p1", "--out", "{tmp}/no/r.html", *HUB),
    },
    "users add": {
        "missing data dir": ("ann", "--role", "admin", PW, *TYPO),
        "no terminal for the password": ("ann", "--role", "admin", *HUB),
        "no terminal, a fresh directory": ("ann", "--role", "admin", *EMPTY),
        "unknown patient": ("ann", "--role", "patient", "--patient", "nobody", PW, *HUB),
        "patient role without --patient": ("ann", "--role", "patient", PW, *HUB),
        "unknown role": ("ann", "--role", "god", PW, *HUB),
    },
    "users passwd": {
        "missing data dir": ("ann", PW, *TYPO),
        "unknown user": ("nobody", PW, *HUB),
        "no terminal for the password": ("nobody", *HUB),
    },
    "users disable": {"missing data dir": ("ann", *TYPO), "unknown user": ("nobody", *HUB)},
    "users grant": {
        "missing data dir": ("dr-who", "--patient", "p1", *TYPO),
        "unknown clinician": ("nobody", "--patient", "p1", *HUB),
    },
    "users revoke": {
        "missing data dir": ("dr-who", "--patient", "p1", *TYPO),
        "no --patient": ("dr-who", *HUB),
        "unknown clinician": ("nobody", "--patient", "p1", *HUB),
        "unknown patient": ("dr-who", "--patient", "nope", *HUB),
    },
    "users token": {
        "missing data dir": ("dr-who", *TYPO),
        "unknown user": ("nobody", *HUB),
        "expiry not a number": ("dr-who", "--expires-days", "x", *HUB),
        "expiry too far": ("dr-who", "--expires-days", "99999999999", *HUB),
    },
    "users tokens": {"missing data dir": ("dr-who", *TYPO), "unknown user": ("nobody", *HUB)},
    "nightscout secret": {
        "missing data dir": ("--patient", "p1", *TYPO),
        "data dir without a hub": ("--patient", "p1", *EMPTY),
        "no --patient": HUB,
        "unknown patient": ("--patient", "nope", *HUB),
    },
    "nightscout token": {
        "missing data dir": ("--patient", "p1", "--name", "x", *TYPO),
        "data dir without a hub": ("--patient", "p1", "--name", "x", *EMPTY),
        "no --name": ("--patient", "p1", *HUB),
        "unknown role": ("--patient", "p1", "--name", "x", "--role", "god", *HUB),
        "unknown patient": ("--patient", "nope", "--name", "x", *HUB),
    },
    "nightscout list": {"missing data dir": TYPO, "data dir without a hub": EMPTY},
    "nightscout revoke": {
        "missing data dir": ("1", *TYPO),
        "id not a number": ("first", *HUB),
        "unknown id": ("12345", *HUB),
        "huge id": (str(2**70), *HUB),
    },
    "users revoke-token": {
        "missing data dir": ("1", *TYPO),
        "id not a number": ("first", *HUB),
        "unknown id": ("12345", *HUB),
        "huge id": (str(2**70), *HUB),
    },
    "users list": {"missing data dir": TYPO, "data dir without a hub": EMPTY},
    "gatt decode": {"not hex": ("2A37", "zz"), "unknown characteristic": ("FFFF", "00")},
    "ble scan": {
        "timeout not a number": ("--timeout", "x"),
        "negative timeout": ("--timeout", "-1"),
    },
    "ble pair": {
        "missing data dir": ("AA:BB:CC:DD:EE:FF", "--patient", "p1", *TYPO),
        "unknown patient": ("AA:BB:CC:DD:EE:FF", "--patient", "nobody", *HUB),
    },
    "clinic": {"no clinic database": (), "config file missing": ("--config", "{tmp}/nope.toml")},
    "dashboard": {
        "no clinic database": (),
        "config file missing": ("--config", "{tmp}/nope.toml"),
        "port not a number": ("--port", "x"),
    },
    "hubs add": {
        "no clinic database": ("--hub", "h1", "--batch-key", "{jwk}", "--log-key", "{vkey}"),
        "no --hub": ("--batch-key", "{jwk}", "--log-key", "{vkey}"),
    },
    "hubs list": {"no clinic database": ()},
    "hubs resolve": {"no hub": (), "no clinic database": ("h1",)},
    "hubs alarms": {"no clinic database": ("--open",)},
    "hubs token": {"no clinic database": (), "expiry not a duration": ("--expires", "soon")},
    "hubs tokens": {"no clinic database": ()},
    "hubs revoke-token": {"no clinic database": ("1",), "id not a number": ("first",)},
    "hubs mosquitto-passwords": {"no clinic database": ("--into", "{tmp}/passwords")},
    "hubs serve": {"no clinic database": ()},
    "enrol": {
        "missing data dir": ("http://127.0.0.1:9/v1/enrol", "ghe1_" + "A" * 43, *TYPO),
        "no keys": ("http://127.0.0.1:9/v1/enrol", "ghe1_" + "A" * 43, *EMPTY),
        "no token": ("https://clinic.example/v1/enrol", *HUB),
        "not https": ("http://clinic.example/v1/enrol", "ghe1_" + "A" * 43, *HUB),
        "hub under the default id": ("http://127.0.0.1:9/v1/enrol", "ghe1_" + "A" * 43, *HUB),
    },
    "hubs reproject": {"no clinic database": ()},
    "simulate": {
        "no --hubs": ("--mqtt-url", "mqtt://127.0.0.1:1"),
        "rate zero": ("--hubs", "1", "--rate", "0", "--mqtt-url", "mqtt://127.0.0.1:1"),
        "not an MQTT URL": ("--hubs", "1", "--mqtt-url", "http://127.0.0.1:1"),
    },
}


def test_every_subcommand_has_bad_argument_cases() -> None:
    assert set(CASES) - {""} == leaf_commands(build_parser())


@pytest.mark.parametrize(
    ("command", "argv"),
    [
        pytest.param(command, argv, id=f"{command or 'glucohub'}: {label}")
        for command, cases in CASES.items()
        for label, argv in cases.items()
    ],
)
def test_a_mistake_is_one_line_and_exit_2(
    hub: Hub,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: str,
    argv: tuple[str, ...],
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "a-file").write_text("not a hub, a proof or a bundle\n")
    values = {
        "hub": hub.data_dir,
        "typo": tmp_path / "typo",
        "empty": tmp_path / "empty",
        "tmp": tmp_path,
        "file": tmp_path / "a-file",
        "vkey": hub.log_key,
        "jwk": hub.batch_key,
        "empty_root": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    }
    # no terminal: what cron, a pipe or a service manager gives the command
    monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password 42\n"))
    code = main([*command.split(), *(a.format(**values) for a in argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.endswith("\n"), err
    # `ledger.witness` is also a standalone program (python -m ledger.witness): "error: ..."
    assert err.startswith("glucohub") or (command == "witness" and err.startswith("error: "))
    assert out == ""
    assert not (tmp_path / "typo").exists()
    assert list((tmp_path / "empty").iterdir()) == []


def test_usage_errors_name_the_flag_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--days", "x", "--patient", "p1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "glucohub report: argument --days: not a whole number: 'x' (see glucohub report --help)\n"
    )


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["--data-dir", "/var/lib/glucohub", "patients", "list"],
            "glucohub: --data-dir goes after the command: "
            "glucohub patients list --data-dir /var/lib/glucohub\n",
        ),
        (
            ["--config=hub.toml", "run"],
            "glucohub: --config goes after the command: glucohub run --config=hub.toml\n",
        ),
        (  # "demo" is a command too: it must not start the demo
            ["--data-dir", "demo", "users", "list"],
            "glucohub: --data-dir goes after the command: glucohub users list --data-dir demo\n",
        ),
    ],
)
def test_a_common_flag_before_the_command_says_where_it_goes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    argv: list[str],
    expected: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", expected)
    assert list(tmp_path.iterdir()) == []


def test_missing_data_dir_is_named_and_nothing_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    typo = tmp_path / "hbu"
    assert main(["export", "--data-dir", str(typo)]) == 2
    err = capsys.readouterr().err
    assert f"data directory {typo} does not exist" in err and "--data-dir" in err
    assert not typo.exists()


def test_since_a_bare_date_is_midnight_utc(hub: Hub, capsys: pytest.CaptureFixture[str]) -> None:
    # the readings are one a minute up to now; a date two days ahead selects none, today's
    # date selects those from 00:00 UTC on
    today = datetime.now(UTC).date()
    code = main(["export", "--data-dir", str(hub.data_dir), "--since", today.isoformat()])
    out, err = capsys.readouterr()
    assert code == 0, err
    times = [datetime.fromisoformat(json.loads(line)["time"]) for line in out.splitlines()]
    midnight = datetime(today.year, today.month, today.day, tzinfo=UTC)
    assert times and min(times) >= midnight and min(times) - midnight < timedelta(minutes=1)
    code = main(
        ["export", "--data-dir", str(hub.data_dir), "--since", str(today + timedelta(days=2))]
    )
    assert code == 0 and capsys.readouterr().out == ""


def test_a_time_zone_must_be_in_the_iana_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "hub"
    code = main(["patients", "add", "mars", "--timezone", "Mars/Olympus", "--data-dir", str(d)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("glucohub: unknown time zone 'Mars/Olympus'")
    assert not d.exists()
    code = main(["patients", "add", "paris", "--timezone", "Europe/Paris", "--data-dir", str(d)])
    assert code == 0
    main(["patients", "list", "--data-dir", str(d)])
    assert capsys.readouterr().out.splitlines()[-1] == "paris\tparis\tEurope/Paris\t-\t-"


def test_users_list_shows_accounts_never_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "hub"
    assert main(["patients", "add", "p1", "--data-dir", str(d)]) == 0
    for argv in (
        ("dr-who", "--role", "clinician"),
        ("ann", "--role", "patient", "--patient", "p1"),
        ("root", "--role", "admin"),
    ):
        monkeypatch.setattr("sys.stdin", io.StringIO("a long enough password 42\n"))
        assert main(["users", "add", *argv, PW, "--data-dir", str(d)]) == 0
    assert main(["users", "disable", "root", "--data-dir", str(d)]) == 0
    assert main(["users", "token", "dr-who", "--data-dir", str(d)]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert main(["users", "list", "--data-dir", str(d)]) == 0
    out = capsys.readouterr().out
    assert [line.split("\t") for line in out.splitlines()] == [
        ["username", "role", "patient", "disabled"],
        ["ann", "patient", "p1", "no"],
        ["dr-who", "clinician", "-", "no"],
        ["root", "admin", "-", "yes"],
    ]
    assert token not in out and "scrypt" not in out


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert capsys.readouterr().out == f"glucohub {declared}\n"


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def test_demo_on_a_busy_port_names_it_and_the_way_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], busy_port: int
) -> None:
    argv = ["demo", "--port", str(busy_port), "--patients", "1", "--history-days", "0"]
    code = main([*argv, "--data-dir", str(tmp_path / "demo")])
    out, err = capsys.readouterr()
    assert code == 2 and "Traceback" not in out + err
    assert err == (
        f"glucohub: dashboard port 127.0.0.1:{busy_port} is already in use;"
        " choose another with --port, e.g. --port 8081\n"
    )


def test_a_second_hub_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    """`glucohub demo` (or `run`) twice on one data directory, on different ports: the second
    would seal the same log as the first; it stops at once in one line, the first goes on."""
    data = tmp_path / "demo"
    argv = [sys.executable, "-m", "glucohub", "demo", "--patients", "1", "--history-days", "0"]
    first = subprocess.Popen(
        [*argv, "--port", "0", "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert first.stdout is not None
        assert first.stdout.readline().startswith("Glucohub demo running")
        second = subprocess.run(
            [*argv, "--port", "0", "--data-dir", str(data)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert second.returncode == 2, second
        assert "running" not in second.stdout
        assert second.stderr == (
            f"glucohub: another hub is running on data directory {data}; stop it first\n"
        )
        assert first.poll() is None
    finally:
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
        if first.stdout is not None:
            first.stdout.close()
    assert first.returncode == 0


def test_run_on_a_busy_port_says_which_setting(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    busy_port: int,
) -> None:
    monkeypatch.setenv("GLUCOHUB_DASHBOARD__PORT", str(busy_port))
    code = main(["run", "--data-dir", str(tmp_path / "hub")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"port 127.0.0.1:{busy_port} is already in use" in err and "dashboard.port" in err


def test_export_into_head_ends_quietly(hub: Hub) -> None:
    """The README's own `glucohub export … | head`, through a real shell pipe and the
    installed console script."""
    script = shutil.which("glucohub", path=str(Path(sys.executable).parent))
    assert script is not None
    pipeline = f'"{script}" export --data-dir "{hub.data_dir}" | head -n 1'
    result = subprocess.run(
        ["bash", "-c", pipeline + '; echo "glucohub exit ${PIPESTATUS[0]}"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stderr == ""
    first, status = result.stdout.splitlines()
    assert json.loads(first)["device_id"] == "cgm-1"
    assert status == "glucohub exit 141"  # as any program a closed pipe ends (128 + SIGPIPE)


def option_strings(parser: argparse.ArgumentParser) -> set[str]:
    found: set[str] = set()
    for action in parser._actions:
        found.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= option_strings(sub)
    return found


FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
# the CLI and the modules whose error messages it prints
MESSAGE_SOURCES = [
    *sorted((REPO / "glucohub").rglob("*.py")),
    *sorted((REPO / "gateway").rglob("*.py")),
    REPO / "dashboards" / "accounts.py",
    REPO / "device_adapters" / "ble" / "cli.py",
]


def strings(path: Path) -> Iterator[str]:
    """The string constants of a module, docstrings (bare string statements) left out."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.Constant) or id(node) in docstrings:
            continue
        if isinstance(node.value, str):
            yield node.value


def test_messages_name_only_flags_that_exist() -> None:
    real = option_strings(build_parser())
    named = {
        (path.relative_to(REPO).as_posix(), flag)
        for path in MESSAGE_SOURCES
        for text in strings(path)
        for flag in FLAG.findall(text)
    }
    assert {(where, flag) for where, flag in named if flag not in real} == set()


async def test_a_bad_zone_stored_earlier_falls_back_to_utc(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A zone stored before `patients add` checked zones: the pages, the report and the FHIR
    summary show the patient in UTC (and say UTC) instead of answering 500."""
    d = tmp_path / "hub"
    assert main(["patients", "add", "p1", "--name", "Ann", "--data-dir", str(d)]) == 0
    db = sqlite3.connect(d / DB_FILENAME)
    db.execute("UPDATE patients SET timezone = 'Mars/Olympus'")
    db.commit()
    db.close()
    password = "a long enough password 42"
    hub_accounts.users_add(d / DB_FILENAME, "dr", "clinician", password)
    hub_accounts.grant(d / DB_FILENAME, "p1", "dr")
    env = {"GLUCOHUB_STORAGE__DATA_DIR": str(d), "GLUCOHUB_DASHBOARD__PORT": "0"}
    stop, ready = asyncio.Event(), asyncio.Event()
    urls: list[str] = []

    def on_ready(running: Running) -> None:
        assert running.url is not None
        urls.append(running.url)
        ready.set()

    task = asyncio.create_task(run_hub(load_settings(None, env), stop=stop, on_ready=on_ready))
    try:
        await asyncio.wait_for(ready.wait(), 20)
        base = urls[0]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as dr:
            async with dr.get(f"{base}/login") as page:
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', await page.text())
            assert csrf is not None
            form = {"username": "dr", "password": password, "csrf_token": csrf.group(1)}
            async with dr.post(f"{base}/login", data=form) as response:
                assert response.status == 200
            for path in (
                "/",
                "/patients/p1",
                "/patients/p1/report",
                "/fhir/Observation?patient=p1&code=cgm-summary",
            ):
                async with dr.get(base + path) as response:
                    assert response.status == 200, path
            async with dr.get(f"{base}/patients/p1") as response:
                page_text = await response.text()
            assert "UTC" in page_text and "Mars/Olympus" not in page_text
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    capsys.readouterr()
    assert main(["report", "--patient", "p1", "--format", "json", "--data-dir", str(d)]) == 0
    assert json.loads(capsys.readouterr().out)["patient"]["timezone"] == "UTC"
