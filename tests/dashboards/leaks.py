"""Look for a patient's markers in a served body, including where a plain search cannot see.

A JWS payload is base64url, a proof file carries the JWS as a JSON string, a PDF's page text
is hex strings in a Flate stream, HTML escapes text: a substring search of the raw bytes misses
all of them. `readable_views` turns a body into every text a reader could get from it (the raw
text, HTML-unescaped, JSON strings, each part of every JWS-looking token and every base64 run
of 16+ characters decoded, Flate streams inflated, PDF hex strings decoded, a PDF's text as
pypdf extracts it: embedded fonts write glyph ids, not characters), recursively to a small
depth.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
import zlib
from collections.abc import Iterator

from tests.dashboards.pdftext import pdf_text

# Three base64url parts separated by dots (a compact JWS; the payload may be empty when
# detached). Long enough parts only, so "1.2.3" or a version string is not one.
_JWS = re.compile(rb"[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*\.[A-Za-z0-9_-]{8,}")
# Any base64 or base64url run of 16+ characters (with optional padding).
_B64 = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")
_STREAM = re.compile(rb"stream\r?\n(.*?)\r?\nendstream", re.DOTALL)
# A PDF hex string (ISO 32000 §7.3.4.3), as the report draws its text: <48656C6C6F>.
_PDF_HEX = re.compile(rb"<((?:[0-9A-Fa-f]{2}){4,})>")
_MAX_DEPTH = 3


def _b64decode(token: bytes) -> bytes | None:
    text = token.rstrip(b"=")
    if len(text) % 4 == 1:
        return None
    padded = text + b"=" * (-len(text) % 4)
    altchars = b"-_" if (b"-" in text or b"_" in text) else b"+/"
    try:
        return base64.b64decode(padded, altchars=altchars, validate=True)
    except (binascii.Error, ValueError):
        return None


def _json_strings(text: str) -> Iterator[str]:
    try:
        value = json.loads(text)
    except ValueError:
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def readable_views(body: bytes, depth: int = 0, where: str = "body") -> Iterator[tuple[str, str]]:
    """(where, text) for the body itself and everything decodable inside it."""
    text = body.decode("utf-8", errors="replace")
    yield where, text
    unescaped = html.unescape(text)
    if unescaped != text:
        yield f"{where} (HTML-unescaped)", unescaped
    for value in _json_strings(text):
        yield f"{where} (JSON string)", value
    if body.startswith(b"%PDF-"):
        yield f"{where} (PDF text)", pdf_text(body)
    if depth >= _MAX_DEPTH:
        return
    for match in _STREAM.finditer(body):
        try:
            inflated = zlib.decompress(match.group(1))
        except zlib.error:
            continue
        yield from readable_views(inflated, depth + 1, f"{where} > inflated stream")
    for match in _PDF_HEX.finditer(body):
        text = bytes.fromhex(match.group(1).decode()).decode("cp1252", errors="replace")
        yield f"{where} (PDF hex string)", text
    for match in _JWS.finditer(body):
        for index, part in enumerate(match.group(0).split(b".")):
            decoded = _b64decode(part) if part else None
            if decoded:
                name = ("header", "payload", "signature")[index]
                yield from readable_views(decoded, depth + 1, f"{where} > JWS {name}")
    for match in _B64.finditer(body):
        decoded = _b64decode(match.group(0))
        if decoded:
            yield from readable_views(decoded, depth + 1, f"{where} > base64")


def find_markers(body: bytes, markers: dict[str, str]) -> list[tuple[str, str, str]]:
    """(marker label, marker, where) for each marker found anywhere in `body`."""
    found: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for where, text in readable_views(body):
        for label, marker in markers.items():
            if marker not in seen and marker in text:
                seen.add(marker)
                found.append((label, marker, where))
    return found
