"""A patient's own readings as a CSV download ("download my data"): pure text from readings.

The columns are those of `glucohub export --format csv` (the CLI's `EXPORT_FIELDS`), values as
stored (glucose in mg/dL), times in RFC 3339 UTC, so a file from either opens the same way.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

from gateway.model import Reading
from gateway.shapes import reading_to_json

FIELDS = ("patient_id", "device_id", "kind", "time", "value", "unit", "seq", "source")


def readings_csv(readings: Sequence[Reading]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    writer.writerow(FIELDS)
    for reading in readings:
        row = reading_to_json(reading)
        writer.writerow(["" if row[f] is None else row[f] for f in FIELDS])
    return out.getvalue()
