"""Which redirect targets are this app's own pages: a pure check, no I/O.

Browsers are lenient with a `Location` header: the WHATWG URL parser strips tabs and
newlines anywhere and leading/trailing C0 controls and spaces, treats `\\` like `/`, and
reads `//host` (or `/\\host`) as another origin. So a target is accepted only when it is
plainly a path of this app before AND after percent-decoding (decoded until stable, so a
double-encoded `%252F` gets no second chance further along a redirect chain).
"""

from __future__ import annotations

from urllib.parse import unquote

_MAX_DECODES = 4  # more layers of encoding than this is not a link anyone typed


def is_local_path(target: str) -> bool:
    """True when `target` is an absolute path on this origin (`/...`, not `//` or `/\\`)."""
    if not target.isascii() or not _plain(target):
        return False
    path = target.split("?", 1)[0].split("#", 1)[0]
    for _ in range(_MAX_DECODES):
        if not _plain(path) or not path.startswith("/") or path.startswith("//"):
            return False
        try:
            decoded = unquote(path, errors="strict")
        except UnicodeDecodeError:  # percent-encoded bytes that are not UTF-8
            return False
        if decoded == path:
            return True
        path = decoded
    return False


def local_path(target: str | None, default: str = "/") -> str:
    """`target` when it is a local path (see `is_local_path`), else `default`."""
    return target if target and is_local_path(target) else default


def _plain(text: str) -> bool:
    # No backslash, whitespace or control character (Unicode spaces included): none of them
    # belongs in a link this app makes, and each has a browser quirk behind it.
    return "\\" not in text and all(ch.isprintable() and not ch.isspace() for ch in text)
