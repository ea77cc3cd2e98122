"""Pinned TLS for the client side of both channels (agent → /agent, technician → /api)."""

from __future__ import annotations

import hashlib
import ssl


class PinMismatch(Exception):
    """The controller presented a certificate other than the pinned one."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            "the controller's TLS certificate does not match the pinned fingerprint\n"
            f"  pinned:    sha256:{expected}\n"
            f"  presented: sha256:{actual}\n"
            "Refusing to talk to it. If the controller was re-installed, ask its admin for a "
            "new agent config; otherwise someone may be intercepting the connection."
        )
        self.expected = expected
        self.actual = actual


def pinned_client_context() -> ssl.SSLContext:
    """A TLS 1.3 client context for a pinned self-signed peer.

    Chain and host-name checks are off *because* :func:`check_pin` compares the
    certificate's SHA-256 with the pin before a single application byte is sent.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_pin(ssl_object: ssl.SSLObject | ssl.SSLSocket | None, pin: str) -> str:
    """Return the peer certificate's SHA-256; raise :class:`PinMismatch` unless it is ``pin``."""
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    actual = hashlib.sha256(der).hexdigest() if der else "(no certificate)"
    if actual != pin:
        raise PinMismatch(pin, actual)
    return actual
