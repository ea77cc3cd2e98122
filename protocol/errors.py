"""One error tree for the protocol layer.

::

    ProtocolError                  base: something broke the rules of the wire
    ├── LocalProtocolError         we were asked to do something the state forbids
    └── RemoteProtocolError        the peer sent something we cannot accept
        ├── FrameTooLarge          the frame is over the codec's hard limit
        ├── MalformedFrame         not JSON, or JSON that does not fit the envelope
        └── UnknownMessageType     a ``type`` this version does not know

    AuthError                      a signature, key or code did not check out

Every error carries a short machine-readable ``code`` (sent to the peer in an ``error``
message) and a human ``reason``.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """Base of every protocol-layer failure."""

    code = "protocol_error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocalProtocolError(ProtocolError):
    """We tried an event that the current state does not allow."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the current state does not allow."""

    code = "remote_protocol_error"


class FrameTooLarge(RemoteProtocolError):
    """A frame is larger than the codec accepts."""

    code = "frame_too_large"


class MalformedFrame(RemoteProtocolError):
    """A frame is not valid JSON or does not fit the envelope."""

    code = "malformed_frame"


class UnknownMessageType(RemoteProtocolError):
    """A frame names a message type this protocol version does not know."""

    code = "unknown_type"


class AuthError(ProtocolError):
    """A signature, key or session code failed to verify."""

    code = "auth_failed"
