"""RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes a batch signature covers.

`canonicalize(obj)` returns the canonical UTF-8 of a JSON value made of dict (str keys),
list/tuple, str, int, float, bool and None. Two paths give identical output:

* the fast path lets the stdlib's C encoder (`sort_keys`, no whitespace, `ensure_ascii=False`)
  write the text after a walk that rewrites integral floats as ints. It is taken when every
  number's Python text already equals its ECMAScript text and every key sorts the same by code
  point as by UTF-16 code unit (always true unless a key holds a character above U+FFFF);
* the exact path writes every token itself (ES6 number formatting, UTF-16 key order) and is
  used for everything else, and to locate the fault when the value cannot be canonicalised.

Why the C encoder's strings are already canonical (RFC 8785 §3.2.2.2): with
`ensure_ascii=False` it escapes exactly '"', '\\', the short forms \\b \\t \\n \\f \\r and the
other controls below U+0020 as lowercase \\u00xx, and writes every other character as itself.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import (  # type: ignore[attr-defined]  # C-accelerated when _json is available
    c_make_encoder,
    encode_basestring,
)

from ledger.errors import CanonicalizationError

__all__ = ["canonical_value", "canonicalize", "es6_number"]

# RFC 8785 §3.2.2.3 serialises numbers as IEEE 754 doubles; ints within ±2**53 are exact
# doubles whose ES6 text is their decimal digits.
_MAX_EXACT_INT = 2**53

# Python's repr(float) writes fixed notation for 1e-4 <= |x| < 1e16 and the same shortest
# round-trip digits as ES6 Number.prototype.toString, which uses fixed notation for
# 1e-6 <= |x| < 1e21. So a non-integral float in [1e-4, 2**53) prints identically in both;
# every integral float below 2**53 prints identically as a Python int.
_REPR_FIXED_MIN = 1e-4

# Values the C encoder writes exactly as RFC 8785 does, with no rewriting.
_PASS_THROUGH = frozenset({str, bool, type(None)})

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":")
)


def _encoder() -> Callable[[object], str]:
    """`_ENCODER.encode`, or the C encoder it would build on every call, built once (the
    arguments `JSONEncoder.iterencode` passes it; no circular check: `_prepare` copies the
    value first and would recurse without end on a cycle before it)."""
    if c_make_encoder is None:
        return _ENCODER.encode
    chunks = c_make_encoder(
        None, _ENCODER.default, encode_basestring, None, ":", ",", True, False, False
    )
    return lambda value: "".join(chunks(value, 0))


_encode = _encoder()


class _NeedsExactPath(Exception):
    """Internal: the fast path cannot vouch for this value."""


def canonicalize(obj: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of the JSON value `obj`.

    Raises CanonicalizationError (with a JSONPath-like `path`) for NaN/infinity, an int not
    exactly representable as a double, a non-str key, a lone surrogate or a non-JSON type.
    """
    try:
        prepared = _prepare(obj)
        return _encode(prepared).encode("utf-8")
    except (_NeedsExactPath, UnicodeEncodeError, TypeError):
        # UnicodeEncodeError: a lone surrogate; TypeError: a non-str key. The exact path
        # reports either with its path.
        return "".join(_exact(obj, "$")).encode("utf-8")


def canonical_value(obj: object) -> tuple[bytes, object]:
    """`canonicalize(obj)` and the JSON value those bytes parse back to: equal to their
    `json.loads` in value and in type (ints stay ints, integral floats become ints), object
    members possibly in another order. For a caller that needs both, so nothing is parsed
    twice. Raises as `canonicalize` does."""
    try:
        prepared = _prepare(obj)
        return _encode(prepared).encode("utf-8"), prepared
    except (_NeedsExactPath, UnicodeEncodeError, TypeError):
        text = "".join(_exact(obj, "$")).encode("utf-8")
        return text, json.loads(text)


def _prepare(obj: object) -> object:
    """Copy `obj` with integral floats as ints; raise _NeedsExactPath for anything unusual.

    A non-str key raises TypeError (from str.isascii), which also selects the exact path.
    """
    t = type(obj)
    if t is dict:
        d: dict[str, object] = obj  # type: ignore[assignment]
        if not all(map(str.isascii, d)) and max("".join(d)) > "\uffff":
            raise _NeedsExactPath  # a key above the BMP: code point order != UTF-16 order
        out: dict[str, object] = {}
        for k, v in d.items():
            tv = type(v)
            # The usual members inline (a record's strings and small ints), the rest walked.
            if tv in _PASS_THROUGH or (tv is int and -_MAX_EXACT_INT <= v <= _MAX_EXACT_INT):  # type: ignore[operator]
                out[k] = v
            else:
                out[k] = _prepare(v)
        return out
    if t is float:
        x: float = obj  # type: ignore[assignment]
        if -_MAX_EXACT_INT < x < _MAX_EXACT_INT:  # False for NaN and infinities
            i = int(x)
            if i == x:
                return i  # also maps -0.0 to 0 (RFC 8785 Appendix B)
            if x >= _REPR_FIXED_MIN or x <= -_REPR_FIXED_MIN:
                return x
        raise _NeedsExactPath
    if t is int:
        if -_MAX_EXACT_INT <= obj <= _MAX_EXACT_INT:  # type: ignore[operator]
            return obj
        raise _NeedsExactPath
    if t is list or t is tuple:
        items: list[object] = obj  # type: ignore[assignment]
        return [v if type(v) in _PASS_THROUGH else _prepare(v) for v in items]
    if isinstance(obj, str):  # a StrEnum value: the C encoder writes its str content
        return obj
    raise _NeedsExactPath


def _exact(obj: object, path: str) -> list[str]:
    """Serialise `obj` token by token; every fault raises CanonicalizationError at `path`."""
    out: list[str] = []
    _write(obj, path, out)
    return out


def _write(obj: object, path: str, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, str):
        out.append(_string(obj, path))
    elif isinstance(obj, int):
        out.append(_int_text(int(obj), path))
    elif isinstance(obj, float):
        out.append(es6_number(float(obj), path))
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _write(v, f"{path}[{i}]", out)
        out.append("]")
    elif isinstance(obj, dict):
        items: list[tuple[bytes, str, object]] = []
        for k, v in obj.items():
            if not isinstance(k, str):
                raise CanonicalizationError(path, f"object key {k!r} is not a string")
            items.append((_utf16_sort_key(k, path), k, v))
        # RFC 8785 §3.2.3: members sorted by their names as arrays of UTF-16 code units;
        # big-endian UTF-16 bytes compare in exactly that order.
        items.sort(key=lambda item: item[0])
        out.append("{")
        for n, (_, k, v) in enumerate(items):
            if n:
                out.append(",")
            out.append(_string(k, path))
            out.append(":")
            _write(v, f"{path}.{k}", out)
        out.append("}")
    else:
        raise CanonicalizationError(path, f"{type(obj).__name__} is not a JSON type")


def _utf16_sort_key(key: str, path: str) -> bytes:
    try:
        return key.encode("utf-16-be")
    except UnicodeEncodeError:
        raise CanonicalizationError(path, f"object key {key!r} holds a lone surrogate") from None


def _string(s: str, path: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        # RFC 8785 §3.2.2.2 / I-JSON: strings must be valid Unicode; no lone surrogates.
        raise CanonicalizationError(path, f"string {s!r} holds a lone surrogate") from None
    text: str = encode_basestring(s)
    return text


def _int_text(i: int, path: str) -> str:
    if -_MAX_EXACT_INT <= i <= _MAX_EXACT_INT:
        return str(i)
    # A JSON number is an IEEE 754 double (RFC 8785 §3.2.2.3). A larger int is accepted only
    # when its digits already are the ES6 text of its nearest double (as json.loads gives back
    # for a canonical 3.877921595981806e16): then JavaScript and Python readers of the bytes
    # both get the same number back. 2**53 + 1 or 2**60 would silently change, so they raise.
    try:
        text = es6_number(float(i), path)
    except OverflowError:
        text = ""
    if text != str(i):
        raise CanonicalizationError(
            path, f"integer {i} would not survive as an IEEE 754 double; send it as a string"
        )
    return text


def es6_number(x: float, path: str = "$") -> str:
    """ECMA-262 Number::toString(x) for a finite double (the RFC 8785 §3.2.2.3 algorithm)."""
    if math.isnan(x) or math.isinf(x):
        raise CanonicalizationError(path, f"{x!r} is not a JSON number")
    if x == 0:
        return "0"  # also -0.0
    if x < 0:
        return "-" + es6_number(-x, path)
    # repr gives the shortest digit string that round-trips, as ES6 requires of k.
    mantissa, _, exp_text = repr(x).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    digits = int_part + frac_part
    n = len(int_part) + (int(exp_text) if exp_text else 0)  # x = 0.digits × 10**n
    stripped = digits.lstrip("0")
    n -= len(digits) - len(stripped)
    s = stripped.rstrip("0")
    k = len(s)
    # ECMA-262 §6.1.6.1.20 steps: s × 10**(n-k) = x with k minimal.
    if k <= n <= 21:
        return s + "0" * (n - k)
    if 0 < n <= 21:
        return s[:n] + "." + s[n:]
    if -6 < n <= 0:
        return "0." + "0" * (-n) + s
    e = n - 1
    exponent = f"e+{e}" if e >= 0 else f"e-{-e}"
    if k == 1:
        return s + exponent
    return s[0] + "." + s[1:] + exponent
