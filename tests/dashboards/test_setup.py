"""First-run setup on a real hub (run_hub, its dashboard) with Bluetooth through the BlueZ mock
on a private D-Bus: what a patient sees at each step, and that setup is gone afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from contextlib import closing
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from dashboards import accounts as accounts_module
from gateway.model import Patient
from gateway.store import Store
from tests.dashboards.setup_hub import PASSWORD, first_run_hub, setup_client
from tests.device_adapters.ble import test_bleak_bluez
from tests.device_adapters.ble.test_bleak_bluez import (
    CGM,
    METER,
    NOW,
    BusFactory,
    cgm,
    cgm_readings,
    meter,
    mock_of,
    one_adapter,
)

bluez = test_bleak_bluez.bluez  # the BlueZ mock fixture

SETUP_ROUTES = [
    ("GET", "/setup"),
    ("POST", "/setup/code"),
    ("POST", "/setup/patient"),
    ("POST", "/setup/clinic"),
    ("POST", "/setup/scan"),
    ("POST", "/setup/pair"),
    ("POST", "/setup/phone"),
    ("POST", "/setup/finish"),
]


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts_module, "SCRYPT_N", 2**10)


async def test_the_code_is_printed_and_a_wrong_one_gets_nowhere(tmp_path: Path) -> None:
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        assert hub.code, f"no setup code in the log: {hub.log}"
        assert any(f"{hub.url}/setup" in line for line in hub.log), hub.log
        await client.get()
        assert client.status == 200 and 'name="code"' in client.html
        await client.post(
            "/setup/code", code="AAAA-BBBB" if hub.code != "AAAA-BBBB" else "CCCC-DDDD"
        )
        assert client.status == 403
        assert "That setup code is not right." in client.html
        assert 'name="name"' not in client.html, "no step is shown"
        # Without the code's session the steps refuse and send back to the code page.
        await client.post("/setup/patient", name="Mallory", timezone="UTC", unit="mg/dL")
        assert client.status == 200 and 'name="code"' in client.html
        with closing(Store(hub.data_dir)) as store:
            assert store.list_patients() == []


async def test_guessing_slows_down(tmp_path: Path) -> None:
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        wrong = "2222-2222" if hub.code != "2222-2222" else "3333-3333"
        for _ in range(3):
            await client.post("/setup/code", code=wrong)
            assert client.status == 403
        await client.post("/setup/code", code=hub.code)  # right, but too soon after 3 wrong
        assert client.status == 429
        assert "Too many wrong codes. Wait" in client.html
        await asyncio.sleep(2.1)
        await client.post("/setup/code", code=hub.code.lower().replace("-", " "))
        assert client.status == 200 and 'name="timezone"' in client.html


async def test_no_setup_route_once_a_patient_exists(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    data_dir.mkdir()
    with closing(Store(data_dir)) as store:
        store.add_patient(Patient(patient_id="ann", display_name="Ann Secret", timezone="UTC"))
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        assert hub.code == "", "no code is printed when a patient exists"
        for method, path in SETUP_ROUTES:
            async with client.session.request(method, hub.url + path, data={}) as response:
                body = await response.text()
                assert response.status == 404, (method, path)
                assert "Ann" not in body and "ann" not in body.lower().split("<title>")[0]


async def _to_devices(client: object, code: str, unit: str = "mmol/L") -> None:
    from tests.dashboards.setup_hub import SetupClient

    assert isinstance(client, SetupClient)
    await client.get()
    await client.post("/setup/code", code=code)
    assert "Step 1 of 3" in client.html
    await client.post(
        "/setup/patient",
        name="Ann Example",
        timezone="Europe/London",
        unit=unit,
        username="ann",
        password=PASSWORD,
    )
    assert "Step 2 of 3" in client.html, client.html
    await client.post("/setup/clinic", skip="1")
    assert "Step 3 of 3" in client.html


@pytest.mark.slow
async def test_a_device_that_refuses_pairing_is_explained(
    bluez: BusFactory, tmp_path: Path
) -> None:
    await asyncio.to_thread(mock_of, bluez, one_adapter(meter(refuse_pairing=True)))
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        assert "Pair Contour glucose meter" in client.html
        await client.post("/setup/pair", address=METER)
        assert "The device refused to pair." in client.html
        assert "pairing mode" in client.html and "passkey" in client.html
        assert "Traceback" not in client.html and "org.bluez" not in client.html
        with closing(Store(hub.data_dir)) as store:
            assert store.list_devices() == [], "a refused device is not registered"


@pytest.mark.slow
async def test_link_lost_during_first_download_is_explained_and_try_again_works(
    bluez: BusFactory, tmp_path: Path
) -> None:
    mock = await asyncio.to_thread(mock_of, bluez, one_adapter(meter(drop_after_records=2)))
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        await client.post("/setup/pair", address=METER)
        assert "Contour glucose meter is paired." in client.html
        assert "The connection to your device was lost before all its readings arrived" in (
            client.html
        )
        assert "it works" not in client.html
        assert "Try again with Contour glucose meter" in client.html
        await client.post("/setup/pair", address=METER)  # "Try again"
        assert "— it works." in client.html, client.html
        assert "Try again" not in client.html
        seen = await mock.peripheral_state(METER)
        assert seen["records_sent"] == 3, "the retry resumed: no record sent twice"


@pytest.mark.slow
async def test_no_bluetooth_adapter_is_explained(bluez: BusFactory, tmp_path: Path) -> None:
    await asyncio.to_thread(mock_of, bluez, {"adapters": [], "devices": []})
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        assert "The hub cannot use Bluetooth" in client.html
        assert "Traceback" not in client.html


def test_codes_are_unambiguous_one_time_and_kept_only_as_a_hash() -> None:
    from dashboards.setup import CODE_ALPHABET, FirstRun
    from gateway.clock import SystemClock

    first_run = FirstRun(backend=None, clock=SystemClock())  # type: ignore[arg-type]
    old = first_run.new_code()
    assert len(old) == 8 and set(old) <= set("ABCDEFGHJKMNPQRSTUVWXYZ23456789")
    assert not set(CODE_ALPHABET) & set("01OIL")
    new = first_run.new_code()
    assert old not in repr(first_run) and new not in repr(first_run)
    if old != new:
        assert first_run.try_code(old) is None, "a replaced code stops working"
    assert first_run.try_code(new.lower()) is not None
    first_run.finish()
    assert first_run.try_code(new) is None, "the code ends with setup"


async def test_a_restart_before_setup_prints_a_new_code_and_the_old_one_fails(
    tmp_path: Path,
) -> None:
    async with first_run_hub(tmp_path / "hub") as hub:
        first = hub.code
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        assert hub.code and hub.code != first
        await client.post("/setup/code", code=first)
        assert client.status == 403
        await client.post("/setup/code", code=hub.code)
        assert "Step 1 of 3" in client.html


async def test_bluetooth_switched_off_in_the_settings_is_explained(tmp_path: Path) -> None:
    async with (
        first_run_hub(tmp_path / "hub", ble=False) as hub,
        setup_client(hub.url) as client,
    ):
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        assert "Bluetooth devices are switched off in this hub" in client.html
        await client.post("/setup/finish")
        assert "Your hub is ready" in client.html


@pytest.mark.slow
async def test_a_meter_showing_a_passkey_pairs_with_the_number_typed(
    bluez: BusFactory, tmp_path: Path
) -> None:
    mock = await asyncio.to_thread(mock_of, bluez, one_adapter(meter(passkey=482916)))
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        await client.post("/setup/pair", address=METER)
        assert "Type the number on your device" in client.html
        assert "Your Contour glucose meter shows a number" in client.html
        await client.post("/setup/passkey", passkey="48a916")
        assert "up to six digits" in client.html, "a typo is caught before the device sees it"
        await client.post("/setup/passkey", passkey="482 916")
        assert "— it works." in client.html, client.html
        seen = await mock.peripheral_state(METER)
        assert seen["passkeys_entered"] == [482916] and seen["bonded"]


@pytest.mark.slow
async def test_a_wrong_passkey_is_explained_and_nothing_is_registered(
    bluez: BusFactory, tmp_path: Path
) -> None:
    mock = await asyncio.to_thread(mock_of, bluez, one_adapter(meter(passkey=482916)))
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        await client.post("/setup/scan")
        await client.post("/setup/pair", address=METER)
        await client.post("/setup/passkey", passkey="111111")
        assert "The device refused to pair." in client.html
        assert "check that it was typed exactly" in client.html
        assert "Pair Contour glucose meter" in client.html, "it can be tried again"
        seen = await mock.peripheral_state(METER)
        assert seen["passkeys_entered"] == [111111] and not seen["bonded"]
        with closing(Store(hub.data_dir)) as store:
            assert store.list_devices() == []


async def test_a_second_visitor_without_the_code_learns_nothing_of_the_setup(
    tmp_path: Path,
) -> None:
    """A neighbour on the same network opens /setup while the patient is half-way through: the
    patient's name, user name and forms stay behind the code, whatever they post."""
    async with (
        first_run_hub(tmp_path / "hub") as hub,
        setup_client(hub.url) as patient,
        setup_client(hub.url) as neighbour,
    ):
        await _to_devices(patient, hub.code)
        token = patient.html.split('name="setup_token" value="')[1].split('"')[0]
        for method, path in SETUP_ROUTES:
            data = {"setup_token": token, "code": "", "address": METER, "passkey": "1"}
            async with neighbour.session.request(method, hub.url + path, data=data) as response:
                body = await response.text()
            assert response.status in (200, 403), (method, path, response.status)
            for secret in ("Ann", "ann", "Europe/London", token, METER):
                assert secret not in body, (method, path, secret)
        await patient.get()
        assert "Step 3 of 3" in patient.html, "the patient's session is untouched"


@pytest.mark.slow
async def test_a_cgm_reports_its_newest_reading_in_the_unit_chosen(
    bluez: BusFactory, tmp_path: Path
) -> None:
    readings = cgm_readings(4)  # every 5 min up to now: the newest 100 + 3*4 = 112 mg/dL
    await asyncio.to_thread(mock_of, bluez, one_adapter(cgm(name="Acme CGM", readings=readings)))
    async with first_run_hub(tmp_path / "hub") as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code, unit="mg/dL")
        await client.post("/setup/scan")
        assert "Pair Acme CGM glucose sensor" in client.html
        await client.post("/setup/pair", address=CGM)
        local = NOW.astimezone(ZoneInfo("Europe/London"))
        assert f"Your sensor sent 112 mg/dL at {local:%H:%M} — it works." in client.html, (
            client.html
        )
        await client.post("/setup/finish")
        assert "Your hub is ready" in client.html


async def test_a_phone_app_gets_the_hub_address_and_a_secret_that_uploads(tmp_path: Path) -> None:
    async with first_run_hub(tmp_path / "hub", ble=False) as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code)
        assert 'id="setup-phone"' in client.html
        await client.post("/setup/phone")
        assert client.status == 200 and "Add a phone app" in client.html
        secret = re.search(r'id="setup-secret">([^<]+)<', client.html)
        assert secret is not None
        host = hub.url.split("://", 1)[1]
        # xDrip+ takes the secret in its base URL; Juggluco the site URL and the secret.
        assert f'id="setup-xdrip-url">http://{secret.group(1)}@{host}/api/v1/<' in client.html
        assert f'id="setup-nightscout-url">{hub.url}<' in client.html
        assert "<svg" in client.html and "QR code of the address" in client.html
        now_ms = int(time.time() * 1000) - 60_000
        entry = {"type": "sgv", "sgv": 112, "date": now_ms, "direction": "Flat"}
        api_secret = hashlib.sha1(secret.group(1).encode()).hexdigest()
        async with client.session.post(
            f"{hub.url}/api/v1/entries", json=[entry], headers={"api-secret": api_secret}
        ) as response:
            assert response.status == 200, await response.text()
        with closing(Store(hub.data_dir, read_only=True)) as store:
            stored = [r.value for r in store.readings(patient_id="ann-example")]
        assert stored == [112.0]
        # Another secret is not this one: a guess is refused.
        async with client.session.post(
            f"{hub.url}/api/v1/entries",
            json=[{**entry, "date": now_ms + 1}],
            headers={"api-secret": hashlib.sha1(b"guess").hexdigest()},
        ) as response:
            assert response.status == 401


async def test_a_hub_restarted_in_the_middle_of_setup_resumes_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        await _to_devices(client, hub.code, unit="mg/dL")  # steps 1 and 2 done, no device yet
        first_code = hub.code
    # A power cut before "Finish setup": the page is back with a new code, at step 2, for Ann.
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        assert hub.code and hub.code != first_code
        await client.post("/setup/code", code=first_code)
        assert client.status == 403
        await client.post("/setup/code", code=hub.code)
        assert "Step 2 of 3" in client.html, client.html
        await client.post("/setup/clinic", skip="1")
        assert "Step 3 of 3" in client.html
        await client.post("/setup/finish")
        assert "Sign in as <strong>ann</strong>" in client.html
    with closing(Store(data_dir)) as store:
        assert [p.patient_id for p in store.list_patients()] == ["ann-example"]
    # Finished: a restart serves no setup at all.
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        assert hub.code == ""
        await client.get()
        assert client.status == 404


async def test_a_restart_between_patient_and_account_asks_only_for_the_account(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "hub"
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        await client.get()
        await client.post("/setup/code", code=hub.code)
        # The patient is registered, but the user name is refused: no account yet.
        await client.post(
            "/setup/patient", name="Ann Example", timezone="Europe/London", unit="mmol/L",
            username="ann example!", password=PASSWORD,
        )  # fmt: skip
        assert client.status == 400 and "Step 1 of 3" in client.html
    async with first_run_hub(data_dir) as hub, setup_client(hub.url) as client:
        await client.post("/setup/code", code=hub.code)
        assert "Step 1 of 3" in client.html
        assert 'value="Ann Example"' in client.html and "readonly" in client.html
        await client.post(
            "/setup/patient", name="Ann Example", timezone="Europe/London", unit="mmol/L",
            username="ann", password=PASSWORD,
        )  # fmt: skip
        assert "Step 2 of 3" in client.html


async def test_the_clinic_step_enrols_the_hub_and_it_forwards_without_a_restart(
    tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.settings import ENROLMENT_FILE
    from gateway.storage.postgres_clinic import ClinicArchive
    from glucohub.cli import main
    from tests.clinic.test_enrolment import TOKEN_LINE, InProcess
    from tests.support.mosquitto import Mosquitto, free_port

    broker = Mosquitto(tmp_path / "broker")
    clinic = tmp_path / "clinic.toml"
    clinic.write_text(
        f'[clinic]\nurl = "{postgres_url}"\n[enrolment]\nport = {free_port()}\n'
        f'broker_url = "{broker.url}"\nclinic_name = "Riverside diabetes clinic"\n'
    )
    endpoint = InProcess(clinic)
    try:
        assert main(["hubs", "token", "--config", str(clinic)]) == 0
        [token] = TOKEN_LINE.findall(capsys.readouterr().out)
        data_dir = tmp_path / "hub"
        with broker:
            async with (
                first_run_hub(data_dir, hub_id="home-setup-1") as hub,
                setup_client(hub.url) as client,
            ):
                await client.get()
                await client.post("/setup/code", code=hub.code)
                await client.post(
                    "/setup/patient", name="Ann Example", timezone="Europe/London",
                    unit="mmol/L", username="ann", password=PASSWORD,
                )  # fmt: skip
                assert "Step 2 of 3" in client.html
                # Not a link from a clinic: said in words, nothing spent.
                await client.post("/setup/clinic", link="https://clinic.example/v1/enrol#hello")
                assert client.status == 400 and "not an enrolment token" in client.html
                assert "Step 2 of 3" in client.html
                # The link as a patient pastes it: broken across two lines.
                link = f"{endpoint.url}#{token[:20]}\n{token[20:]}"
                await client.post("/setup/clinic", link=link)
                assert "Step 3 of 3" in client.html, client.html
                assert "Connected to Riverside diabetes clinic." in client.html
                written = data_dir / ENROLMENT_FILE
                assert written.stat().st_mode & 0o777 == 0o600
                assert broker.url in written.read_text()
                # Forwarding starts now, not at the next restart.
                deadline = time.monotonic() + 15
                while "upstream" not in hub.running.hub.status_probes or (
                    hub.running.hub.status_probes["upstream"]()["state"] != "connected"
                ):
                    assert time.monotonic() < deadline, hub.running.hub.health()
                    await asyncio.sleep(0.1)
    finally:
        endpoint.stop()
    archive = ClinicArchive(postgres_url)
    try:
        assert [h.hub_id for h in archive.hubs()] == ["home-setup-1"]
    finally:
        archive.close()
