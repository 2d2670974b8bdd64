"""deploy/clinic/ against the package (there is no Docker engine here to run it): the compose
file's glucohub commands parse as glucohub commands, the settings it passes are real keys with
valid values, the files it mounts exist, its services name each other consistently; and the
broker's ACL, run in a real Mosquitto, keeps each hub to its own topics."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.settings import ENV_PREFIX, load_settings
from gateway.topics import batches_topic, checkpoints_topic, shared_hub_subscriptions
from glucohub.cli import build_parser, cmd_clinic, cmd_dashboard
from glucohub.clinic import clinic_database
from tests.support.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "clinic"
WORKERS = ("worker-1", "worker-2")
DASHBOARDS = ("dashboard-1", "dashboard-2")


# -- a small YAML reader: the block subset compose.yaml is written in ------------------------
# (PyYAML is not a dependency. Mappings, lists of scalars, plain / double-quoted / JSON flow
# list scalars, whole-line comments; anything else is refused rather than misread.)


def parse_yaml_subset(text: str) -> Any:
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if "\t" in raw:
            raise ValueError(f"line {number}: tab")
        lines.append((len(raw) - len(raw.lstrip(" ")), stripped, number))
    value, end = _block(lines, 0, lines[0][0])
    if end != len(lines):
        raise ValueError(f"line {lines[end][2]}: unexpected indentation")
    return value


def _block(lines: list[tuple[int, str, int]], i: int, indent: int) -> tuple[Any, int]:
    if lines[i][1].startswith("- "):
        items = []
        while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("- "):
            items.append(_scalar(lines[i][1][2:], lines[i][2]))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(lines) and lines[i][0] == indent:
        _, text, number = lines[i]
        key, colon, rest = text.partition(":")
        if not colon or (rest and not rest.startswith(" ")) or not re.fullmatch(r"[\w.-]+", key):
            raise ValueError(f"line {number}: not a 'key: value' line: {text!r}")
        if key in mapping:
            raise ValueError(f"line {number}: duplicate key {key!r}")
        i += 1
        if rest.strip():
            mapping[key] = _scalar(rest.strip(), number)
        elif i < len(lines) and lines[i][0] > indent:
            mapping[key], i = _block(lines, i, lines[i][0])
        else:
            mapping[key] = None
    return mapping, i


def _scalar(text: str, number: int) -> Any:
    if text.startswith(('"', "[")):
        return json.loads(text)
    if text[0] in "'{&*!|>%@`" or " #" in text or ": " in text:
        raise ValueError(f"line {number}: outside the subset: {text!r}")
    return int(text) if text.isdigit() else text


def test_the_small_yaml_reader_refuses_what_it_does_not_know() -> None:
    assert parse_yaml_subset('a:\n  b: 1\n  c:\n    - "x"\n    - y\nd:\n') == {
        "a": {"b": 1, "c": ["x", "y"]},
        "d": None,
    }
    for text in ("a: &anchor 1\n", "a: {b: 1}\n", "a:\n  b: 1\n c: 2\n", "a: 1\na: 2\n"):
        with pytest.raises(ValueError):
            parse_yaml_subset(text)


# -- the compose file ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    parsed: dict[str, Any] = parse_yaml_subset((DEPLOY / "compose.yaml").read_text())
    return parsed


def _interpolate(value: str) -> str:
    """Compose's ${VAR:?message} with a stand-in value."""
    return re.sub(r"\$\{(\w+)(:?[?-][^}]*)?\}", lambda m: f"stand-in-{m[1].lower()}", value)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    return {k: _interpolate(str(v)) for k, v in (service.get("environment") or {}).items()}


def test_the_clinic_has_a_broker_a_database_and_two_workers(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"mosquitto", "postgres", *WORKERS, *DASHBOARDS, "proxy"}
    assert services["mosquitto"]["image"].startswith("eclipse-mosquitto:2")
    assert services["postgres"]["image"].startswith("postgres:")
    assert set(compose["volumes"]) == {"mosquitto-data", "postgres-data"}


@pytest.mark.parametrize("name", WORKERS)
def test_each_worker_runs_the_clinic_command_with_real_settings(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    # The image's entrypoint is `glucohub` (Dockerfile): the command is its arguments.
    args = build_parser().parse_args(service["command"])
    assert args.func is cmd_clinic
    config_in_container = Path(args.config)
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_mode = volume.split(":")
        mounts[target] = source
    source = DEPLOY / mounts[str(config_in_container)]
    environment = _environment(service)
    assert all("__" in k for k in environment if k.startswith(ENV_PREFIX)), environment
    settings = load_settings(source, environment)  # unknown keys and bad values raise
    clinic = settings.clinic
    assert clinic.client_id == name  # a fixed id each, never shared
    assert urlsplit(clinic.mqtt_url).hostname == "mosquitto"
    database = urlsplit(clinic.url)
    assert database.hostname == "postgres"
    postgres = compose["services"]["postgres"]["environment"]
    assert (database.username, database.path) == (
        postgres["POSTGRES_USER"],
        "/" + postgres["POSTGRES_DB"],
    )
    assert clinic.username == "clinic-worker"  # the account the ACL lets read
    assert clinic.metrics_port != 0
    assert f":{clinic.metrics_port}/metrics" in " ".join(service["healthcheck"]["test"])
    assert set(service["depends_on"]) == {"postgres", "mosquitto"}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> the repository path (relative to deploy/clinic) mounted there."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


@pytest.mark.parametrize("name", DASHBOARDS)
def test_each_dashboard_process_serves_the_archive_over_tls(
    compose: dict[str, Any], name: str
) -> None:
    service = compose["services"][name]
    args = build_parser().parse_args(service["command"])
    assert args.func is cmd_dashboard
    mounts = _mounts(service)
    settings = load_settings(DEPLOY / mounts[str(args.config)], _environment(service))
    database = urlsplit(clinic_database(settings))
    assert (database.hostname, database.path) == ("postgres", "/clinic")
    # `glucohub users add` run in the container acts on the same database's accounts.
    assert settings.storage.url == clinic_database(settings)
    dashboard = settings.dashboard
    for path in (dashboard.tls_cert, dashboard.tls_key):
        directory = str(Path(path).parent)
        assert (DEPLOY / mounts[directory]).is_dir(), path
    assert f"https://127.0.0.1:{dashboard.port}/healthz" in " ".join(service["healthcheck"]["test"])
    assert set(service["depends_on"]) == {"postgres"}


def test_the_proxy_spreads_over_every_dashboard_process(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    caddyfile = (DEPLOY / _mounts(proxy)["/etc/caddy/Caddyfile"]).read_text()
    upstreams = set(re.findall(r"https://([\w-]+):(\d+)", caddyfile))
    ports = set()
    for name in DASHBOARDS:
        service = compose["services"][name]
        config = _mounts(service)[build_parser().parse_args(service["command"]).config.as_posix()]
        ports.add(str(load_settings(DEPLOY / config, _environment(service)).dashboard.port))
    assert upstreams == {(name, port) for name in DASHBOARDS for port in ports}
    assert set(proxy["depends_on"]) == set(DASHBOARDS)
    # The certificates it serves are the directory the dashboards mount.
    assert (
        _mounts(proxy)["/certs"]
        == _mounts(compose["services"]["dashboard-1"])["/etc/glucohub/certs"]
    )


def test_the_files_the_compose_file_mounts_are_in_the_repository(compose: dict[str, Any]) -> None:
    made_by_the_admin = {"./mosquitto/passwords"}  # secrets: mosquitto_passwd, never in git
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./") and source not in made_by_the_admin:
                assert (DEPLOY / source).exists(), f"{source} is mounted but missing"


def test_the_broker_config_names_the_files_it_is_given(compose: dict[str, Any]) -> None:
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    mounted = {v.split(":")[1] for v in compose["services"]["mosquitto"]["volumes"]}
    for directive in ("password_file", "acl_file", "certfile", "keyfile"):
        [path] = re.findall(rf"^{directive} (\S+)$", conf, re.M)
        assert any(path == m or path.startswith(m + "/") for m in mounted), (directive, path)
    assert re.search(r"^allow_anonymous false$", conf, re.M)
    assert re.search(r"^max_queued_messages [1-9]\d{5,}$", conf, re.M)


# -- the ACL in a real broker ----------------------------------------------------------------


def _mosquitto_passwd(path: Path, users: dict[str, str]) -> None:
    for user, password in users.items():
        flags = ["-b"] if path.exists() else ["-c", "-b"]
        subprocess.run(
            ["mosquitto_passwd", *flags, str(path), user, password],
            check=True,
            capture_output=True,
        )


@pytest.fixture
def clinic_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwords = tmp_path / "passwords"
    _mosquitto_passwd(passwords, {"clinic-worker": "w-pass", "hub-a": "a-pass"})
    # The deploy config's own anonymity line; its paths are the container's, so the
    # password file is made here and the ACL is the deploy file itself.
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    [anonymous] = re.findall(r"^allow_anonymous \w+$", conf, re.M)
    extra = f"{anonymous}\npassword_file {passwords}\nacl_file {DEPLOY / 'mosquitto' / 'acl'}\n"
    broker = Mosquitto(tmp_path / "broker", extra_config=extra)
    # The test broker's config says allow_anonymous true first; Mosquitto takes the last.
    with broker:
        yield broker


def _client(user: str, password: str) -> paho.Client:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{user}", protocol=paho.MQTTv5)
    client.username_pw_set(user, password)
    return client


@pytest.mark.slow
def test_the_acl_keeps_each_hub_to_its_own_topics(clinic_broker: Mosquitto) -> None:
    received: list[str] = []
    subscribed = threading.Event()
    worker = _client("clinic-worker", "w-pass")

    def on_connect(client: paho.Client, *_: Any) -> None:
        client.subscribe([(topic, 1) for topic in shared_hub_subscriptions("g")])

    worker.on_connect = on_connect
    worker.on_subscribe = lambda *_: subscribed.set()
    worker.on_message = lambda _c, _u, message: received.append(message.topic)
    worker.connect("127.0.0.1", clinic_broker.port)
    worker.loop_start()
    hub = _client("hub-a", "a-pass")
    hub.connect("127.0.0.1", clinic_broker.port)
    hub.loop_start()
    try:
        assert subscribed.wait(10)
        for topic in (batches_topic("hub-b"), batches_topic("hub-a"), checkpoints_topic("hub-a")):
            hub.publish(topic, b"{}", qos=1).wait_for_publish(10)
        deadline = threading.Event()
        for _ in range(50):
            if len(received) >= 2:
                break
            deadline.wait(0.1)
        deadline.wait(0.5)  # anything else would have arrived by now
    finally:
        for client in (hub, worker):
            client.disconnect()
            client.loop_stop()
    # hub-a's own items reach the workers' shared subscription; its write to hub-b's topic
    # is dropped by the broker
    assert sorted(received) == sorted([batches_topic("hub-a"), checkpoints_topic("hub-a")])


@pytest.mark.slow
def test_the_broker_refuses_a_client_without_an_account(clinic_broker: Mosquitto) -> None:
    result: list[Any] = []
    done = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="anon", protocol=paho.MQTTv5)

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        result.append(reason)
        done.set()

    client.on_connect = on_connect
    client.connect("127.0.0.1", clinic_broker.port)
    client.loop_start()
    try:
        assert done.wait(10)
    finally:
        client.disconnect()
        client.loop_stop()
    assert result[0].is_failure
