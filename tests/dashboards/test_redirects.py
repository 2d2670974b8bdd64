"""The redirect-target check on its own: whatever it accepts stays on this origin."""

from __future__ import annotations

from urllib.parse import unquote, urljoin, urlsplit

from hypothesis import given
from hypothesis import strategies as st

from dashboards.redirects import is_local_path, local_path

PIECES = st.sampled_from(
    [
        "/",
        "//",
        "\\",
        "%2F",
        "%2f",
        "%5C",
        "%25",
        "%09",
        "\t",
        "\n",
        " ",
        ":",
        "evil.example",
        "http:",
        "?",
        "#",
        "a",
        "%E3%80%80",
        "\u3000",
        "%ff",
        ".",
    ]
)


@given(st.lists(PIECES, max_size=8).map("".join))
def test_accepted_targets_resolve_to_this_origin(target: str) -> None:
    if not is_local_path(target):
        assert local_path(target, "/home") == "/home"
        return
    # As a lenient browser would read it, before and after one round of decoding.
    for seen in (target, unquote(target)):
        browser = seen.replace("\t", "").replace("\n", "").replace("\\", "/")
        resolved = urlsplit(urljoin("https://hub.example/x/", browser))
        assert (resolved.scheme, resolved.netloc) == ("https", "hub.example")
        assert resolved.path.startswith("/") and not resolved.path.startswith("//")


def test_local_paths_are_kept_whole() -> None:
    assert local_path("/patients/p%2D1?days=7#top") == "/patients/p%2D1?days=7#top"
    assert local_path(None, "/x") == "/x" and local_path("", "/x") == "/x"
