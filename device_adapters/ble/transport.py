"""The GATT transport contract the adapter drives. bleak (bleak_transport) and the virtual
peripherals (virtual/) implement it; nothing else in this package touches a radio."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

NotifyCallback = Callable[[str, bytes], None]
"""Called on the event loop with (characteristic UUID, value) for each notification/indication."""

DisconnectCallback = Callable[[], None]


class GattTransport(Protocol):
    """One peripheral. Every method raises `errors.GattError` (or a subclass) on failure,
    never a library's own exception."""

    @property
    def address(self) -> str: ...

    @property
    def is_connected(self) -> bool: ...

    def set_disconnected_callback(self, callback: DisconnectCallback | None) -> None:
        """Called once when the link drops without us asking."""

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def pair(self) -> None:
        """Bond (encrypt the link); glucose meters commonly require it before sending records."""

    async def services(self) -> frozenset[str]:
        """Full 128-bit UUIDs of the services the peripheral offers."""

    async def read(self, uuid: str) -> bytes: ...

    async def write(self, uuid: str, data: bytes, *, response: bool = True) -> None: ...

    async def start_notify(self, uuid: str, callback: NotifyCallback) -> None: ...

    async def stop_notify(self, uuid: str) -> None: ...
