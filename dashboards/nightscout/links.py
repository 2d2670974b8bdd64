"""What a phone app is told to connect to the hub as a Nightscout site: the site URL and
xDrip+'s base URL with the secret in it (xDrip+ takes `https://SECRET@host/api/v1/`:
NightscoutFoundation/xDrip, NightscoutUploader.java, which sends SHA-1(SECRET) as api-secret)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class UploaderLinks:
    secret: str
    nightscout_url: str  # what Juggluco, AndroidAPS and followers take
    xdrip_url: str  # xDrip+'s "Base URL": the secret in the URL, then /api/v1/


def links(base_url: str, secret: str) -> UploaderLinks:
    """The URLs an app is given, from the hub's own address (`https://hub.local:8080`)."""
    scheme, _, rest = base_url.rstrip("/").partition("://")
    return UploaderLinks(
        secret=secret,
        nightscout_url=f"{scheme}://{rest}",
        xdrip_url=f"{scheme}://{secret}@{rest}/api/v1/",
    )
