"""RFC 8785 canonical JSON: published vectors, ES6 number formatting, errors, properties."""

from __future__ import annotations

import json
import math
import struct
from enum import StrEnum
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ledger.errors import CanonicalizationError
from ledger.jcs import _exact, canonical_value, canonicalize, es6_number

DATA = Path(__file__).parent.parent / "data" / "ledger" / "jcs"
VECTOR_NAMES = sorted(p.stem for p in (DATA / "output").glob("*.json"))


def _number_vectors() -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / "numbers.txt").read_text(encoding="ascii").splitlines():
        if line and not line.startswith("#"):
            bits, text = line.split()
            rows.append((bits, text))
    return rows


def test_all_published_vectors_are_present() -> None:
    assert VECTOR_NAMES == ["arrays", "french", "structures", "unicode", "values", "weird"]


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_published_vector(name: str) -> None:
    value = json.loads((DATA / "input" / f"{name}.json").read_text(encoding="utf-8"))
    assert canonicalize(value) == (DATA / "output" / f"{name}.json").read_bytes()


def test_simple_string_hex_vector() -> None:
    value = json.loads((DATA / "input" / "simpleString.json").read_text(encoding="utf-8"))
    expected = bytes.fromhex((DATA / "outhex" / "simpleString.txt").read_text().replace(" ", ""))
    assert canonicalize(value) == expected


@pytest.mark.parametrize(("bits", "text"), _number_vectors())
def test_rfc8785_appendix_b_numbers(bits: str, text: str) -> None:
    x = struct.unpack(">d", bytes.fromhex(bits))[0]
    assert es6_number(x) == text
    assert canonicalize(x) == text.encode()
    # Inside an object too, where the fast path handles the number.
    assert canonicalize({"n": x, "m": [x]}) == f'{{"m":[{text}],"n":{text}}}'.encode()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),  # integral: ES6 prints no fraction
        (-0.0, "0"),  # ES6 ToString(-0) is "0"
        (1e21, "1e+21"),  # n = 22 > 21 -> exponent form, e = n - 1 = 21
        (1e20, "100000000000000000000"),  # n = 21 <= 21 -> digits "1" + 20 zeros
        (1e-7, "1e-7"),  # n = -6, not > -6 -> exponent form, e = n - 1 = -7
        (1e-6, "0.000001"),  # n = -5 > -6 -> "0." + 5 zeros + "1"
        (0.00001, "0.00001"),  # Python repr would say 1e-05
        (1.5e-7, "1.5e-7"),  # k = 2 -> "1.5" then "e-7"
        (1e16, "10000000000000000"),  # Python repr would say 1e+16
        (123.25, "123.25"),
        (-2.5e-8, "-2.5e-8"),
        # 2**60 = 1152921504606846976; neighbouring doubles are 256 apart, so the shortest
        # digits that round-trip are 1152921504606847 (off by 24 < 128), padded to n = 19.
        (2.0**60, "1152921504606847000"),
        # An int above 2**53 whose digits already are its double's ES6 text is kept.
        (1152921504606847000, "1152921504606847000"),
        (2**53, "9007199254740992"),
        (-(2**53), "-9007199254740992"),
        (True, "true"),
        (None, "null"),
    ],
)
def test_number_and_literal_formatting(value: object, text: str) -> None:
    assert canonicalize(value) == text.encode()
    assert canonicalize([value]) == f"[{text}]".encode()


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # U+1F602 is the surrogate pair D83D DE02 in UTF-16; D83D < FB33, so the emoji key
    # comes first although its code point is larger (RFC 8785 §3.2.3).
    value = {"\ufb33": 1, "\U0001f602": 2, "a": 3}
    assert canonicalize(value) == '{"a":3,"\U0001f602":2,"\ufb33":1}'.encode()


def test_strings_escape_only_what_rfc8785_requires() -> None:
    value = '"\\\b\f\n\r\t\x00\x1f\x7f/<é€\U0001f602'
    # Short forms for 5 controls, \u00xx lowercase for the other C0 controls; DEL, '/',
    # and non-ASCII stay literal.
    expected = '"\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\x7f/<é€\U0001f602"'.encode()
    assert canonicalize(value) == expected
    assert canonicalize({"k": value}) == b'{"k":' + expected + b"}"


def test_str_enum_values_serialise_as_their_text() -> None:
    class Kind(StrEnum):
        CGM = "cgm_glucose"

    assert canonicalize({"kind": Kind.CGM, "v": 1.0}) == b'{"kind":"cgm_glucose","v":1}'


def test_tuples_are_arrays() -> None:
    assert canonicalize({"a": (1, 2.0, "x")}) == b'{"a":[1,2,"x"]}'


@pytest.mark.parametrize(
    ("value", "path"),
    [
        ({"a": [1, math.nan]}, "$.a[1]"),
        ({"a": math.inf}, "$.a"),
        ({"a": {1: "x"}}, "$.a"),
        ({"a": ["ok", "\ud800"]}, "$.a[1]"),
        ({"\udc00": 1}, "$"),
        ({"a": {1, 2}}, "$.a"),
        ({"a": b"bytes"}, "$.a"),
        # 2**53 + 1 = 9007199254740993 lies between two doubles: not a JSON number.
        ({"a": 2**53 + 1}, "$.a"),
        ({"a": 10**400}, "$.a"),
        # 2**60 is a double, but its ES6 text 1152921504606847000 is another Python int.
        ({"a": 2**60}, "$.a"),
    ],
)
def test_values_without_canonical_form_raise_with_their_path(value: object, path: str) -> None:
    with pytest.raises(CanonicalizationError) as info:
        canonicalize(value)
    assert info.value.path == path


json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_form_is_a_fixed_point(value: object) -> None:
    once = canonicalize(value)
    assert canonicalize(json.loads(once)) == once


@given(json_values)
def test_fast_path_agrees_with_exact_path(value: object) -> None:
    assert canonicalize(value) == "".join(_exact(value, "$")).encode("utf-8")


def _typed(value: object) -> object:
    """`value` with its JSON types spelled out, so that 1, 1.0 and True differ."""
    if isinstance(value, dict):
        return ("object", sorted((k, _typed(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("array", [_typed(v) for v in value])
    return (type(value).__name__, value)


@given(json_values)
@example({"value": 80.0, "seq": -0.0, "status": [2**53, 0.5]})
@example([1e-7, 80.0])
def test_canonical_value_is_what_the_canonical_bytes_parse_to(value: object) -> None:
    text, parsed = canonical_value(value)
    assert text == canonicalize(value)
    assert _typed(parsed) == _typed(json.loads(text))


def _utf16_units(key: str) -> list[int]:
    # UTF-16 by hand (RFC 2781 §2.1): code points above U+FFFF become a surrogate pair.
    units = []
    for ch in key:
        cp = ord(ch)
        if cp > 0xFFFF:
            units += [0xD800 + ((cp - 0x10000) >> 10), 0xDC00 + ((cp - 0x10000) & 0x3FF)]
        else:
            units.append(cp)
    return units


@given(st.dictionaries(st.text(), st.integers(0, 9), max_size=8))
def test_member_order_is_utf16_order(value: dict[str, int]) -> None:
    keys = list(json.loads(canonicalize(value)))
    assert keys == sorted(value, key=_utf16_units)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_es6_number_round_trips_in_the_right_notation(x: float) -> None:
    text = es6_number(x)
    assert float(text) == x
    # ES6 uses plain notation exactly for 1e-6 <= |x| < 1e21 (and for zero).
    plain = x == 0 or 1e-6 <= abs(x) < 1e21
    assert ("e" not in text) == plain
    # No redundant digits: as many significant digits as Python's shortest repr.
    significant = text.lstrip("-").split("e")[0].replace(".", "").strip("0")
    shortest = repr(abs(x)).split("e")[0].replace(".", "").strip("0")
    assert len(significant) == len(shortest) or x == 0


@given(st.integers())
def test_an_int_is_kept_exactly_or_refused(value: int) -> None:
    try:
        text = canonicalize({"i": value})
    except CanonicalizationError as exc:
        assert exc.path == "$.i"
        assert abs(value) > 2**53
    else:
        assert json.loads(text) == {"i": value}
