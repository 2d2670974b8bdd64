"""A patient's own readings as a CSV download ("download my data"): pure text from readings.

The columns are `gateway.shapes.EXPORT_FIELDS`, those of `glucohub export --format csv`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from gateway.model import Reading
from gateway.shapes import EXPORT_FIELDS, export_record


def readings_csv(readings: Sequence[Reading]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(EXPORT_FIELDS)
    for reading in readings:
        writer.writerow(["" if v is None else v for v in export_record(reading).values()])
    return out.getvalue()
