"""A tiny vector canvas written out as SVG (for HTML) or as a one-page PDF, stdlib only.

Charts are drawn once onto a `Canvas` (rectangles, lines, polygons, text; y grows downwards,
units are CSS px = PDF pt) and serialised either way, so the HTML and the PDF report show the
same drawing. The PDF writer emits PDF 1.4 with the two standard Helvetica fonts (no font
embedding, text in WinAnsiEncoding) and a Flate-compressed content stream: no dependency.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from html import escape

Point = tuple[float, float]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Op:
    kind: str  # "rect" | "poly" | "line" | "text"
    points: tuple[Point, ...]
    fill: str | None = None
    stroke: str | None = None
    width: float = 1.0
    dash: bool = False
    text: str = ""
    size: float = 10.0
    anchor: str = "start"  # start | middle | end
    bold: bool = False


class Canvas:
    """An ordered list of drawing operations on a `width` x `height` area."""

    def __init__(self, width: float, height: float, *, title: str = "") -> None:
        self.width = width
        self.height = height
        self.title = title
        self.ops: list[_Op] = []

    def rect(
        self,
        x: float,
        y: float,
        w: float,
        h: float,
        *,
        fill: str | None = None,
        stroke: str | None = None,
        width: float = 1.0,
    ) -> None:
        pts = ((x, y), (x + w, y + h))
        self.ops.append(_Op(kind="rect", points=pts, fill=fill, stroke=stroke, width=width))

    def polyline(
        self, points: list[Point], *, stroke: str, width: float = 1.0, dash: bool = False
    ) -> None:
        if len(points) >= 2:
            self.ops.append(
                _Op(kind="line", points=tuple(points), stroke=stroke, width=width, dash=dash)
            )

    def polygon(self, points: list[Point], *, fill: str, stroke: str | None = None) -> None:
        if len(points) >= 3:
            self.ops.append(_Op(kind="poly", points=tuple(points), fill=fill, stroke=stroke))

    def text(
        self,
        x: float,
        y: float,
        text: str,
        *,
        size: float = 10.0,
        anchor: str = "start",
        fill: str = "#222222",
        bold: bool = False,
    ) -> None:
        """`y` is the baseline."""
        self.ops.append(
            _Op(
                kind="text",
                points=((x, y),),
                text=text,
                size=size,
                anchor=anchor,
                fill=fill,
                bold=bold,
            )
        )

    def place(self, other: Canvas, x: float, y: float, scale: float = 1.0) -> None:
        """Copy `other`'s drawing into this canvas at (x, y), scaled."""

        def move(p: Point) -> Point:
            return (x + p[0] * scale, y + p[1] * scale)

        for op in other.ops:
            self.ops.append(
                _Op(
                    kind=op.kind,
                    points=tuple(move(p) for p in op.points),
                    fill=op.fill,
                    stroke=op.stroke,
                    width=op.width * scale,
                    dash=op.dash,
                    text=op.text,
                    size=op.size * scale,
                    anchor=op.anchor,
                    bold=op.bold,
                )
            )

    # ------------------------------------------------------------------ SVG

    def to_svg(self) -> str:
        """A standalone `<svg>` element (no scripts, no external references)."""
        w, h = _num(self.width), _num(self.height)
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" '
            f'width="{w}" height="{h}" role="img" aria-label="{escape(self.title)}" '
            'font-family="Helvetica, Arial, sans-serif">'
        ]
        if self.title:
            parts.append(f"<title>{escape(self.title)}</title>")
        for op in self.ops:
            parts.append(_svg_op(op))
        parts.append("</svg>")
        return "".join(parts)

    # ------------------------------------------------------------------ PDF

    def _pdf_content(self) -> bytes:
        height = self.height
        out: list[str] = []

        def xy(p: Point) -> str:
            return f"{_num(p[0])} {_num(height - p[1])}"

        for op in self.ops:
            if op.kind == "text":
                font = "/F2" if op.bold else "/F1"
                x, y = op.points[0]
                width = _text_width(op.text, op.size)
                if op.anchor == "middle":
                    x -= width / 2
                elif op.anchor == "end":
                    x -= width
                out.append(
                    f"BT {_rgb(op.fill or '#000000')} rg {font} {_num(op.size)} Tf "
                    f"{xy((x, y))} Td <{_winansi(op.text).hex()}> Tj ET"
                )
                continue
            style = []
            if op.fill:
                style.append(f"{_rgb(op.fill)} rg")
            if op.stroke:
                style.append(f"{_rgb(op.stroke)} RG {_num(op.width)} w")
                style.append("[3 2] 0 d" if op.dash else "[] 0 d")
            if op.kind == "rect":
                (x0, y0), (x1, y1) = op.points
                path = f"{_num(x0)} {_num(height - y1)} {_num(x1 - x0)} {_num(y1 - y0)} re"
            else:
                first, *rest = op.points
                path = f"{xy(first)} m " + " ".join(f"{xy(p)} l" for p in rest)
                if op.kind == "poly":
                    path += " h"
            paint = "B" if op.fill and op.stroke else "f" if op.fill else "S"
            if op.kind == "line":
                paint = "S"
            out.append(f"q {' '.join(style)} {path} {paint} Q")
        return "\n".join(out).encode("latin-1")


def pdf_document(page: Canvas) -> bytes:
    """One-page PDF 1.4 of `page` (page size = canvas size in points)."""
    content = zlib.compress(page._pdf_content())
    w, h = _num(page.width), _num(page.height)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {w} {h}] /Contents 4 0 R "
            "/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> >>"
        ).encode(),
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(content)
        + content
        + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title " + _pdf_text(page.title) + b" /Producer (Glucohub) >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        len(objects),
        xref,
    )
    return bytes(out)


# ---------------------------------------------------------------------- helpers


def _num(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _svg_op(op: _Op) -> str:
    fill = f'fill="{op.fill}"' if op.fill else 'fill="none"'
    stroke = (
        f'stroke="{op.stroke}" stroke-width="{_num(op.width)}"'
        + (' stroke-dasharray="3 2"' if op.dash else "")
        if op.stroke
        else ""
    )
    if op.kind == "rect":
        (x0, y0), (x1, y1) = op.points
        return (
            f'<rect x="{_num(x0)}" y="{_num(y0)}" width="{_num(x1 - x0)}" '
            f'height="{_num(y1 - y0)}" {fill} {stroke}/>'
        )
    if op.kind in ("line", "poly"):
        pts = " ".join(f"{_num(x)},{_num(y)}" for x, y in op.points)
        tag = "polyline" if op.kind == "line" else "polygon"
        if op.kind == "line":
            fill = 'fill="none"'
        return f'<{tag} points="{pts}" {fill} {stroke} stroke-linejoin="round"/>'
    (x, y) = op.points[0]
    weight = ' font-weight="bold"' if op.bold else ""
    return (
        f'<text x="{_num(x)}" y="{_num(y)}" font-size="{_num(op.size)}" '
        f'text-anchor="{op.anchor}" fill="{op.fill}"{weight}>{escape(op.text)}</text>'
    )


def _rgb(color: str) -> str:
    value = color.lstrip("#")
    if len(value) != 6:
        raise ValueError(f"colours are #rrggbb, got {color!r}")
    r, g, b = (int(value[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return f"{r:.3f} {g:.3f} {b:.3f}"


_ASCII_FOR = {"≥": ">=", "≤": "<=", "−": "-", "\u2009": " "}


def _winansi(text: str) -> bytes:
    for char, ascii_text in _ASCII_FOR.items():
        text = text.replace(char, ascii_text)
    return text.encode("cp1252", errors="replace")


def _pdf_text(text: str) -> bytes:
    return b"<" + _winansi(text).hex().encode() + b">"


# Helvetica advance widths (1/1000 em) for the characters the report prints; others ~556.
_NARROW = {c: 278 for c in " .,:;!|/\\ijl'"} | {c: 333 for c in "()-[]frt"} | {"I": 278}
_WIDE = {"%": 889, "m": 833, "w": 722, "M": 833, "W": 944, "<": 584, ">": 584, "=": 584}


def _text_width(text: str, size: float) -> float:
    total = 0
    for char in text:
        if char in _NARROW:
            total += _NARROW[char]
        elif char in _WIDE:
            total += _WIDE[char]
        elif char.isupper():
            total += 667
        elif char.islower():
            total += 520
        else:
            total += 556
    return total * size / 1000
