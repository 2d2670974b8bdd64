"""Alert text for people: the engine's message (kept as written in the ledger, glucose in
mg/dL) retold in the viewer's glucose unit, and the alert kind in plain words.

Every page, live message and notification that shows an alert's text uses `alert_text`.
"""

from __future__ import annotations

import re

from gateway.model import Alert, AlertKind
from gateway.units import Unit, format_glucose, format_glucose_rate

# A glucose value or rate as the engine writes it: "61 mg/dL", "-2.4 mg/dL/min".
_GLUCOSE = re.compile(r"([+-]?\d+(?:\.\d+)?) mg/dL(/min)?")


def glucose_words(text: str, unit: Unit) -> str:
    """`text` with every "N mg/dL" (and "N mg/dL/min") stated in `unit`."""

    def convert(match: re.Match[str]) -> str:
        value = float(match.group(1))
        if match.group(2):
            return f"{format_glucose_rate(value, unit)} {unit.value}/min"
        return f"{format_glucose(value, unit)} {unit.value}"

    return _GLUCOSE.sub(convert, text)


def alert_text(alert: Alert, unit: Unit) -> str:
    """The alert's message for a person viewing glucose in `unit`."""
    return glucose_words(alert.message, unit)


def kind_label(kind: AlertKind) -> str:
    """ "urgent_low" -> "Urgent low"."""
    return kind.value.replace("_", " ").capitalize()
