"""Bounded fuzz of every parser and decoder (a CI run: about a minute, not hours).

Each target gets random inputs and mutations of valid encodings (bits flipped, bytes or
characters inserted, replaced, deleted, duplicated, the tail cut off) and must return a value
or raise its documented error family: `MalformedPayload` (BLE), `PayloadRejected` (MQTT),
`LedgerError` (ledger), `ConfigError` (settings). Anything else is a bug; hypothesis prints the
smallest input that shows it and a `@reproduce_failure` blob to replay it.

`_batch_seeds` is the one place that builds valid batches (formats 1 and 2), a bundle, proof
files and a batch view for the ledger targets.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_adapters.ble import blood_pressure, cgm, glucose, heart_rate, thermometer, weight_scale
from device_adapters.ble.codec import Reader
from device_adapters.ble.errors import MalformedPayload, UnknownCharacteristic
from device_adapters.ble.mapping import (
    Who,
    map_blood_pressure,
    map_cgm,
    map_glucose,
    map_heart_rate,
    map_temperature,
    map_weight,
)
from device_adapters.ble.registry import PARSERS, decode
from device_adapters.ble.uuids import normalize_uuid
from device_adapters.mqtt.errors import PayloadRejected
from device_adapters.mqtt.payload import decode_readings
from gateway.clinic.enrolment import EnrolmentRefused, parse_grant, parse_request, refusal_line
from gateway.errors import ConfigError
from gateway.settings import load_settings
from ledger.batch import open_batch, seal_batch, seal_records
from ledger.bundle import bundle_lines, verify_bundle
from ledger.checkpoint import Checkpoint, open_checkpoint, parse_checkpoint, sign_checkpoint
from ledger.cosignature import (
    CosignatureVerifier,
    WitnessSigner,
    cosign,
    parse_cosignature_line,
    verify_cosignature,
)
from ledger.errors import LedgerError
from ledger.jcs import canonicalize
from ledger.jws import compact_header, sign_compact, verify_compact
from ledger.keys import jwk_public_key, public_jwk
from ledger.note import NoteSigner, NoteVerifier, open_note, parse_signature_line, sign_note
from ledger.proof import check_inclusion_bundle, make_inclusion_bundle
from ledger.records import (
    batch_view_json,
    disclose,
    open_batch_view,
    read_batch_view,
    record_leaf_hashes,
)
from ledger.rfc6962 import inclusion_proof_from_hashes, root_from_hashes
from ledger.tiles import entry_bundle, entry_bundle_path, parse_entry_bundle, parse_tile_path
from ledger.tiles import tile_path as make_tile_path

DATA = Path(__file__).parent / "data"

FUZZ = settings(
    max_examples=300,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
BIG = settings(FUZZ, max_examples=600)


# -- mutations -------------------------------------------------------------------------------

_BYTE_OPS = st.tuples(
    st.sampled_from(["flip", "insert", "delete", "replace", "truncate", "duplicate"]),
    st.integers(0, 1 << 16),
    st.integers(0, 255),
)


def _mutate_bytes(seed: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(seed)
    for op, where, value in ops:
        i = where % (len(data) + 1)
        if op == "insert":
            data.insert(i, value)
        elif op == "truncate":
            del data[i:]
        elif op == "duplicate":
            data[i:i] = data[i : i + 1 + value % 16]
        elif data:
            j = where % len(data)
            if op == "flip":
                data[j] ^= 1 << (value % 8)
            elif op == "delete":
                del data[j]
            else:
                data[j] = value
    return bytes(data)


def mutated_bytes(seeds: list[bytes], max_random: int = 64) -> st.SearchStrategy[bytes]:
    mutations = st.builds(
        _mutate_bytes, st.sampled_from(seeds), st.lists(_BYTE_OPS, min_size=1, max_size=6)
    )
    return st.one_of(st.binary(max_size=max_random), st.sampled_from(seeds), mutations, mutations)


# Characters that matter to the text formats, plus a lone surrogate (JSON's "\ud800" decodes
# to one) and controls; drawn twice as often as any other character.
_SPECIAL_CHARS = st.sampled_from(list('\n\r +=-0\u2014\u00e9\ud800\x00"\\'))
_CHARS = st.one_of(_SPECIAL_CHARS, _SPECIAL_CHARS, st.characters())
_TEXT_OPS = st.tuples(
    st.sampled_from(["insert", "delete", "replace", "truncate", "duplicate", "swap_lines"]),
    st.integers(0, 1 << 16),
    _CHARS,
)


def _mutate_text(seed: str, ops: list[tuple[str, int, str]]) -> str:
    text = seed
    for op, where, char in ops:
        i = where % (len(text) + 1)
        if op == "insert":
            text = text[:i] + char + text[i:]
        elif op == "truncate":
            text = text[:i]
        elif op == "duplicate":
            text = text[:i] + text[i : i + 1 + where % 40] + text[i:]
        elif op == "swap_lines":
            lines = text.split("\n")
            a, b = where % len(lines), (where // 7) % len(lines)
            lines[a], lines[b] = lines[b], lines[a]
            text = "\n".join(lines)
        elif text:
            j = where % len(text)
            text = text[:j] + ("" if op == "delete" else char) + text[j + 1 :]
    return text


def mutated_text(seeds: list[str]) -> st.SearchStrategy[str]:
    ops = st.lists(_TEXT_OPS, min_size=1, max_size=6)
    mutations = st.builds(_mutate_text, st.sampled_from(seeds), ops)
    # One line mutated, the others kept: gets past the checks of the lines around it.
    in_one_line = st.builds(_mutate_line, st.sampled_from(seeds), st.integers(0, 100), ops)
    return st.one_of(st.text(max_size=80), st.sampled_from(seeds), mutations, in_one_line)


def _mutate_line(seed: str, which: int, ops: list[tuple[str, int, str]]) -> str:
    lines = seed.split("\n")
    which %= len(lines)
    lines[which] = _mutate_text(lines[which], ops)
    return "\n".join(lines)


_NASTY_JSON = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            -1,
            0,
            2**53 + 1,
            2**63,
            -(2**63) - 1,
            10**400,
            1e308,
            -0.0,
            "",
            "\ud800",
            "x" * 300,
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            [],
            {},
            [[[[[]]]]],
        ]
    ),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def _mutate_json(seed: Any, path_choices: list[int], value: Any) -> Any:
    """Replace one value somewhere in a JSON document by `value`."""
    if not path_choices or not isinstance(seed, dict | list) or not seed:
        return value
    if isinstance(seed, dict):
        key = sorted(seed)[path_choices[0] % len(seed)]
        return {**seed, key: _mutate_json(seed[key], path_choices[1:], value)}
    index = path_choices[0] % len(seed)
    return [*seed[:index], _mutate_json(seed[index], path_choices[1:], value), *seed[index + 1 :]]


def mutated_json(seeds: list[Any]) -> st.SearchStrategy[str]:
    """Documents with one value replaced by a nasty one, serialised."""
    return st.builds(
        lambda doc, path, value: json.dumps(_mutate_json(doc, path, value)),
        st.sampled_from(seeds),
        st.lists(st.integers(0, 1000), max_size=4),
        _NASTY_JSON,
    )


def expect(
    errors: type[Exception] | tuple[type[Exception], ...], call: Callable[[], object]
) -> None:
    """The contract under test: a value, or an error of the documented family."""
    with contextlib.suppress(errors):
        call()


# -- BLE GATT parsers and the mapping to readings ---------------------------------------------

WHO = Who(patient_id="p1", device_id="ble-1")
NOW = datetime(2024, 3, 15, 12, 0, tzinfo=UTC)
ZONES: list[tzinfo] = [UTC, timezone(timedelta(hours=-12)), ZoneInfo("Pacific/Kiritimati")]


@cache
def _gatt_seeds() -> list[tuple[str, bytes]]:
    vectors = json.loads((DATA / "ble" / "gatt_vectors.json").read_text())["vectors"]
    return [(v["uuid"], bytes.fromhex(v["hex"])) for v in vectors]


def _gatt_inputs() -> st.SearchStrategy[tuple[str, bytes]]:
    seeds = _gatt_seeds()
    uuids = sorted({uuid for uuid, _ in seeds} | set(PARSERS))
    return st.one_of(
        st.tuples(st.sampled_from(uuids), st.binary(max_size=48)),
        st.sampled_from(seeds).flatmap(
            lambda seed: st.tuples(st.just(seed[0]), mutated_bytes([seed[1]]))
        ),
    )


@FUZZ
@given(item=_gatt_inputs())
def test_every_gatt_parser(item: tuple[str, bytes]) -> None:
    uuid, data = item
    expect(MalformedPayload, lambda: decode(uuid, data))


def _parse_and_map(uuid: str, data: bytes, tz: tzinfo, start: datetime) -> None:
    """Parse with the profile's own parser and map what it accepts to readings."""
    char = _char(uuid)
    if char == "2A18":
        map_glucose(glucose.parse_glucose_measurement(data), WHO, tz=tz)
    elif char == "2AA7":
        for record in cgm.parse_cgm_measurements(data):
            map_cgm(record, WHO, session_start=start)
    elif char == "2AAA":
        value = cgm.parse_cgm_session_start_time(data).to_utc()
        if value is not None:
            map_cgm(
                cgm.CgmMeasurement(glucose_mg_dl=100.0, time_offset_min=0xFFFF),
                WHO,
                session_start=value,
            )
    elif char == "2A37":
        map_heart_rate(heart_rate.parse_heart_rate(data), WHO, now=NOW)
    elif char == "2A35":
        map_blood_pressure(blood_pressure.parse_blood_pressure(data), WHO, now=NOW, tz=tz)
    elif char == "2A1C":
        map_temperature(thermometer.parse_temperature(data), WHO, now=NOW, tz=tz)
    elif char == "2A9D":
        map_weight(weight_scale.parse_weight(data), WHO, now=NOW, tz=tz)
    else:
        decode(uuid, data)


def _char(uuid: str) -> str:
    full = normalize_uuid(uuid) or ""
    return full[4:8].upper()


@FUZZ
@given(
    item=_gatt_inputs(),
    tz=st.sampled_from(ZONES),
    start=st.sampled_from(
        [NOW, datetime(9999, 12, 31, 22, tzinfo=UTC), datetime(1, 1, 1, tzinfo=UTC)]
    ),
)
def test_every_gatt_value_parses_and_maps_or_is_the_devices_error(
    item: tuple[str, bytes], tz: tzinfo, start: datetime
) -> None:
    uuid, data = item
    expect(MalformedPayload, lambda: _parse_and_map(uuid, data, tz, start))


@FUZZ
@given(data=st.binary(max_size=40), crc=st.sampled_from([None, True, False]))
def test_cgm_parsers_under_every_crc_policy(data: bytes, crc: bool | None) -> None:
    for parse in (
        cgm.parse_cgm_measurements,
        cgm.parse_cgm_status,
        cgm.parse_cgm_session_start_time,
        cgm.parse_cgm_session_run_time,
        cgm.parse_socp,
    ):
        expect(MalformedPayload, lambda parse=parse: parse(data, crc_required=crc))  # type: ignore[misc]


@FUZZ
@given(data=st.binary(max_size=12), uuid=st.text(max_size=40))
def test_codec_fields_and_unknown_characteristics(data: bytes, uuid: str) -> None:
    def fields() -> None:
        r = Reader("test", data)
        r.sfloat("sfloat")
        r.float32("float")
        r.date_time("date time")
        r.end()

    expect(MalformedPayload, fields)
    expect((UnknownCharacteristic, MalformedPayload), lambda: decode(uuid, data))


# -- MQTT payload decoder ----------------------------------------------------------------------

TOPIC = "glucohub/v1/p1/cgm-1/readings"
RECEIVED = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@cache
def _mqtt_seeds() -> list[str]:
    return [p.read_text() for p in sorted((DATA / "mqtt").glob("good_*.json"))]


@BIG
@given(
    payload=st.one_of(
        mutated_text(_mqtt_seeds()).map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated_bytes([s.encode() for s in _mqtt_seeds()]),
        mutated_json([json.loads(s) for s in _mqtt_seeds()]).map(
            lambda t: t.encode("utf-8", "surrogatepass")
        ),
    ),
    topic=st.one_of(st.just(TOPIC), mutated_text([TOPIC])),
)
def test_mqtt_payload_decoder(payload: bytes, topic: str) -> None:
    expect(PayloadRejected, lambda: decode_readings(topic, payload, received_at=RECEIVED))


# -- ledger: notes, checkpoints, cosignatures, JWS, tiles --------------------------------------

LOG_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
WITNESS_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
BATCH_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
LOG = NoteSigner("glucohub-local", LOG_KEY)
WITNESS = WitnessSigner("witness.example", WITNESS_KEY)
CHECKPOINT = Checkpoint(origin="glucohub-local", size=3, root_hash=bytes(range(32)))


@cache
def _note_vectors() -> dict[str, Any]:
    return json.loads((DATA / "ledger" / "signed_note_vectors.json").read_text())  # type: ignore[no-any-return]


@cache
def _note_seeds() -> list[str]:
    peter = _note_vectors()["peter"]
    return [
        sign_checkpoint(CHECKPOINT, LOG),
        sign_note("hello\nworld\n", [LOG, NoteSigner("other", WITNESS_KEY)]),
        peter["note"],
    ]


@cache
def _vkey_seeds() -> list[str]:
    return [LOG.verifier_key(), WITNESS.verifier_key(), _note_vectors()["peter"]["verifier_key"]]


@BIG
@given(
    note=st.one_of(mutated_text(_note_seeds()), mutated_bytes([n.encode() for n in _note_seeds()]))
)
def test_signed_notes_and_checkpoints(note: str | bytes) -> None:
    verifier = LOG.verifier()
    expect(LedgerError, lambda: open_note(note, verifier))
    expect(LedgerError, lambda: open_checkpoint(note, verifier, origin="glucohub-local"))
    if isinstance(note, str):
        expect(LedgerError, lambda: _parse_checkpoint_and_cosignature(note))
        for line in note.splitlines(keepends=True):
            expect(LedgerError, lambda line=line: parse_signature_line(line))  # type: ignore[misc]


def _parse_checkpoint_and_cosignature(body: str) -> None:
    """A parsed checkpoint is usable: a witness's cosignature on it can be checked."""
    checkpoint = parse_checkpoint(body)
    verify_cosignature(checkpoint, cosign(CHECKPOINT, WITNESS, 1), WITNESS.verifier())


@FUZZ
@given(vkey=mutated_text(_vkey_seeds()))
def test_verifier_keys(vkey: str) -> None:
    expect(LedgerError, lambda: NoteVerifier.parse(vkey))
    expect(LedgerError, lambda: CosignatureVerifier.parse(vkey))


@FUZZ
@given(line=mutated_text([cosign(CHECKPOINT, WITNESS, 1_700_000_000)]))
def test_cosignature_lines(line: str) -> None:
    expect(LedgerError, lambda: parse_cosignature_line(line))
    expect(LedgerError, lambda: verify_cosignature(CHECKPOINT, line, WITNESS.verifier()))


@cache
def _jws_seeds() -> list[bytes]:
    return [
        sign_compact(b'{"a":1}', LOG_KEY, "k1"),
        sign_compact(b"", LOG_KEY, None),
    ]


@BIG
@given(
    token=st.one_of(
        mutated_bytes(_jws_seeds(), max_random=200),
        mutated_text([t.decode() for t in _jws_seeds()]),
    )
)
def test_jws_compact(token: bytes | str) -> None:
    key = LOG_KEY.public_key()
    expect(LedgerError, lambda: verify_compact(token, key))
    expect(LedgerError, lambda: compact_header(token))


@FUZZ
@given(
    path=mutated_text(
        [make_tile_path(0, 1234067), make_tile_path(2, 5, 13), entry_bundle_path(7, 255)]
    ),
    bundle=mutated_bytes([entry_bundle([b"a", b"bc", b""])]),
)
def test_tile_paths_and_entry_bundles(path: str, bundle: bytes) -> None:
    expect(LedgerError, lambda: parse_tile_path(path))
    expect(LedgerError, lambda: parse_entry_bundle(bundle))


@FUZZ
@given(jwk=mutated_json([public_jwk(BATCH_KEY.public_key(), kid="b1")]))
def test_batch_jwk(jwk: str) -> None:
    value = json.loads(jwk)
    if isinstance(value, dict):
        expect(LedgerError, lambda: jwk_public_key(value))


# -- ledger: batches, bundles, proofs (formats under change: keep this part small) ---------------

BATCH_JWK = public_jwk(BATCH_KEY.public_key(), kid="b1")


@cache
def _batch_seeds() -> dict[str, Any]:
    """Valid examples of the three formats: two sealed batches, a bundle, a proof file."""
    reading = {"patient_id": "p1", "device_id": "cgm-1", "kind": "cgm_glucose", "value": 101.5}
    first = seal_batch(
        hub_id="glucohub-local",
        batch_seq=0,
        start="2024-05-01T10:00:00.000Z",
        end="2024-05-01T10:05:00.000Z",
        readings=[reading],
        prev_jws=None,
        signing_key=BATCH_KEY,
        kid="b1",
        nonce=bytes(32),
    )
    second = seal_batch(
        hub_id="glucohub-local",
        batch_seq=1,
        start="2024-05-01T10:05:00.000Z",
        end="2024-05-01T10:10:00.000Z",
        readings=[reading, {**reading, "value": 99}],
        prev_jws=first.jws,
        signing_key=BATCH_KEY,
        kid="b1",
        nonce=bytes(range(32)),
    )
    # Format 2: the batch signs a root over salted records; p1's record is disclosed alone.
    records = [canonicalize(reading), canonicalize({**reading, "patient_id": "p2"})]
    seed = bytes(range(32, 64))
    third = seal_records(
        hub_id="glucohub-local",
        batch_seq=2,
        start="2024-05-01T10:10:00.000Z",
        end="2024-05-01T10:15:00.000Z",
        record_leaf_hashes=record_leaf_hashes(seed, records),
        prev_jws=second.jws,
        signing_key=BATCH_KEY,
        kid="b1",
        nonce=bytes(range(1, 33)),
    )
    whole = disclose(seed, records, range(2), with_paths=False)
    mine = disclose(seed, records, [0])
    leaves = [first.leaf_hash, second.leaf_hash, third.leaf_hash]
    note = sign_checkpoint(
        Checkpoint(origin="glucohub-local", size=3, root_hash=root_from_hashes(leaves)), LOG
    )
    lines = list(
        bundle_lines(
            log_vkey=LOG.verifier_key(),
            batch_jwk=BATCH_JWK,
            jws_list=[first.jws, second.jws, (third.jws, whole)],
            checkpoint_note=note,
        )
    )
    proofs = [
        make_inclusion_bundle(second.jws, 1, 3, inclusion_proof_from_hashes(leaves, 1), note),
        make_inclusion_bundle(third.jws, 2, 3, inclusion_proof_from_hashes(leaves, 2), note, mine),
    ]
    return {
        "jws": [first.jws, second.jws, third.jws],
        "bundle": "".join(lines),
        "proof": proofs,
        "view": batch_view_json(2, third.jws, mine),
        "whole_view": batch_view_json(2, third.jws, whole),
    }


@FUZZ
@given(data=st.data())
def test_open_batch(data: st.DataObject) -> None:
    token = data.draw(mutated_bytes(_batch_seeds()["jws"], max_random=200))
    expect(LedgerError, lambda: open_batch(token, BATCH_KEY.public_key()))


@FUZZ
@given(data=st.data())
def test_verify_bundle(data: st.DataObject) -> None:
    seed = _batch_seeds()["bundle"]
    text = data.draw(
        st.one_of(
            mutated_text([seed]),
            mutated_json([json.loads(line) for line in seed.splitlines()]).map(
                lambda line: seed.replace(seed.splitlines()[0], line, 1)
            ),
        )
    )
    lines = text.splitlines(keepends=True)
    expect(
        LedgerError,
        lambda: verify_bundle(
            lines,
            log_vkey=LOG.verifier_key(),
            batch_jwk=BATCH_JWK,
            witness_vkeys=[WITNESS.verifier_key()],
        ),
    )


@FUZZ
@given(data=st.data())
def test_check_inclusion_bundle(data: st.DataObject) -> None:
    seeds = _batch_seeds()["proof"]
    text = data.draw(
        st.one_of(mutated_text(seeds), mutated_json([json.loads(seed) for seed in seeds]))
    )
    expect(
        LedgerError,
        lambda: check_inclusion_bundle(text, LOG.verifier_key(), batch_jwk=BATCH_JWK),
    )


@FUZZ
@given(data=st.data())
def test_open_batch_view(data: st.DataObject) -> None:
    seed = _batch_seeds()["view"]
    text = data.draw(st.one_of(mutated_text([seed]), mutated_json([json.loads(seed)])))
    expect(LedgerError, lambda: open_batch_view(text, BATCH_KEY.public_key()))


@FUZZ
@given(data=st.data())
def test_read_batch_view_finds_what_open_batch_view_finds(data: st.DataObject) -> None:
    # The archive's one-pass reading of a whole view accepts and refuses as the general one.
    seeds = _batch_seeds()
    views = [seeds["whole_view"], seeds["view"]]
    text = data.draw(st.one_of(mutated_text(views), mutated_json([json.loads(v) for v in views])))
    key = BATCH_KEY.public_key()
    try:
        opened = read_batch_view(text, key)
    except LedgerError as exc:
        with pytest.raises(LedgerError) as general:
            open_batch_view(text, key)
        assert str(general.value) == str(exc)
        return
    _payload, shown = open_batch_view(text, key)
    assert opened.canonical == [canonicalize(d.record) for d in shown]


# -- settings (TOML) ---------------------------------------------------------------------------

TOML_SEED = (Path(__file__).parent.parent / "deploy" / "glucohub.example.toml").read_bytes()


@FUZZ
@given(
    toml=st.one_of(
        mutated_bytes([TOML_SEED], max_random=200),
        mutated_text([TOML_SEED.decode()]).map(lambda t: t.encode("utf-8", "surrogatepass")),
    )
)
def test_settings_files(toml: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-glucohub.toml"
    path.write_bytes(toml)
    expect(ConfigError, lambda: load_settings(path, {}))


# -- enrolment: the clinic reads a hub's request, the hub reads the clinic's answer ----------


def _enrolment_request_seed() -> dict[str, Any]:
    return {
        "token": "ghe1_" + "A" * 43,
        "hub_id": "home-1",
        "batch_jwk": public_jwk(BATCH_KEY.public_key(), kid="b1"),
        "log_key": "glucohub.local/home-1+00000000+AQ==",
    }


_GRANT_SEED = {
    "clinic_name": "C",
    "hub_id": "home-1",
    "broker_url": "mqtts://c:8883",
    "topic_prefix": "glucohub/v1/hubs/home-1",
    "username": "home-1",
    "password": "p",
}


@FUZZ
@given(
    request=st.one_of(
        mutated_json([_enrolment_request_seed()]).map(str.encode),
        mutated_bytes([json.dumps(_enrolment_request_seed()).encode()]),
    ),
    grant=st.one_of(
        mutated_json([_GRANT_SEED]).map(lambda t: t.encode("utf-8", "surrogatepass")),
        mutated_bytes([json.dumps(_GRANT_SEED).encode()]),
    ),
)
def test_enrolment_requests_and_grants(request: bytes, grant: bytes) -> None:
    expect(EnrolmentRefused, lambda: parse_request(request))
    expect(ValueError, lambda: parse_grant(grant))
    expect(ValueError, lambda: refusal_line(grant, 400))
