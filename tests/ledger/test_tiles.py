"""C2SP tlog-tiles: path encoding from the spec's examples, tile contents, entry bundles."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import TileError
from ledger.rfc6962 import leaf_hash, root_from_hashes
from ledger.tiles import (
    TileRef,
    entry_bundle,
    entry_bundle_path,
    hash_at_from_leaf_hashes,
    parse_entry_bundle,
    parse_tile_path,
    tile_hashes,
    tile_path,
    tiles_for_tree,
)


def test_spec_path_examples() -> None:
    # tlog-tiles: "index 1234067 will be encoded as x001/x234/067"
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(0, 1234067, 13) == "tile/0/x001/x234/067.p/13"
    assert tile_path(2, 0) == "tile/2/000"
    assert tile_path(1, 999) == "tile/1/999"
    assert tile_path(1, 1000) == "tile/1/x001/000"
    assert entry_bundle_path(5) == "tile/entries/005"
    assert entry_bundle_path(1234067, 255) == "tile/entries/x001/x234/067.p/255"


def test_parse_known_paths() -> None:
    assert parse_tile_path("tile/0/x001/x234/067.p/13") == TileRef(level=0, index=1234067, width=13)
    assert parse_tile_path("/tile/63/000") == TileRef(level=63, index=0)
    ref = parse_tile_path("tile/entries/x001/000")
    assert ref == TileRef(level=0, index=1000, entries=True)
    assert ref.path == "tile/entries/x001/000"


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/67",  # not 3 digits
        "tile/0/x067",  # last element x-prefixed
        "tile/0/001/234",  # upper element not x-prefixed
        "tile/0/x000/234",  # leading zero element
        "tile/00/000",  # level with a leading zero
        "tile/64/000",  # level above 63
        "tile/-1/000",
        "tile/0/000.p/0",  # width 0
        "tile/0/000.p/256",  # width 256 is a full tile, never .p
        "tile/0/000.p/013",  # leading zero in width
        "tile/0/000.p/",
        "tile/0/000.p",
        "tile/0/000/",
        "tile/0",
        "tiles/0/000",
        "tile/entries",
        "tile/0/\u0661\u0662\u0663",  # non-ASCII digits
    ],
)
def test_malformed_paths(path: str) -> None:
    with pytest.raises(TileError):
        parse_tile_path(path)


@given(
    level=st.integers(0, 63),
    index=st.integers(0, 10**15),
    width=st.integers(1, 256),
    entries=st.booleans(),
)
def test_path_round_trip(level: int, index: int, width: int, entries: bool) -> None:
    ref = TileRef(level=0 if entries else level, index=index, width=width, entries=entries)
    assert parse_tile_path(ref.path) == ref


@given(st.text(max_size=60))
def test_random_paths_raise_only_tile_error(text: str) -> None:
    try:
        ref = parse_tile_path(text)
    except TileError:
        return
    assert ref.path == text.removeprefix("/")


def test_spec_example_tree_of_70000() -> None:
    # tlog-tiles: 273 full level-0 tiles, a partial level-0 tile of width 112, one full level-1
    # tile, a partial level-1 tile of width 17 and a partial level-2 tile of width 1.
    # 70000 = 273*256 + 112; 273 = 1*256 + 17; 70000 // 65536 = 1.
    tiles = tiles_for_tree(70000)
    level0 = [t for t in tiles if t.level == 0]
    assert len([t for t in level0 if not t.is_partial]) == 273
    assert [t.width for t in level0 if t.is_partial] == [112]
    level1 = [t for t in tiles if t.level == 1]
    assert [(t.index, t.width) for t in level1] == [(0, 256), (1, 17)]
    assert [(t.level, t.index, t.width) for t in tiles if t.level >= 2] == [(2, 0, 1)]


def test_spec_example_tree_of_256() -> None:
    # "a tree of size 256 will be represented by a full level 0 tile and a partial level 1
    # tile of width 1"
    assert tiles_for_tree(256) == [TileRef(level=0, index=0), TileRef(level=1, index=0, width=1)]
    assert tiles_for_tree(0) == []
    assert tiles_for_tree(1) == [TileRef(level=0, index=0, width=1)]


def test_tile_contents() -> None:
    n = 600  # 2 full level-0 tiles + 88 in a partial; level 1 partial of width 2
    leaves = [f"entry {i}".encode() for i in range(n)]
    hashes = [leaf_hash(x) for x in leaves]
    hash_at = hash_at_from_leaf_hashes(hashes)
    t1 = tile_hashes(TileRef(level=0, index=1), hash_at, n)
    assert t1 == b"".join(hashes[256:512])  # level 0 tiles are leaf hashes
    part = tile_hashes(TileRef(level=0, index=2, width=88), hash_at, n)
    assert part == b"".join(hashes[512:600])
    up = tile_hashes(TileRef(level=1, index=0, width=2), hash_at, n)
    # each level-1 hash is MTH of 256 leaves, i.e. the root of the full tile below it
    assert up[:32] == root_from_hashes(hashes[:256])
    assert up[32:] == root_from_hashes([t1[i : i + 32] for i in range(0, len(t1), 32)])
    with pytest.raises(TileError):  # a level-1 tile of width 3 needs 768 leaves
        tile_hashes(TileRef(level=1, index=0, width=3), hash_at, n)
    with pytest.raises(TileError):
        tile_hashes(TileRef(level=0, index=0, entries=True), hash_at, n)


def test_every_tile_of_a_tree_can_be_served() -> None:
    n = 256 * 3 + 5
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    hash_at = hash_at_from_leaf_hashes(hashes)
    for ref in tiles_for_tree(n):
        assert len(tile_hashes(ref, hash_at, n)) == 32 * ref.width


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 256 * 256 + 300))
def test_a_tile_from_only_the_leaves_under_it_equals_one_from_the_whole_tree(n: int) -> None:
    """What the hub serves: each tile computed from its own leaves, not the whole log."""
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(n)]
    whole = hash_at_from_leaf_hashes(hashes)
    for ref in tiles_for_tree(n):
        own = hash_at_from_leaf_hashes(hashes[ref.start_leaf : ref.end_leaf], ref.start_leaf)
        assert tile_hashes(ref, own, n) == tile_hashes(ref, whole, n)


def test_a_partial_leaf_list_refuses_subtrees_outside_it() -> None:
    hashes = [leaf_hash(i.to_bytes(4, "big")) for i in range(512)]
    hash_at = hash_at_from_leaf_hashes(hashes[256:], first_leaf=256)
    assert hash_at(8, 1) == root_from_hashes(hashes[256:512])
    with pytest.raises(TileError):
        hash_at(8, 0)  # leaves 0..255 are not in the list
    with pytest.raises(TileError):
        hash_at_from_leaf_hashes(hashes[100:], first_leaf=100)(8, 0)  # misaligned start


def test_entry_bundle_round_trip_and_hashes_match_level0_tile() -> None:
    entries = [b"", b"a", b"x" * 300, bytes(range(256))]
    bundle = entry_bundle(entries)
    # 2-byte big-endian lengths: 0000, 0001 'a', 012c + 300 bytes, 0100 + 256 bytes
    assert bundle[:2] == b"\x00\x00" and bundle[2:5] == b"\x00\x01a" and bundle[5:7] == b"\x01\x2c"
    assert len(bundle) == 2 * 4 + 0 + 1 + 300 + 256
    assert parse_entry_bundle(bundle) == entries
    tile = tile_hashes(
        TileRef(level=0, index=0, width=4),
        hash_at_from_leaf_hashes([leaf_hash(e) for e in entries]),
        4,
    )
    assert [leaf_hash(e) for e in parse_entry_bundle(bundle)] == [
        tile[i : i + 32] for i in range(0, 128, 32)
    ]
    with pytest.raises(TileError):
        entry_bundle([b"x" * 65536])
    with pytest.raises(TileError):
        entry_bundle([])
    with pytest.raises(TileError):
        parse_entry_bundle(b"\x00\x05abc")  # says 5 bytes, has 3
    with pytest.raises(TileError):
        parse_entry_bundle(b"\x00\x01a\x00")  # trailing half length


@given(st.binary(max_size=200))
def test_random_bundles_raise_only_tile_error(blob: bytes) -> None:
    try:
        entries = parse_entry_bundle(blob)
    except TileError:
        return
    assert entry_bundle(entries) == blob
