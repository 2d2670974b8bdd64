"""The text a PDF shows, as a reader's PDF viewer would extract it (pypdf)."""

from __future__ import annotations

import io

from pypdf import PdfReader


def pdf_text(data: bytes) -> str:
    """Every page's extracted text, pages separated by a form feed."""
    assert data.startswith(b"%PDF-"), data[:20]
    return "\f".join(page.extract_text() for page in PdfReader(io.BytesIO(data)).pages)
