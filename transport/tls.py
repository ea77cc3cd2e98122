"""Pinned TLS for the client side of both channels (agent → /agent, technician → /api)."""

from __future__ import annotations

import asyncio.sslproto
import ssl
from typing import TYPE_CHECKING, Any, Final

from protocol import signing

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection

#: asyncio reads each TLS connection through its own buffer of ``SSLProtocol.max_size``
#: (256 KiB), which makes an idle connection cost about 290 KB. A TLS record carries at
#: most 16 KiB of plaintext, so a 16 KiB buffer still takes one whole record per read;
#: an idle connection then costs about 50 KB (measured in bench/idle_agents.py).
TLS_READ_BUFFER: Final = 16 * 1024


def lean_tls_buffers() -> None:
    """Give every asyncio TLS connection of this process a 16 KiB read buffer."""
    protocol = asyncio.sslproto.SSLProtocol
    if getattr(protocol, "max_size", 0) > TLS_READ_BUFFER:
        protocol.max_size = TLS_READ_BUFFER


def pinned_client_context() -> ssl.SSLContext:
    """A TLS 1.3 client context for a pinned self-signed peer.

    Chain and host-name checks are off *because* :func:`check_pin` compares the
    certificate's SHA-256 with the pin before a single application byte is sent (see
    :func:`pinned_connection`). Making one also makes this process's TLS buffers lean
    (:func:`lean_tls_buffers`).
    """
    lean_tls_buffers()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> str:
    """The peer certificate's SHA-256; :class:`~protocol.signing.PinMismatch` unless ``pin``."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    return signing.check_pin(der, pin)


def pinned_connection(pin: str) -> type[ClientConnection]:
    """A websockets connection class that checks ``pin`` before its opening handshake.

    Pass it as ``connect(create_connection=...)``. asyncio hands the connection its
    transport only once the TLS handshake is complete, and websockets writes nothing until
    it calls :meth:`handshake`; checking there means a server with another certificate
    never sees the HTTP upgrade (path, ``Host``, ``Sec-WebSocket-Key``, ``User-Agent``).
    :class:`~protocol.signing.PinMismatch` propagates out of ``connect`` unchanged, after
    websockets has aborted the transport.
    """
    from websockets.asyncio.client import ClientConnection

    class PinnedConnection(ClientConnection):
        async def handshake(self, *args: Any, **kwargs: Any) -> None:
            check_pin(self.transport.get_extra_info("ssl_object"), pin)
            await super().handshake(*args, **kwargs)

    return PinnedConnection
