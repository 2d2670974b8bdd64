"""The AGP report as an A4 PDF, written with fpdf2 and embedded Unicode fonts.

A patient's name can be in any script ("Łukasz Wójcik", "王芳"), so the PDF embeds DejaVu Sans
(Latin, Greek, Cyrillic…; Debian's fonts-dejavu-core) with Droid Sans Fallback for the CJK
ideographs, kana and hangul it lacks (fonts-droid-fallback); fpdf2 subsets both and writes a
ToUnicode map, so the text can be searched and copied. Without those files the PDF is refused
with `MissingFont`, naming the packages, rather than printing empty boxes.
The charts are the same `Canvas` drawings as the page's SVG (`dashboards.agpcharts`).
fpdf2 (and Pillow under it) is imported only when a PDF is made, in the report worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dashboards import agpcharts
from dashboards.agp import AgpReport
from gateway.clinical.drawing import Canvas
from gateway.errors import GlucohubError

if TYPE_CHECKING:
    from fpdf import FPDF

FONT_DIR = Path("/usr/share/fonts/truetype")
FONT_FILES = {
    "regular": ("dejavu/DejaVuSans.ttf", "fonts-dejavu-core"),
    "bold": ("dejavu/DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    "fallback": ("droid/DroidSansFallbackFull.ttf", "fonts-droid-fallback"),
}
PAGE_W, PAGE_H = 595.28, 841.89  # A4 in points
MARGIN = 30.0
INK = (34, 34, 34)
MUTED = (102, 102, 102)
MET = (46, 125, 50)
MISSED = (198, 40, 40)


class MissingFont(GlucohubError):
    """A font the PDF report embeds is not installed (the installation's fault)."""

    def __init__(self, missing: dict[str, str]) -> None:
        packages = " ".join(sorted(set(missing.values())))
        super().__init__(
            f"the PDF report needs the fonts {', '.join(sorted(missing))}: "
            f"install Debian's {packages} (apt-get install {packages})"
        )
        self.missing = missing

    def __reduce__(self) -> tuple[type[MissingFont], tuple[dict[str, str]]]:
        return (MissingFont, (self.missing,))  # raised in the worker, re-raised on the loop


@dataclass(frozen=True, slots=True, kw_only=True)
class Fonts:
    regular: Path
    bold: Path
    fallback: Path


def find_fonts(font_dir: Path = FONT_DIR) -> Fonts:
    """The font files, or `MissingFont` naming the Debian packages that hold the missing ones."""
    paths = {key: font_dir / name for key, (name, _) in FONT_FILES.items()}
    missing = {str(paths[k]): pkg for k, (_, pkg) in FONT_FILES.items() if not paths[k].is_file()}
    if missing:
        raise MissingFont(missing)
    return Fonts(regular=paths["regular"], bold=paths["bold"], fallback=paths["fallback"])


def render_pdf(report: AgpReport, fonts: Fonts | None = None) -> bytes:
    """The report on A4 pages (a second one when the daily profiles do not fit)."""
    from fpdf import FPDF  # ~20 MiB with Pillow: only in the worker that makes PDFs

    fonts = fonts or find_fonts()
    pdf = FPDF(orientation="portrait", unit="pt", format="A4")
    pdf.set_margins(MARGIN, MARGIN)
    pdf.set_auto_page_break(False)
    pdf.add_font("Sans", "", str(fonts.regular))
    pdf.add_font("Sans", "B", str(fonts.bold))
    pdf.add_font("Fallback", "", str(fonts.fallback))
    pdf.set_fallback_fonts(["Fallback"], exact_match=False)
    pdf.set_title(f"AGP report {report.patient_id}")
    pdf.set_creator("Glucohub")
    pdf.add_page()
    width = PAGE_W - 2 * MARGIN

    _text(pdf, MARGIN, 40, f"AGP Report: {report.display_name}", size=15, bold=True)
    _text(
        pdf,
        MARGIN,
        56,
        f"Patient {report.patient_id} · {report.period} · time zone {report.timezone}"
        f" · generated {report.generated} · glucose in {report.unit.value}",
        size=7.5,
        colour=MUTED,
    )
    y = 70.0
    if report.warning:
        pdf.set_fill_color(255, 244, 229)
        pdf.rect(MARGIN, y, width, 16, style="F")
        _text(pdf, MARGIN + 4, y + 11, report.warning, size=7)
        y += 22

    table_top = y
    _text(pdf, MARGIN, y + 10, "Glucose statistics and targets", size=10, bold=True)
    y += 24
    for stat in report.stats:
        _text(pdf, MARGIN, y, stat.label, size=7.5)
        _text(pdf, MARGIN + 150, y, stat.value, size=7.5, bold=True)
        y += 11
    y += 4
    for target in report.targets:
        _text(pdf, MARGIN, y, target.label, size=7.5)
        value = f"{target.value}" + (f" ({target.per_day}/day)" if target.per_day else "")
        _text(pdf, MARGIN + 150, y, value, size=7.5, bold=True)
        _text(pdf, MARGIN + 255, y, f"target {target.goal}", size=7, colour=MUTED)
        colour = MUTED if target.met is None else MET if target.met else MISSED
        _text(pdf, MARGIN + 310, y, target.verdict, size=7.5, bold=True, colour=colour)
        y += 11

    bar = agpcharts.tir_chart(report, width=200, height=max(y - table_top, 150))
    _place(pdf, bar, MARGIN + width - 200, table_top)
    y = max(y, table_top + bar.height) + 10
    _text(pdf, MARGIN, y, "Time in ranges", size=10, bold=True)
    y += 13
    for r in report.ranges:
        pdf.set_fill_color(*_rgb(r.colour))
        pdf.rect(MARGIN, y - 7, 8, 8, style="F")
        _text(pdf, MARGIN + 12, y, f"{r.label} ({r.limits})", size=7.5)
        _text(pdf, MARGIN + 190, y, f"{r.percent:.1f} %", size=7.5, bold=True, anchor="end")
        _text(pdf, MARGIN + 200, y, f"{r.per_day} per day", size=7.5)
        y += 11
    y += 4

    agp = agpcharts.agp_chart(report)
    scale = width / agp.width
    _place(pdf, agp, MARGIN, y, scale)
    y += agp.height * scale + 10

    _text(
        pdf,
        MARGIN,
        y,
        f"Fingerstick (meter) readings: {report.fingersticks}, drawn as purple squares on the "
        "daily profiles; the metrics are from CGM readings only.",
        size=6.8,
        colour=MUTED,
    )
    y += 4
    y = _treatments(pdf, report, y)

    _text(pdf, MARGIN, y + 10, "Daily glucose profiles", size=10, bold=True)
    y += 16
    columns = 7
    cell_w = width / columns
    scale = cell_w / agpcharts.DAY_W
    cell_h = agpcharts.DAY_H * scale
    for i, profile in enumerate(report.profiles):
        if i and i % columns == 0:
            y += cell_h
        if i % columns == 0 and y + cell_h > PAGE_H - MARGIN:
            pdf.add_page()
            y = MARGIN
        chart = agpcharts.day_chart(profile, report.unit)
        _place(pdf, chart, MARGIN + (i % columns) * cell_w, y, scale)
    return bytes(pdf.output())


def _treatments(pdf: FPDF, report: AgpReport, y: float) -> float:
    """The recorded insulin and carbohydrates under the AGP curve; the new `y`."""
    y += 12
    if not report.treatment_rows:
        _text(pdf, MARGIN, y, "No insulin or carbohydrates were recorded in this period.",
              size=6.8, colour=MUTED)  # fmt: skip
        return y + 4
    _text(pdf, MARGIN, y, "Insulin and carbohydrates", size=10, bold=True)
    y += 13
    for row in report.treatment_rows:
        _text(pdf, MARGIN, y, row.label, size=7.5)
        _text(pdf, MARGIN + 210, y, row.value, size=7.5, bold=True)
        y += 11
    _text(pdf, MARGIN, y, "As recorded by the pump, pen or phone app: insulin as blue triangles, "
          "carbohydrates as orange diamonds on the daily profiles. Scheduled pump basal is not "
          "recorded.", size=6.8, colour=MUTED)  # fmt: skip
    return y + 4


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def _text(
    pdf: FPDF,
    x: float,
    baseline: float,
    text: str,
    *,
    size: float,
    bold: bool = False,
    colour: tuple[int, int, int] = INK,
    anchor: str = "start",
) -> None:
    """Text with its baseline at `baseline`. A cell, not `FPDF.text`: only cells use the
    fallback font, for the characters DejaVu Sans lacks."""
    pdf.set_font("Sans", "B" if bold else "", size)
    pdf.set_text_color(*colour)
    w = pdf.get_string_width(text)
    left = {"start": x, "middle": x - w / 2, "end": x - w}[anchor]
    # fpdf2 puts a cell's baseline at top + h/2 + 0.3·size.
    pdf.set_xy(left, baseline - 0.8 * size)
    pdf.cell(w=w + 1, h=size, text=text)


def _place(pdf: FPDF, canvas: Canvas, x0: float, y0: float, scale: float = 1.0) -> None:
    """Draw `canvas` with its top-left corner at (x0, y0), scaled."""

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        return (x0 + p[0] * scale, y0 + p[1] * scale)

    for op in canvas.ops:
        if op.kind == "text":
            x, y = xy(op.points[0])
            _text(pdf, x, y, op.text, size=op.size * scale, bold=op.bold,
                  colour=_rgb(op.fill or "#222222"), anchor=op.anchor)  # fmt: skip
            continue
        if op.fill:
            pdf.set_fill_color(*_rgb(op.fill))
        if op.stroke:
            pdf.set_draw_color(*_rgb(op.stroke))
            pdf.set_line_width(op.width * scale)
            if op.dash:
                pdf.set_dash_pattern(dash=3 * scale, gap=2 * scale)
        style = "DF" if op.fill and op.stroke else "F" if op.fill else "D"
        if op.kind == "rect":
            (ax, ay), (bx, by) = xy(op.points[0]), xy(op.points[1])
            pdf.rect(ax, ay, bx - ax, by - ay, style=style)
        elif op.kind == "poly":
            pdf.polygon([xy(p) for p in op.points], style=style)
        else:
            pdf.polyline([xy(p) for p in op.points], style="D")
        if op.dash:
            pdf.set_dash_pattern()
