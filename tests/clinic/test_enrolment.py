"""One-time enrolment tokens end to end: `glucohub hubs token` at the clinic, a real
`glucohub hubs serve` process on a real PostgreSQL, and `glucohub enrol` on a hub; what the
admin and the hub's installer type and see."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import json
import re
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from device_adapters.mqtt.client import MqttConnection, upstream_config
from device_adapters.mqtt.upstream import UpstreamForwarder
from gateway.clinic.enrolment import EnrolmentRefused, EnrolmentRequest, Refused
from gateway.clock import utc_now
from gateway.settings import ENROLMENT_FILE, load_settings
from gateway.storage.postgres_clinic import ClinicArchive
from gateway.storage.postgres_enrolment import ClinicEnrolment
from glucohub.cli import build_parser, cmd_hubs_serve, main
from glucohub.clinic import ClinicWorker, clinic_database
from glucohub.enrolment_http import check_serving, serve_enrolment
from glucohub.simulate import SimulatedHub
from tests.clinic.hubs import make_hub, produce
from tests.clinic.test_archive import _deliver
from tests.clinic.test_deploy import DEPLOY, _environment, parse_yaml_subset
from tests.support.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parents[2]
BROKER = "mqtts://clinic.example:8883"
TOKEN_LINE = re.compile(r"^ghe1_[A-Za-z0-9_-]{43}$", re.M)


class Endpoint:
    """One `glucohub hubs serve` process."""

    def __init__(self, tmp_path: Path, config: Path) -> None:
        self.log = tmp_path / "enrolment.log"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "glucohub", "hubs", "serve", "--config", str(config)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        assert line.startswith("enrolment endpoint on http://127.0.0.1:"), self.log.read_text()
        self.url = line.removeprefix("enrolment endpoint on ")

    def stop(self) -> str:
        """Stop it; everything it logged."""
        self.process.terminate()
        assert self.process.wait(timeout=20) == 0, self.log.read_text()
        assert self.process.stdout is not None
        self.process.stdout.close()
        return self.log.read_text()


@pytest.fixture
def clinic(tmp_path: Path, postgres_url: str) -> Path:
    path = tmp_path / "clinic.toml"
    path.write_text(
        f'[hub]\nlog_level = "INFO"\n[clinic]\nurl = "{postgres_url}"\n'
        f'[enrolment]\nport = {free_port()}\nbroker_url = "{BROKER}"\n'
        'clinic_name = "Riverside diabetes clinic"\n'
    )
    return path


class InProcess:
    """The same server in a thread of the test process (no interpreter to start)."""

    def __init__(self, config: Path) -> None:
        settings = load_settings(config, {})
        database = clinic_database(settings)
        self.url = f"http://127.0.0.1:{settings.enrolment.port}/v1/enrol"
        self._ready = threading.Event()
        self._stop: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.failure: BaseException | None = None

        async def serve() -> None:
            stop = asyncio.Event()
            self._stop = (asyncio.get_running_loop(), stop)
            await serve_enrolment(settings, database, stop=stop)

        def run() -> None:
            try:
                asyncio.run(serve())
            except BaseException as exc:  # reported by stop()
                self.failure = exc

        self._thread = threading.Thread(target=run, name="enrolment-endpoint")
        self._thread.start()
        deadline = time.monotonic() + 20
        while not _listening(settings.enrolment.port):
            assert self._thread.is_alive() and time.monotonic() < deadline, self.failure
            time.sleep(0.05)

    def stop(self) -> None:
        assert self._stop is not None
        loop, event = self._stop
        loop.call_soon_threadsafe(event.set)
        self._thread.join(20)
        assert self.failure is None, self.failure


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def served(tmp_path: Path, clinic: Path) -> Iterator[Endpoint]:
    running = Endpoint(tmp_path, clinic)
    yield running
    if running.process.poll() is None:
        running.stop()


@pytest.fixture
def endpoint(clinic: Path) -> Iterator[InProcess]:
    running = InProcess(clinic)
    yield running
    running.stop()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _token(capsys: pytest.CaptureFixture[str], clinic: Path, *extra: str) -> str:
    code, out, _ = _run(capsys, "hubs", "token", "--config", str(clinic), *extra)
    assert code == 0
    [token] = TOKEN_LINE.findall(out)
    return str(token)


def _hub(tmp_path: Path, hub_id: str) -> tuple[SimulatedHub, Path]:
    """A hub with keys, and its config naming it."""
    hub = make_hub(tmp_path, hub_id)
    config = tmp_path / f"{hub_id}.toml"
    config.write_text(f'[hub]\nhub_id = "{hub_id}"\n[storage]\ndata_dir = "{hub.data_dir}"\n')
    return hub, config


def _enrol(capsys: pytest.CaptureFixture[str], config: Path, *argv: str) -> tuple[int, str, str]:
    return _run(capsys, "enrol", "--config", str(config), *argv)


@pytest.mark.slow
def test_a_token_enrols_a_hub_once_whose_batches_the_clinic_then_accepts(
    tmp_path: Path,
    clinic: Path,
    served: Endpoint,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    endpoint = served  # `glucohub hubs serve`, a process as a trust runs it
    token = _token(capsys, clinic)
    hub, config = _hub(tmp_path, "home-21")
    code, out, err = _enrol(capsys, config, endpoint.url, token)
    assert (code, err) == (0, "")
    assert out.startswith(
        f"hub home-21 enrolled at the clinic (Riverside diabetes clinic): it forwards to {BROKER}"
    )
    # the hub's upstream now points at the clinic's broker, in a file only the hub can read
    written = hub.data_dir / ENROLMENT_FILE
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    settings = load_settings(config, {})
    assert settings.upstream.url == BROKER
    # the clinic knows the hub's keys: its signed batches and checkpoints are stored
    archive = ClinicArchive(postgres_url)
    try:
        outcomes = _deliver(archive, produce(hub, 2))
        assert outcomes == ["stored", "accepted", "stored", "accepted"]
    finally:
        archive.close()
    # the same token again, from another hub: refused, and that hub is not enrolled
    other, other_config = _hub(tmp_path, "home-22")
    code, out, err = _enrol(capsys, other_config, endpoint.url, token)
    assert (code, out) == (2, "")
    assert err == "glucohub: the clinic refused: this enrolment token has already been used\n"
    assert not (other.data_dir / ENROLMENT_FILE).exists()
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(clinic))
    assert out == "home-21\tactive\tbatches 2\tcheckpoint 2\topen alarms 0\n"
    code, out, _ = _run(capsys, "hubs", "tokens", "--config", str(clinic))
    assert re.fullmatch(r"token #1\tused\tany hub\tused by home-21 at [^\t]+\tmade by \S+\n", out)
    # the token never reached the endpoint's log, which says what happened
    logged = endpoint.stop()
    assert token not in logged and token[5:20] not in logged
    assert "hub home-21 enrolled with token #1" in logged
    assert "enrolment refused from 127.0.0.1: used" in logged


def test_the_link_form_carries_the_token_and_a_token_made_for_a_hub_is_only_for_it(
    tmp_path: Path, clinic: Path, endpoint: InProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    with clinic.open("a") as handle:
        handle.write(f'public_url = "{endpoint.url}"\n')
    code, out, _ = _run(
        capsys, "hubs", "token", "--config", str(clinic), "--hub", "home-31", "--qr"
    )
    [link] = re.findall(r"^on the hub: glucohub enrol (\S+)$", out, re.M)
    [token] = TOKEN_LINE.findall(out)
    assert link == f"{endpoint.url}#{token}"
    # and the link as a QR code for the installer's phone or the hub's setup page
    qr = [line for line in out.splitlines()[3:] if line.strip()]
    assert len(qr) >= 10 and all(set(line) <= set(" █▀▄") for line in qr), out
    _, stranger_config = _hub(tmp_path, "home-32")
    code, _, err = _enrol(capsys, stranger_config, link)
    assert code == 2
    assert err == "glucohub: the clinic refused: this enrolment token was made for another hub\n"
    _, config = _hub(tmp_path, "home-31")
    code, out, err = _enrol(capsys, config, link)
    assert (code, err) == (0, "") and "hub home-31 enrolled" in out


def test_expired_revoked_and_unknown_tokens_are_refused_with_their_reason(
    tmp_path: Path,
    clinic: Path,
    endpoint: InProcess,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = ClinicEnrolment(postgres_url, utc_now())
    try:  # made two days ago, valid for a day
        _, expired = store.create_token(None, timedelta(days=1), "test", utc_now() - timedelta(2))
    finally:
        store.close()
    revoked = _token(capsys, clinic, "--expires", "30m")
    outstanding = _token(capsys, clinic, "--hub", "home-41", "--expires", "7d")
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(clinic))
    # outstanding tokens only, by number; never a token's text
    assert re.fullmatch(
        r"token #2\toutstanding\tany hub\texpires [^\t]+\tmade by \S+\n"
        r"token #3\toutstanding\thub home-41\texpires [^\t]+\tmade by \S+\n",
        out,
    )
    assert "ghe1_" not in out
    code, out, _ = _run(capsys, "hubs", "revoke-token", "2", "--config", str(clinic))
    assert (code, out) == (0, "enrolment token #2 revoked\n")
    hub, config = _hub(tmp_path, "home-41")
    unknown = "ghe1_" + "A" * 43
    for token, reason in (
        (expired, "this enrolment token has expired; ask the clinic for a new one"),
        (revoked, "this enrolment token was revoked by the clinic"),
        (unknown, "this enrolment token is not known to the clinic"),
    ):
        code, out, err = _enrol(capsys, config, endpoint.url, token)
        assert (code, out, err) == (2, "", f"glucohub: the clinic refused: {reason}\n")
    assert not (hub.data_dir / ENROLMENT_FILE).exists()
    code, out, _ = _run(capsys, "hubs", "list", "--config", str(clinic))
    assert out.startswith("token #3\toutstanding\thub home-41")  # no hub enrolled
    # the refusals did not use up the hub's own token
    code, _, err = _enrol(capsys, config, endpoint.url, outstanding)
    assert (code, err) == (0, "")
    code, out, err = _run(capsys, "hubs", "revoke-token", "3", "--config", str(clinic))
    assert (code, out, err) == (2, "", "glucohub: enrolment token #3 was used already\n")


def _post(url: str, body: bytes, method: str = "POST") -> tuple[int, dict[str, str] | None]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read()
        try:
            return exc.code, json.loads(text)
        except ValueError:
            return exc.code, None


def test_the_endpoint_serves_only_redemption_and_holds_off_a_guesser(
    tmp_path: Path, clinic: Path, endpoint: InProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    base = endpoint.url.removesuffix("/v1/enrol")
    for path, method in (("/v1/enrol", "GET"), ("/", "GET"), ("/metrics", "GET"), ("/x", "POST")):
        status, _ = _post(base + path, b"{}", method)
        assert status in (404, 405), (path, method, status)
    status, answer = _post(endpoint.url, b"not json")
    assert (status, answer) == (
        400,
        {"error": "malformed", "message": "the request is not an enrolment request: not JSON"},
    )
    status, answer = _post(endpoint.url, b" " * (16 * 1024 + 1))
    assert (status, answer) == (
        400,
        {"error": "malformed", "message": "the request is not an enrolment request: too large"},
    )
    token = _token(capsys, clinic)
    hub, _ = _hub(tmp_path, "home-51")
    _, jwk, vkey = hub.enrolment

    def attempt(text: str) -> tuple[int, dict[str, str] | None]:
        request = EnrolmentRequest(token=text, hub_id="home-51", batch_jwk=jwk, log_key=vkey)
        return _post(endpoint.url, request.to_json())

    # five wrong guesses are answered; then this address waits, even with a good token
    for n in range(5):
        assert attempt("ghe1_" + f"{n}" * 43)[0] == 403
    status, answer = attempt(token)
    assert status == 429 and answer is not None
    assert answer["message"] == "too many failed attempts from this address; try again later"
    _, out, _ = _run(capsys, "hubs", "list", "--config", str(clinic))
    assert out.startswith("token #1\toutstanding")


def _race(postgres_url: str, requests: list[EnrolmentRequest]) -> list[str]:
    """Redeem the requests at once, each on its own connection: the hub id each enrolled,
    or the code of its refusal."""
    stores = [ClinicEnrolment(postgres_url, utc_now()) for _ in requests]
    outcomes = [""] * len(requests)
    start = threading.Barrier(len(requests))

    def redeem(n: int) -> None:
        start.wait()
        try:
            outcomes[n] = stores[n].redeem(requests[n], utc_now()).hub_id
        except EnrolmentRefused as exc:
            outcomes[n] = exc.refused.code

    threads = [threading.Thread(target=redeem, args=(n,)) for n in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    return outcomes


def _request(hub: SimulatedHub, token: str) -> EnrolmentRequest:
    hub_id, jwk, vkey = hub.enrolment
    return EnrolmentRequest(token=token, hub_id=hub_id, batch_jwk=jwk, log_key=vkey)


def _new_token(postgres_url: str) -> str:
    store = ClinicEnrolment(postgres_url, utc_now())
    try:
        return store.create_token(None, timedelta(hours=1), "test", utc_now())[1]
    finally:
        store.close()


def test_one_token_raced_by_two_hubs_enrols_exactly_one(tmp_path: Path, postgres_url: str) -> None:
    token = _new_token(postgres_url)
    hubs = [make_hub(tmp_path, f"race-{n}") for n in range(2)]
    outcomes = _race(postgres_url, [_request(hub, token) for hub in hubs])
    assert sorted(outcomes) in (["race-0", "used"], ["race-1", "used"])
    archive = ClinicArchive(postgres_url)
    try:
        assert [h.hub_id for h in archive.hubs()] == [o for o in outcomes if o != "used"]
    finally:
        archive.close()


def test_two_hubs_of_one_id_racing_with_two_tokens_enrol_one_set_of_keys(
    tmp_path: Path, postgres_url: str
) -> None:
    hubs = [make_hub(tmp_path / str(n), "twin") for n in range(2)]  # one id, two key pairs
    requests = [_request(hub, _new_token(postgres_url)) for hub in hubs]
    outcomes = _race(postgres_url, requests)
    assert sorted(outcomes) == ["keys_differ", "twin"]
    winner = requests[outcomes.index("twin")]
    archive = ClinicArchive(postgres_url)
    try:
        [(jwk,)] = archive.rows("SELECT batch_jwk FROM clinic_hubs WHERE hub_id = 'twin'")
    finally:
        archive.close()
    assert jwk == winner.batch_jwk


def test_a_token_for_any_hub_cannot_take_over_an_enrolled_hub_id(
    tmp_path: Path, postgres_url: str
) -> None:
    store = ClinicEnrolment(postgres_url, utc_now())
    try:
        original = make_hub(tmp_path / "a", "home-61")
        impostor = make_hub(tmp_path / "b", "home-61")  # same id, its own keys
        _, first = store.create_token(None, timedelta(hours=1), "test", utc_now())
        _, second = store.create_token(None, timedelta(hours=1), "test", utc_now())
        for hub, token in ((original, first), (impostor, second)):
            hub_id, jwk, vkey = hub.enrolment
            request = EnrolmentRequest(token=token, hub_id=hub_id, batch_jwk=jwk, log_key=vkey)
            if hub is original:
                store.redeem(request, utc_now())
                continue
            with pytest.raises(EnrolmentRefused) as refused:
                store.redeem(request, utc_now())
            assert refused.value.refused is Refused.KEYS_DIFFER
        # refused as a whole: the second token is still outstanding
        states = [row.state(utc_now()) for row in store.tokens()]
        assert states == ["used", "outstanding"]
    finally:
        store.close()


# -- what the hub's installer sees when it goes wrong ------------------------------------------


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key (a clinic's private CA, in short)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clinic test CA")])
    now = utc_now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "clinic.crt", directory / "clinic.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_over_tls_the_hub_trusts_the_clinic_only_with_its_ca(
    tmp_path: Path, clinic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = _self_signed(tmp_path)
    with clinic.open("a") as handle:
        handle.write(f'tls_cert = "{cert}"\ntls_key = "{key}"\n')
    endpoint = InProcess(clinic)
    try:
        url = endpoint.url.replace("http://", "https://")
        token = _token(capsys, clinic)
        _, config = _hub(tmp_path, "home-71")
        code, out, err = _enrol(capsys, config, url, token)
        assert (code, out) == (2, "")
        assert err.startswith("glucohub: TLS failure talking to the clinic at 127.0.0.1:")
        assert "certificate verify failed" in err and err.count("\n") == 1
        code, out, err = _enrol(capsys, config, url, token, "--ca-file", str(cert))
        assert (code, err) == (0, "") and "hub home-71 enrolled" in out
        assert load_settings(config, {}).upstream.url == BROKER
    finally:
        endpoint.stop()


def test_a_clinic_out_of_reach_or_a_bad_link_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hub, config = _hub(tmp_path, "home-81")
    token = "ghe1_" + "B" * 43
    port = free_port()  # nothing listens there
    cases = {
        (f"http://127.0.0.1:{port}/v1/enrol", token): (
            f"glucohub: cannot reach the clinic at 127.0.0.1:{port}: Connection refused"
        ),
        ("http://clinic.example/v1/enrol", token): (
            "glucohub: the clinic's URL must be https:// (plain http only to this machine):"
            " http://clinic.example/v1/enrol"
        ),
        ("https://clinic.example/v1/enrol",): (
            "glucohub: no token: give it after the URL, or the link ending in #ghe1_…"
        ),
        ("https://clinic.example/v1/enrol", "ghe1_short"): (
            "glucohub: that is not an enrolment token (it starts with ghe1_, 48 characters)"
        ),
        ("clinic.example", token): (
            "glucohub: the clinic's URL must be http:// or https://, got 'clinic.example'"
        ),
    }
    for argv, line in cases.items():
        code, out, err = _enrol(capsys, config, *argv)
        assert (code, out) == (2, ""), argv
        assert err.startswith(line) and err.count("\n") == 1, (argv, err)
    assert not (hub.data_dir / ENROLMENT_FILE).exists()
    # a hub still under the id every hub starts with
    code, out, err = _run(
        capsys, "enrol", "--data-dir", str(hub.data_dir), f"http://127.0.0.1:{port}", token
    )
    assert (code, out) == (2, "")
    assert err == (
        "glucohub: this hub is still called 'glucohub-local': give it a name of its own"
        " (hub.hub_id, the same the clinic knows it by) before enrolling\n"
    )


def test_a_token_for_a_hub_id_no_hub_can_have_is_not_made(
    clinic: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases = {
        "h1:p1": "glucohub: hub_id 'h1:p1' cannot contain ':'; no token made\n",
        "ward/7": "glucohub: hub_id 'ward/7' cannot be an MQTT topic level; no token made\n",
    }
    for hub_id, line in cases.items():
        code, out, err = _run(capsys, "hubs", "token", "--config", str(clinic), "--hub", hub_id)
        assert (code, out, err) == (2, "", line)
    code, out, _ = _run(capsys, "hubs", "tokens", "--config", str(clinic))
    assert (code, out) == (0, "")


def test_a_wrong_path_to_the_clinic_says_it_is_not_the_enrolment_endpoint(
    tmp_path: Path, endpoint: InProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    hub, config = _hub(tmp_path, "home-82")
    token = "ghe1_" + "C" * 43
    base = endpoint.url.removesuffix("/v1/enrol")
    for url in (base, f"{base}/", f"{base}/enrol", f"{base}/v1/enrol/"):
        code, out, err = _enrol(capsys, config, url, token)
        assert (code, out) == (2, ""), url
        assert err == (
            f"glucohub: {url} answered HTTP 404: it is not the clinic's enrolment endpoint"
            " (the link the clinic gave ends in /v1/enrol#ghe1_…)\n"
        )
    assert not (hub.data_dir / ENROLMENT_FILE).exists()


# -- a broker account of its own for each hub ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.broker
def test_a_hub_given_a_broker_account_forwards_through_mosquitto_to_a_worker(
    tmp_path: Path, clinic: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    passwords = tmp_path / "passwords"
    subprocess.run(
        ["mosquitto_passwd", "-c", "-b", str(passwords), "clinic-worker", "w-pass"],
        check=True,
        capture_output=True,
    )
    worker_line = passwords.read_text().strip()
    passwords.chmod(0o640)  # e.g. group-readable by the broker's user: kept so
    inode = passwords.stat().st_ino
    deploy = ROOT / "deploy" / "clinic" / "mosquitto"
    broker = Mosquitto(
        tmp_path / "broker",
        extra_config=(
            f"allow_anonymous false\npassword_file {passwords}\nacl_file {deploy / 'acl'}\n"
        ),
    )
    clinic.write_text(
        f'[clinic]\nurl = "{postgres_url}"\nmqtt_url = "{broker.url}"\n'
        'username = "clinic-worker"\npassword = "w-pass"\ngroup = "enrol"\n'
        f'[enrolment]\nport = {free_port()}\nbroker_url = "{broker.url}"\nmqtt_passwords = true\n'
    )
    endpoint = InProcess(clinic)
    try:
        token = _token(capsys, clinic, "--hub", "home-91")
        hub, config = _hub(tmp_path, "home-91")
        code, out, err = _enrol(capsys, config, endpoint.url, token)
        assert (code, err) == (0, "") and "with its own broker account" in out
    finally:
        endpoint.stop()
    upstream = load_settings(config, {}).upstream
    assert (upstream.url, upstream.username) == (broker.url, "home-91")
    assert len(upstream.password) >= 40
    # the clinic keeps only Mosquitto's hash; the admin merges the hubs' accounts in
    code, out, _ = _run(
        capsys, "hubs", "mosquitto-passwords", "--config", str(clinic), "--into", str(passwords)
    )
    assert out == f"{passwords}: 1 other account(s) kept, 1 hub account(s) written\n"
    lines = passwords.read_text().splitlines()
    assert lines[0] == worker_line and lines[1].startswith("home-91:$7$101$")
    assert upstream.password not in passwords.read_text()
    # the same file (a container's bind mount of it sees the change), its mode kept
    assert (passwords.stat().st_ino, stat.S_IMODE(passwords.stat().st_mode)) == (inode, 0o640)
    produce(hub, 2, sent=False)
    with broker:
        stored = asyncio.run(_forward_to_a_worker(hub, config, clinic, postgres_url))
    assert stored == 2


async def _forward_to_a_worker(
    hub: SimulatedHub, hub_config: Path, clinic: Path, postgres_url: str
) -> int:
    """Run a clinic worker and the hub's forwarder (with its enrolled [upstream]) until the
    clinic holds the hub's batches; how many it holds."""
    hub_settings = load_settings(hub_config, {})
    consuming = _Said("consuming")
    worker = ClinicWorker(load_settings(clinic, {}), "enrol-w1", out=consuming)
    connection = MqttConnection(upstream_config(hub_settings.upstream, hub_id=hub.hub_id))
    forwarder = UpstreamForwarder(connection=connection, outbox=hub)
    hub.attach()
    archive = ClinicArchive(postgres_url)
    try:
        async with asyncio.TaskGroup() as tasks:
            running = [tasks.create_task(worker.run())]
            # subscribed first: the broker keeps nothing for a group with no member yet
            await asyncio.wait_for(consuming.wait(), 30)
            running += [
                tasks.create_task(connection.run()),
                tasks.create_task(forwarder.run()),
            ]
            deadline = time.monotonic() + 30
            # the worker writes to PostgreSQL in its own thread: nothing here to await
            while archive.counts()["batches"] < 2 and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            for task in running:
                task.cancel()
        return archive.counts()["batches"]
    finally:
        archive.close()


class _Said(io.StringIO):
    """A text stream that notes when a word was written to it."""

    def __init__(self, word: str) -> None:
        super().__init__()
        self._word = word
        self._event = asyncio.Event()

    def write(self, text: str) -> int:
        if self._word in text:
            self._event.set()
        return super().write(text)

    async def wait(self) -> None:
        await self._event.wait()


# -- the compose file's enrolment service ---------------------------------------------------


def test_the_compose_file_serves_enrolment_with_real_settings() -> None:
    compose = parse_yaml_subset((DEPLOY / "compose.yaml").read_text())
    service = compose["services"]["enrolment"]
    args = build_parser().parse_args(service["command"])
    assert args.func is cmd_hubs_serve
    mounts = {}
    for volume in service["volumes"]:
        source, target, *_mode = volume.split(":")
        mounts[target] = source
    settings = load_settings(DEPLOY / mounts[str(args.config)], _environment(service))
    check_serving(settings)  # a broker URL for the hubs, a port
    enrolment = settings.enrolment
    assert service["ports"] == [f"{enrolment.port}:{enrolment.port}"]
    assert enrolment.host == "0.0.0.0"
    assert urlsplit(clinic_database(settings)).hostname == "postgres"
    # TLS with the broker's certificate, mounted from where the broker gets it
    assert Path(enrolment.tls_cert).parent == Path(enrolment.tls_key).parent
    assert mounts[str(Path(enrolment.tls_cert).parent)] == "./mosquitto/certs"
    assert urlsplit(enrolment.public_url).port == enrolment.port
    # the hubs' accounts go into the broker's own password file, mounted writable
    passwords = compose["services"]["mosquitto"]["volumes"]
    assert "./mosquitto/passwords:/mosquitto/config/passwords:ro" in passwords
    assert mounts["/etc/glucohub/mosquitto-passwords"] == "./mosquitto/passwords"
    assert enrolment.mqtt_passwords


def test_a_hub_that_never_ran_enrols_with_the_keys_keys_init_made(
    tmp_path: Path,
    clinic: Path,
    endpoint: InProcess,
    postgres_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data_dir = tmp_path / "fresh"
    config = tmp_path / "fresh.toml"
    config.write_text(f'[hub]\nhub_id = "fresh-1"\n[storage]\ndata_dir = "{data_dir}"\n')
    assert _run(capsys, "keys", "init", "--config", str(config))[0] == 0
    assert not (data_dir / "keys" / "log-key.vkey").exists()  # written on first use
    code, out, err = _enrol(capsys, config, endpoint.url, _token(capsys, clinic))
    assert (code, err) == (0, "") and "hub fresh-1 enrolled" in out
    _, shown, _ = _run(capsys, "keys", "show", "--config", str(config))
    # the clinic holds exactly what `glucohub keys show` prints
    archive = ClinicArchive(postgres_url)
    try:
        [(jwk, vkey)] = archive.rows("SELECT batch_jwk, log_key FROM clinic_hubs")
    finally:
        archive.close()
    assert shown == f"log-key: {vkey}\nbatch-key: {jwk}\n"
