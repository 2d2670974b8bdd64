import stat
import tomllib
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gateway.errors import ConfigError
from gateway.settings import (
    ENROLMENT_FILE,
    DashboardSettings,
    Settings,
    load_settings,
    toml_string,
    write_enrolled_upstream,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "glucohub.toml"
    path.write_text(text)
    return path


def test_every_key_is_optional() -> None:
    assert load_settings(None, {}) == Settings()


def test_file_values_are_read(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[storage]\ndata_dir = "/srv/hub"\n[dashboard]\nport = 9000\n'
        "[ledger]\nbatch_max_readings = 50\nbatch_max_seconds = 2.5\n"
        '[mqtt]\nurl = "mqtt://broker:1883"\ntopics = ["a/#", "b/+"]\n',
    )
    s = load_settings(path, {})
    assert s.storage.data_dir == Path("/srv/hub")
    assert s.dashboard.port == 9000
    assert s.ledger.batch_max_readings == 50
    assert s.ledger.batch_max_seconds == 2.5
    assert s.mqtt.topics == ("a/#", "b/+")


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[dashboard]\nport = 9000\n")
    s = load_settings(
        path, {"GLUCOHUB_DASHBOARD__PORT": "9100", "GLUCOHUB_DASHBOARD__ENABLED": "false"}
    )
    assert s.dashboard.port == 9100
    assert s.dashboard.enabled is False


def test_unrelated_environment_is_ignored() -> None:
    assert load_settings(None, {"GLUCOHUB": "x", "HOME": "/root"}) == Settings()


@pytest.mark.parametrize(
    ("text", "env", "key"),
    [
        ("[dashboard]\nprot = 1\n", {}, "dashboard.prot"),
        ("[dashbord]\nport = 1\n", {}, "dashbord"),
        ('[dashboard]\nport = "eighty"\n', {}, "dashboard.port"),
        ("[dashboard]\nport = 70000\n", {}, "dashboard.port"),
        ("[ledger]\nbatch_max_readings = 0\n", {}, "ledger.batch_max_readings"),
        ('[mqtt]\nurl = "http://x"\n', {}, "mqtt.url"),
        ("", {"GLUCOHUB_STORAGE__COMMIT_MAX_READINGS": "many"}, "storage.commit_max_readings"),
        ("[alerts]\nlow_mg_dl = 50.0\n", {}, "alerts"),
        ('[dashboard]\npublic_url = "clinic.example"\n', {}, "dashboard.public_url"),
        ('[dashboard]\npublic_url = "https://clinic.example/ward"\n', {}, "dashboard.public_url"),
        ('[dashboard]\npublic_url = "https://clinic.example:x"\n', {}, "dashboard.public_url"),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), env)
    assert info.value.key == key
    assert repr(key) in str(info.value)


@pytest.mark.parametrize(
    ("public_url", "origin"),
    [
        ("", ""),
        ("https://clinic.example", "https://clinic.example"),
        ("https://Clinic.Example:443/", "https://clinic.example"),
        ("https://clinic.example:8443", "https://clinic.example:8443"),
        ("http://10.0.0.7:80", "http://10.0.0.7"),
        ("https://[::1]:9443", "https://[::1]:9443"),
    ],
)
def test_the_public_url_is_the_origin_a_browser_sends(public_url: str, origin: str) -> None:
    # The WebSocket's Origin check compares strings: RFC 6454 §6.1 serialisation, the
    # scheme's default port left out, the host in lower case.
    assert DashboardSettings(public_url=public_url).public_origin() == origin


def test_broken_toml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[dashboard\n"), {})


def test_config_file_that_is_not_utf8_is_reported(tmp_path: Path) -> None:
    # tomllib decodes before it parses; found by tests/test_fuzz_parsers.py.
    path = tmp_path / "glucohub.toml"
    path.write_bytes(b'[hub]\nhub_id = "caf\xe9"\n')  # Latin-1, not UTF-8
    with pytest.raises(ConfigError, match="not UTF-8") as info:
        load_settings(path, {})
    assert info.value.key == "--config"


def test_secrets_stay_out_of_repr() -> None:
    s = load_settings(None, {"GLUCOHUB_MQTT__PASSWORD": "hunter2"})
    assert s.mqtt.password == "hunter2"
    assert "hunter2" not in repr(s)


def test_the_predicted_low_operating_point_reaches_the_alert_engine() -> None:
    from gateway.alerting import thresholds_from

    settings = load_settings(
        None,
        {
            "GLUCOHUB_ALERTS__PREDICTED_LOW_HORIZON_MIN": "30",
            "GLUCOHUB_ALERTS__PREDICTED_LOW_PERSISTENCE": "1",
            "GLUCOHUB_ALERTS__PREDICTED_LOW_MIN_FALL_MG_DL_MIN": "0.45",
        },
    )
    th = thresholds_from(settings.alerts, settings.ble)
    assert (
        th.predicted_low_horizon_min,
        th.predicted_low_persistence,
        th.predicted_low_min_fall_mg_dl_min,
    ) == (30.0, 1, 0.45)
    default = thresholds_from(load_settings(None, {}).alerts, settings.ble)
    assert (default.predicted_low_horizon_min, default.predicted_low_persistence) == (35.0, 2)


def test_storage_url_takes_postgresql_only_and_hides_its_password() -> None:
    settings = load_settings(
        None, {"GLUCOHUB_STORAGE__URL": "postgresql://hub:s3cret-pw@db.example:5432/glucohub"}
    )
    assert settings.storage.url.startswith("postgresql://")
    assert "s3cret-pw" not in repr(settings)
    with pytest.raises(ConfigError, match=r"storage\.url.*mysql") as caught:
        load_settings(None, {"GLUCOHUB_STORAGE__URL": "mysql://hub:s3cret-pw@db/glucohub"})
    assert "s3cret-pw" not in str(caught.value)


# -- the enrolment file: the [upstream] a clinic gave this hub (`glucohub enrol`) ----------------


def test_the_enrolled_upstream_overrides_the_file_and_the_environment_overrides_both(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    path = write(
        tmp_path,
        f'[storage]\ndata_dir = "{data}"\n[upstream]\nurl = ""\nusername = "old"\n'
        'client_id = "mine"\n',
    )
    written = write_enrolled_upstream(
        data, {"url": "mqtts://clinic.example:8883", "username": "home-1", "password": "p"}
    )
    assert written == data / ENROLMENT_FILE
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    s = load_settings(path, {})
    assert (s.upstream.url, s.upstream.username, s.upstream.password) == (
        "mqtts://clinic.example:8883",
        "home-1",
        "p",
    )
    assert s.upstream.client_id == "mine"  # what the clinic did not say stays the file's
    s = load_settings(path, {"GLUCOHUB_UPSTREAM__USERNAME": "ops"})
    assert s.upstream.username == "ops"
    # --data-dir elsewhere: that directory's enrolment (none) counts, not this one's
    assert load_settings(path, {}, data_dir=tmp_path).upstream.url == ""


def test_an_enrolment_file_holds_only_upstream(tmp_path: Path) -> None:
    (tmp_path / ENROLMENT_FILE).write_text("[dashboard]\nport = 1\n")
    with pytest.raises(ConfigError, match=r"may hold only an \[upstream\] table"):
        load_settings(None, {}, data_dir=tmp_path)
    with pytest.raises(ConfigError, match=r"upstream\.max_inflight"):
        write_enrolled_upstream(tmp_path, {"max_inflight": "5"})


@given(st.text())
def test_any_text_survives_a_toml_round_trip(text: str) -> None:
    assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in text))  # not UTF-8 encodable
    assert tomllib.loads(f"key = {toml_string(text)}\n") == {"key": text}
