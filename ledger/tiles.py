"""C2SP tlog-tiles: tile and entry-bundle paths, tile contents, entry bundles.

A tile at tile level L, index N holds up to 256 consecutive Merkle tree hashes at tree height
8*L: hash i is MTH of leaves [(N*256 + i) * 256**L, (N*256 + i + 1) * 256**L). Full tiles are 256
hashes (8,192 bytes); a partial tile ".p/W" has W in 1..255. Index N is written as zero-padded
3-digit path elements, all but the last prefixed with "x" (1234067 -> "x001/x234/067").
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ledger.errors import TileError
from ledger.rfc6962 import HASH_SIZE, node_hash

__all__ = [
    "TILE_WIDTH",
    "TileRef",
    "entry_bundle",
    "entry_bundle_path",
    "hash_at_from_leaf_hashes",
    "parse_entry_bundle",
    "parse_tile_path",
    "tile_hashes",
    "tile_path",
    "tiles_for_tree",
]

TILE_WIDTH = 256
TILE_HEIGHT = 8  # log2(TILE_WIDTH)
_MAX_LEVEL = 63
_MAX_ENTRY = 0xFFFF  # entries are prefixed by a big-endian uint16 length

_LEVEL = re.compile(r"0|[1-9][0-9]?", re.ASCII)
_WIDTH = re.compile(r"[1-9][0-9]{0,2}", re.ASCII)
_ELEM_X = re.compile(r"x[0-9]{3}", re.ASCII)
_ELEM = re.compile(r"[0-9]{3}", re.ASCII)


@dataclass(frozen=True, slots=True, kw_only=True)
class TileRef:
    """One tile (or, with entries=True, one entry bundle, whose level is always 0)."""

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.level <= _MAX_LEVEL:
            raise TileError(repr(self), f"level {self.level} outside 0..{_MAX_LEVEL}")
        if self.entries and self.level != 0:
            raise TileError(repr(self), "entry bundles have no level")
        if self.index < 0:
            raise TileError(repr(self), "negative index")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(repr(self), f"width {self.width} outside 1..{TILE_WIDTH}")

    @property
    def is_partial(self) -> bool:
        return self.width < TILE_WIDTH

    @property
    def path(self) -> str:
        return _path("entries" if self.entries else str(self.level), self.index, self.width)

    @property
    def start_leaf(self) -> int:
        """First leaf covered (tlog-tiles "start index")."""
        return self.index << (TILE_HEIGHT * (self.level + 1))

    @property
    def end_leaf(self) -> int:
        """One past the last leaf covered by the hashes actually in this (maybe partial) tile."""
        return (self.index * TILE_WIDTH + self.width) << (TILE_HEIGHT * self.level)


def _encode_index(index: int) -> str:
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _path(head: str, index: int, width: int) -> str:
    suffix = "" if width == TILE_WIDTH else f".p/{width}"
    return f"tile/{head}/{_encode_index(index)}{suffix}"


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """ "tile/<L>/<N>[.p/<W>]", e.g. tile_path(0, 1234067) == "tile/0/x001/x234/067"."""
    return TileRef(level=level, index=index, width=width).path


def entry_bundle_path(index: int, width: int = TILE_WIDTH) -> str:
    """ "tile/entries/<N>[.p/<W>]"."""
    return TileRef(level=0, index=index, width=width, entries=True).path


def parse_tile_path(path: str) -> TileRef:
    """Parse a tile or entry-bundle path (leading "/" allowed); anything else is a TileError."""
    parts = path.removeprefix("/").split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(path, "not under tile/")
    head, rest = parts[1], parts[2:]
    entries = head == "entries"
    if not entries and not _LEVEL.fullmatch(head):
        raise TileError(path, f"level {head[:10]!r} is not a decimal 0..63")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        if not _WIDTH.fullmatch(rest[-1]) or int(rest[-1]) >= TILE_WIDTH:
            raise TileError(path, f"partial width {rest[-1][:10]!r} is not 1..255")
        width = int(rest[-1])
        rest = [*rest[:-2], rest[-2][:-2]]
    *upper, last = rest
    if not _ELEM.fullmatch(last) or not all(_ELEM_X.fullmatch(e) for e in upper):
        raise TileError(path, "index is not x-prefixed 3-digit path elements")
    if upper and upper[0] == "x000":
        raise TileError(path, "index has a leading zero element")
    index = 0
    for e in [*upper, last]:
        index = index * 1000 + int(e.removeprefix("x"))
    level = 0 if entries else int(head)
    if level > _MAX_LEVEL:
        raise TileError(path, f"level {level} outside 0..{_MAX_LEVEL}")
    return TileRef(level=level, index=index, width=width, entries=entries)


def tiles_for_tree(tree_size: int) -> list[TileRef]:
    """Every hash tile (full and partial) a log of `tree_size` leaves serves, lowest level first.

    tlog-tiles: the partial tile at level l has floor(s / 256**l) mod 256 hashes.
    """
    if tree_size < 0:
        raise TileError(str(tree_size), "negative tree size")
    out: list[TileRef] = []
    level = 0
    while level <= _MAX_LEVEL and tree_size >> (TILE_HEIGHT * level):
        hashes = tree_size >> (TILE_HEIGHT * level)  # complete subtrees at this tile level's height
        full, partial = divmod(hashes, TILE_WIDTH)
        out.extend(TileRef(level=level, index=n) for n in range(full))
        if partial:
            out.append(TileRef(level=level, index=full, width=partial))
        level += 1
    return out


def tile_hashes(ref: TileRef, hash_at: Callable[[int, int], bytes], tree_size: int) -> bytes:
    """The tile's contents: its hashes concatenated.

    `hash_at(height, index)` returns the hash of the complete subtree of 2**height leaves that
    starts at leaf index * 2**height (height is the Merkle height, 8 * tile level).
    """
    if ref.entries:
        raise TileError(ref.path, "an entry bundle is not a hash tile")
    if ref.end_leaf > tree_size:
        raise TileError(ref.path, f"needs {ref.end_leaf} leaves, tree has {tree_size}")
    height = TILE_HEIGHT * ref.level
    first = ref.index * TILE_WIDTH
    out = bytearray()
    for i in range(first, first + ref.width):
        h = hash_at(height, i)
        if len(h) != HASH_SIZE:
            raise TileError(ref.path, f"hash_at({height}, {i}) is not {HASH_SIZE} bytes")
        out += h
    return bytes(out)


def hash_at_from_leaf_hashes(
    leaf_hashes: Sequence[bytes], first_leaf: int = 0
) -> Callable[[int, int], bytes]:
    """A `hash_at` for `tile_hashes` over an in-memory list of leaf hashes: those of leaves
    first_leaf, first_leaf + 1, ... (a tile needs only the leaves under it, from its
    `start_leaf`; any subtree asked for must lie inside the list).

    Builds every complete-subtree level once (about n hashes in all), then answers lookups.
    """
    if first_leaf < 0:
        raise TileError(str(first_leaf), "negative first leaf")
    levels: list[list[bytes]] = [list(leaf_hashes)]
    while len(levels[-1]) >= 2:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def hash_at(height: int, index: int) -> bytes:
        if not 0 <= height < len(levels) or first_leaf % (1 << height):
            raise TileError(f"{height}/{index}", "no complete subtree there")
        local = index - (first_leaf >> height)
        if not 0 <= local < len(levels[height]):
            raise TileError(f"{height}/{index}", "no complete subtree there")
        return levels[height][local]

    return hash_at


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries each prefixed by a big-endian uint16 length (at most 256 entries)."""
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise TileError("entries", f"a bundle holds 1..{TILE_WIDTH} entries, got {len(entries)}")
    out = bytearray()
    for i, e in enumerate(entries):
        if len(e) > _MAX_ENTRY:
            raise TileError("entries", f"entry {i} is {len(e)} bytes, more than {_MAX_ENTRY}")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def parse_entry_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle back into its entries; TileError if truncated or over-long."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise TileError("entries", f"truncated length prefix at byte {pos}")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise TileError("entries", f"entry {len(entries)} runs past the end")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if not 1 <= len(entries) <= TILE_WIDTH:
        raise TileError("entries", f"a bundle holds 1..{TILE_WIDTH} entries, got {len(entries)}")
    return entries
