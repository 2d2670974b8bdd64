"""C2SP tlog-checkpoint v1.0.0: the signed tree head as a note body.

Body: origin line, tree size (ASCII decimal, no leading zeros), base64 root hash, then optional
non-empty extension lines; every line ends in a newline.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from ledger.errors import MalformedNote
from ledger.note import NoteSigner, NoteVerifier, b64decode_strict, open_note, sign_note

__all__ = ["Checkpoint", "open_checkpoint", "parse_checkpoint", "sign_checkpoint"]

_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x1f]")
_MAX_SIZE = 2**63 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or _CONTROL.search(self.origin):
            raise MalformedNote(f"checkpoint origin {self.origin!r} is empty or has a control")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise MalformedNote(f"checkpoint size {self.size!r} is not an integer")
        if not 0 <= self.size <= _MAX_SIZE:
            raise MalformedNote(f"checkpoint size {self.size} out of range")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != 32:
            raise MalformedNote("checkpoint root hash is not 32 bytes")
        for ext in self.extensions:
            if not ext or _CONTROL.search(ext):
                raise MalformedNote(f"checkpoint extension line {ext!r} is empty or has a control")
        try:  # a str from JSON may hold a lone surrogate, which the signed bytes cannot
            self.body().encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedNote("checkpoint text is not valid UTF-8 (lone surrogate)") from None

    def body(self) -> str:
        """The note text: three lines plus extensions, each newline-terminated."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(line + "\n" for line in (*lines, *self.extensions))


def parse_checkpoint(body: str) -> Checkpoint:
    """Parse a checkpoint note text (not the signatures) or raise MalformedNote."""
    if not body.endswith("\n"):
        raise MalformedNote("checkpoint body does not end with a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise MalformedNote(f"checkpoint body has {len(lines)} lines, needs at least 3")
    origin, size_text, root_b64, *extensions = lines
    if not _SIZE.fullmatch(size_text):
        raise MalformedNote(f"checkpoint size {size_text[:40]!r} is not a canonical decimal")
    if len(size_text) > 19:
        raise MalformedNote("checkpoint size out of range")
    root_hash = b64decode_strict(root_b64, "checkpoint root hash")
    return Checkpoint(
        origin=origin, size=int(size_text), root_hash=root_hash, extensions=tuple(extensions)
    )


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The checkpoint as a signed note (the log's key name SHOULD equal the origin)."""
    return sign_note(cp.body(), signer)


def open_checkpoint(
    note: str | bytes, verifier: NoteVerifier, *, origin: str | None = None
) -> Checkpoint:
    """Verify the log's signature and parse the body; other signatures are ignored.

    With `origin`, the checkpoint must name that origin (MalformedNote otherwise).
    """
    opened = open_note(note, verifier)
    cp = parse_checkpoint(opened.text)
    if origin is not None and cp.origin != origin:
        raise MalformedNote(f"checkpoint origin {cp.origin!r}, expected {origin!r}")
    return cp
