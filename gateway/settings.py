"""One frozen `Settings`, built once from a TOML file plus environment overrides.

Every key is optional. Environment variables `GLUCOHUB_<SECTION>__<KEY>` override the
file (e.g. `GLUCOHUB_DASHBOARD__PORT=9000`). Unknown keys and bad values are refused
with a `ConfigError` naming the key. No other module reads `os.environ`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gateway.errors import ConfigError, UnknownUnit
from gateway.topics import READINGS_SUBSCRIPTION
from gateway.units import glucose_unit

ENV_PREFIX = "GLUCOHUB_"


@dataclass(frozen=True, slots=True, kw_only=True)
class HubSettings:
    hub_id: str = "glucohub-local"  # names the ledger origin and upstream topics
    log_level: str = "INFO"
    # The wall clock moving this much more or less than the monotonic clock is a jump:
    # logged and recorded in the ledger.
    clock_jump_threshold_s: float = 5.0
    # Empty: log to standard error (the journal under systemd). A path: log there instead,
    # starting a new file past log_file_max_mb and keeping log_file_backups old ones.
    log_file: str = ""
    log_file_max_mb: float = 10.0
    log_file_backups: int = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    data_dir: Path = Path("var/data")  # ledger keys always; the SQLite database when no url
    # Empty: SQLite in data_dir. "postgresql://user@host:5432/db": PostgreSQL (may hold a
    # password, so never shown).
    url: str = field(default="", repr=False)
    commit_max_readings: int = 2000  # readings per SQLite transaction at most
    # Group commit: a transaction takes whatever is queued when the previous one ends; a
    # delay > 0 waits that long for more (fewer, larger commits on a slow SD card).
    commit_max_delay_ms: int = 0
    # Below this much free space in data_dir the hub stops storing (MQTT messages stay with
    # the broker) until space returns, and `glucohub doctor` fails its disk check.
    min_free_mb: int = 256
    # 0: keep every reading. N: remove readings older than N days once the clinic has them
    # (the upstream broker acknowledged their batch); never below pipeline.max_past_age_days,
    # so a replayed old reading is refused as too old rather than stored again.
    retention_days: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineSettings:
    queue_size: int = 10_000  # bound of every inter-stage queue (back-pressure beyond)
    viewer_queue_size: int = 1_000  # per dashboard viewer; oldest dropped beyond
    max_future_skew_s: int = 300  # readings further in the future are impossible
    max_past_age_days: int = 365  # older readings are refused (device clock unset)


@dataclass(frozen=True, slots=True, kw_only=True)
class LedgerSettings:
    batch_max_readings: int = 1000
    batch_max_seconds: float = 10.0
    key_passphrase: str = field(default="", repr=False)
    witness_keys: tuple[str, ...] = ()  # cosignature/v1 verifier keys of trusted witnesses


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardSettings:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8080
    tls_cert: str = ""
    tls_key: str = ""
    # Glucose unit for users who have not chosen one: "mmol/L" (UK, most of Europe) or "mg/dL".
    default_unit: str = "mmol/L"
    # Behind a reverse proxy: the address browsers use (https://clinic.example). Its origin
    # may open the live WebSocket, and https makes the cookies Secure.
    public_url: str = ""

    def public_origin(self) -> str:
        """`public_url` as a browser's Origin header spells it; empty when unset."""
        if not self.public_url:
            return ""
        parts = urlsplit(self.public_url)
        default = 443 if parts.scheme == "https" else 80
        host = (parts.hostname or "").lower()
        if ":" in host:
            host = f"[{host}]"
        port = "" if parts.port in (None, default) else f":{parts.port}"
        return f"{parts.scheme}://{host}{port}"


@dataclass(frozen=True, slots=True, kw_only=True)
class MqttSettings:
    url: str = ""  # mqtt://host:1883 or mqtts://host:8883; empty turns MQTT off
    client_id: str = "glucohub-hub"
    topics: tuple[str, ...] = (READINGS_SUBSCRIPTION,)
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    session_expiry_s: int = 7 * 24 * 3600
    keepalive_s: int = 30
    # Unacknowledged messages the broker may send at once (MQTT 5 Receive Maximum): the
    # window that keeps ingest busy while commits are under way (their payload bytes are
    # bounded separately, at 32 MiB).
    receive_maximum: int = 4000


@dataclass(frozen=True, slots=True, kw_only=True)
class UpstreamSettings:
    url: str = ""  # the clinic broker; empty turns forwarding off
    client_id: str = ""
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    max_inflight: int = 100


@dataclass(frozen=True, slots=True, kw_only=True)
class ClinicSettings:
    """A clinic worker (`glucohub clinic`) and the clinic CLI (`glucohub hubs`)."""

    # The clinic archive; empty: [storage] url (the archive's tables have their own names
    # and migrations, so they may share the hub schema's database).
    url: str = field(default="", repr=False)
    mqtt_url: str = ""  # the broker the hubs forward to
    group: str = "glucohub-clinic"  # the shared subscription group of every worker
    # Each worker has a fixed id and a persistent session: what a dead worker had received
    # but not acknowledged is redelivered when a worker with its id connects again.
    client_id: str = ""
    session_expiry_s: int = 86_400
    receive_maximum: int = 1000
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    metrics_port: int = 0  # Prometheus /metrics of the worker, on every interface; 0: off

    def database_url(self, storage_url: str) -> str:
        return self.url or storage_url


@dataclass(frozen=True, slots=True, kw_only=True)
class EnrolmentSettings:
    """The clinic's enrolment endpoint (`glucohub hubs serve`) and its tokens."""

    host: str = "127.0.0.1"  # behind the trust's reverse proxy; "0.0.0.0" to face hubs
    port: int = 8443
    tls_cert: str = ""  # empty: plain HTTP (a proxy in front terminates TLS)
    tls_key: str = ""
    # Behind a reverse proxy: throttle by the last X-Forwarded-For hop, not the proxy.
    trust_forwarded: bool = False
    # The endpoint's address as hubs reach it, e.g. "https://clinic.example/v1/enrol":
    # `glucohub hubs token` prints it with the token as one link (and a QR code).
    public_url: str = ""
    clinic_name: str = ""  # shown on the hub ("enrolled at ...")
    broker_url: str = ""  # the hubs' [upstream] url, e.g. "mqtts://clinic.example:8883"
    # Give each hub an MQTT password of its own when it enrols (username: its hub id); the
    # broker learns it from `glucohub hubs mosquitto-passwords`.
    mqtt_passwords: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class BleSettings:
    enabled: bool = False
    adapter: str = ""  # e.g. hci0; empty is the system default
    silence_watchdog_s: int = 900


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertSettings:
    urgent_low_mg_dl: float = 54.0  # International Consensus on TIR (Battelino 2019)
    low_mg_dl: float = 70.0
    high_mg_dl: float = 180.0
    urgent_high_mg_dl: float = 250.0
    sustained_high_min: int = 120
    escalation_min: int = 15
    escalation_target: str = ""
    # The predicted-low operating point (README, "How the low-glucose forecast works").
    predicted_low_horizon_min: float = 35.0
    predicted_low_persistence: int = 2
    predicted_low_min_fall_mg_dl_min: float = 0.6


@dataclass(frozen=True, slots=True, kw_only=True)
class DemoSettings:
    patients: int = 3
    history_days: int = 14
    speedup: float = 1.0  # simulated minutes per real minute for live readings
    seed: int = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    hub: HubSettings = HubSettings()
    storage: StorageSettings = StorageSettings()
    pipeline: PipelineSettings = PipelineSettings()
    ledger: LedgerSettings = LedgerSettings()
    dashboard: DashboardSettings = DashboardSettings()
    mqtt: MqttSettings = MqttSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    clinic: ClinicSettings = ClinicSettings()
    enrolment: EnrolmentSettings = EnrolmentSettings()
    ble: BleSettings = BleSettings()
    alerts: AlertSettings = AlertSettings()
    demo: DemoSettings = DemoSettings()

    @property
    def data_dir(self) -> Path:
        return self.storage.data_dir

    def replace(self, section: str, **changes: Any) -> Settings:
        """A copy with some keys of one section changed (used by CLI flags)."""
        current = getattr(self, section)
        return dataclasses.replace(self, **{section: dataclasses.replace(current, **changes)})


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    data_dir: Path | None = None,
) -> Settings:
    """Build `Settings` from an optional TOML file, the data directory's enrolment file
    (`ENROLMENT_FILE`, written by `glucohub enrol`) and environment overrides, in that order
    of precedence (the environment wins). `data_dir` overrides `storage.data_dir`."""
    merged: dict[str, dict[str, Any]] = {}
    if path is not None:
        _merge(merged, _read_toml(path, "--config"))
    env: dict[str, dict[str, Any]] = {}
    for name, text in (environ or {}).items():
        if not name.startswith(ENV_PREFIX) or "__" not in name[len(ENV_PREFIX) :]:
            continue
        section, key = name[len(ENV_PREFIX) :].lower().split("__", 1)
        env.setdefault(section, {})[key] = _EnvText(text)
    if data_dir is not None:
        env.setdefault("storage", {})["data_dir"] = str(data_dir)
    where = env.get("storage", {}).get("data_dir") or merged.get("storage", {}).get("data_dir")
    enrolled = Path(str(where or StorageSettings().data_dir)) / ENROLMENT_FILE
    if enrolled.is_file():
        raw = _read_toml(enrolled, "storage.data_dir")
        if set(raw) - {"upstream"}:
            raise ConfigError("storage.data_dir", f"{enrolled} may hold only an [upstream] table")
        _merge(merged, raw)
    _merge(merged, env)
    return _build(merged)


# Written by `glucohub enrol` into the data directory (0600: it may hold the hub's broker
# password). The hub's config file usually belongs to root and is read-only to the hub
# (deploy/glucohub.service), while the data directory is the hub's own.
ENROLMENT_FILE = "upstream.toml"


def _read_toml(path: Path, key: str) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(key, f"file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(key, f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # tomllib decodes the whole file before parsing
        raise ConfigError(key, f"{path} is not UTF-8 text: {exc.reason}") from None


def _merge(merged: dict[str, dict[str, Any]], raw: Mapping[str, Any]) -> None:
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(section, "must be a [section] table")
        merged.setdefault(section, {}).update(values)


def write_enrolled_upstream(data_dir: Path, upstream: Mapping[str, str]) -> Path:
    """Write the hub's `[upstream]` keys given by its clinic into `data_dir`'s enrolment
    file: 0600 from its first byte, replaced atomically, refused for a key `[upstream]`
    does not have."""
    known = typing.get_type_hints(UpstreamSettings)
    lines = ["# Written by `glucohub enrol`: the clinic this hub forwards to.", "[upstream]"]
    for key, value in upstream.items():
        if known.get(key) is not str:
            raise ConfigError(f"upstream.{key}", "not a text key of [upstream]")
        lines.append(f"{key} = {toml_string(value)}")
    path = data_dir / ENROLMENT_FILE
    tmp = path.with_name(f".{ENROLMENT_FILE}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)
    return path


def toml_string(value: str) -> str:
    """A TOML basic string (TOML 1.0 §String: escape quote, backslash and the control
    characters but tab)."""
    out = []
    for char in value:
        if char in ('"', "\\"):
            out.append("\\" + char)
        elif (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


class _EnvText(str):
    """A value that came from the environment: a string to be coerced to the key's type."""


def _build(merged: dict[str, dict[str, Any]]) -> Settings:
    hints = typing.get_type_hints(Settings)
    sections: dict[str, Any] = {}
    for section, values in merged.items():
        if section not in hints:
            raise ConfigError(section, f"unknown section; known: {', '.join(sorted(hints))}")
        cls = hints[section]
        key_types = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in key_types:
                raise ConfigError(
                    f"{section}.{key}", f"unknown key; known: {', '.join(sorted(key_types))}"
                )
            kwargs[key] = _coerce(f"{section}.{key}", value, key_types[key])
        sections[section] = cls(**kwargs)
    settings = Settings(**sections)
    _check(settings)
    return settings


def _coerce(key: str, value: Any, wanted: Any) -> Any:
    from_env = isinstance(value, _EnvText)
    origin = typing.get_origin(wanted)
    if wanted is bool:
        if isinstance(value, bool):
            return value
        if from_env and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            return value.lower() in ("1", "true", "yes", "on")
        raise ConfigError(key, f"must be true or false, got {value!r}")
    if wanted is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if from_env:
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if wanted is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if from_env:
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(key, f"must be a number, got {value!r}")
    if wanted is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(key, f"must be a string, got {value!r}")
    if wanted is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ConfigError(key, f"must be a non-empty path, got {value!r}")
    if origin is tuple:
        items = value.split(",") if from_env else value
        if isinstance(items, list | tuple) and all(isinstance(i, str) for i in items):
            return tuple(i.strip() for i in items if i.strip())
        raise ConfigError(key, f"must be a list of strings, got {value!r}")
    if isinstance(wanted, types.UnionType):  # pragma: no cover - no such keys yet
        raise ConfigError(key, "unsupported type")
    raise ConfigError(key, f"unsupported type {wanted!r}")  # pragma: no cover


def _check(settings: Settings) -> None:
    """Range checks that a type alone cannot express."""
    url = settings.storage.url
    if url and not url.startswith(("postgresql://", "postgres://")):
        scheme = url.split(":", 1)[0] if ":" in url else "no scheme"
        raise ConfigError(
            "storage.url", f"must be empty (SQLite) or a postgresql:// URL, got {scheme}"
        )
    positive = {
        "storage.commit_max_readings": settings.storage.commit_max_readings,
        "storage.min_free_mb": settings.storage.min_free_mb,
        "hub.clock_jump_threshold_s": settings.hub.clock_jump_threshold_s,
        "hub.log_file_max_mb": settings.hub.log_file_max_mb,
        "pipeline.queue_size": settings.pipeline.queue_size,
        "pipeline.viewer_queue_size": settings.pipeline.viewer_queue_size,
        "ledger.batch_max_readings": settings.ledger.batch_max_readings,
        "ledger.batch_max_seconds": settings.ledger.batch_max_seconds,
        "demo.speedup": settings.demo.speedup,
        "upstream.max_inflight": settings.upstream.max_inflight,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(key, f"must be > 0, got {value}")
    if not 1 <= settings.mqtt.receive_maximum <= 65535:
        raise ConfigError(
            "mqtt.receive_maximum", f"must be 1..65535, got {settings.mqtt.receive_maximum}"
        )
    if not 0 <= settings.dashboard.port <= 65535:
        raise ConfigError("dashboard.port", f"must be 0..65535, got {settings.dashboard.port}")
    retention = settings.storage.retention_days
    if retention and retention < settings.pipeline.max_past_age_days:
        raise ConfigError(
            "storage.retention_days",
            f"must be 0 (keep everything) or >= pipeline.max_past_age_days "
            f"({settings.pipeline.max_past_age_days}), got {retention}",
        )
    if settings.hub.log_file_backups < 0:
        raise ConfigError(
            "hub.log_file_backups", f"must be >= 0, got {settings.hub.log_file_backups}"
        )
    if settings.demo.patients < 0 or settings.demo.history_days < 0:
        raise ConfigError("demo.patients", "patients and history_days must be >= 0")
    clinic_url = settings.clinic.url
    if clinic_url and not clinic_url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("clinic.url", "must be empty ([storage] url) or a postgresql:// URL")
    if not 1 <= settings.clinic.receive_maximum <= 65535:
        raise ConfigError("clinic.receive_maximum", "must be 1..65535")
    if not 0 <= settings.clinic.metrics_port <= 65535:
        raise ConfigError("clinic.metrics_port", "must be 0 (off) or a port 1..65535")
    if settings.clinic.session_expiry_s <= 0:
        raise ConfigError("clinic.session_expiry_s", "must be > 0: a worker's session outlives it")
    for key, url in (
        ("mqtt.url", settings.mqtt.url),
        ("upstream.url", settings.upstream.url),
        ("clinic.mqtt_url", settings.clinic.mqtt_url),
    ):
        if url and not url.startswith(("mqtt://", "mqtts://")):
            raise ConfigError(key, f"must start with mqtt:// or mqtts://, got {url!r}")
    if settings.hub.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("hub.log_level", "must be DEBUG, INFO, WARNING or ERROR")
    a = settings.alerts
    if not a.urgent_low_mg_dl < a.low_mg_dl < a.high_mg_dl < a.urgent_high_mg_dl:
        raise ConfigError("alerts", "thresholds must satisfy urgent_low < low < high < urgent_high")
    try:
        glucose_unit(settings.dashboard.default_unit)
    except UnknownUnit:
        raise ConfigError(
            "dashboard.default_unit",
            f"must be mmol/L or mg/dL, got {settings.dashboard.default_unit!r}",
        ) from None
    public = settings.dashboard.public_url
    if public:
        try:
            parts = urlsplit(public)
            parts.port  # noqa: B018 - raises on a port that is not a number
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.path.strip("/")
            or parts.query
            or parts.fragment
            or parts.username is not None
        ):
            raise ConfigError(
                "dashboard.public_url",
                f"must be the address browsers use, https://host[:port], got {public!r}",
            )
    if bool(settings.dashboard.tls_cert) != bool(settings.dashboard.tls_key):
        raise ConfigError("dashboard.tls_cert", "tls_cert and tls_key go together")
