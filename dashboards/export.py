"""A patient's own readings as a CSV download ("download my data"): pure text from readings.

The columns are `gateway.shapes.EXPORT_FIELDS`, those of `glucohub export --format csv`
(glucose in mg/dL, times in UTC), then the same on the patient's own terms: the time on their
clock with its zone, and glucose in the viewer's unit (`glucose_mmol_l` or `glucose_mg_dl`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import tzinfo

from dashboards.timefmt import zone_label
from gateway.model import Reading, ReadingKind
from gateway.shapes import EXPORT_FIELDS, export_record
from gateway.units import Unit, format_glucose

_GLUCOSE = (ReadingKind.CGM_GLUCOSE, ReadingKind.GLUCOSE)


def readings_csv(readings: Sequence[Reading], *, tz: tzinfo, unit: Unit) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    glucose_column = "glucose_mmol_l" if unit is Unit.MMOL_L else "glucose_mg_dl"
    writer.writerow([*EXPORT_FIELDS, "local_time", "time_zone", glucose_column])
    for reading in readings:
        local = reading.time.astimezone(tz)
        glucose = (
            format_glucose(reading.value, unit)
            if reading.kind in _GLUCOSE and reading.unit is Unit.MG_DL
            else ""
        )
        writer.writerow(
            [
                *("" if v is None else v for v in export_record(reading).values()),
                f"{local:%Y-%m-%d %H:%M:%S}",
                zone_label(local),
                glucose,
            ]
        )
    return out.getvalue()
