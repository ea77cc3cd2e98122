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

from enum import StrEnum


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


class ErrorCode(StrEnum):
    """Every refusal code a reply can carry, and the client's own failures.

    Members are strings, so a code read off the wire compares equal to its member. The CLI
    maps each to an exit status (``controller/cli/output.py``).
    """

    #: a parameter is missing, of the wrong kind or out of range; the message names it
    BAD_REQUEST = "bad_request"
    NOT_FOUND = "not_found"
    #: the caller's role may not make this call
    FORBIDDEN = "forbidden"
    #: the thing exists already, or its state does not allow the change
    CONFLICT = "conflict"
    #: too many calls in flight, or a heavy call already running
    BUSY = "busy"
    #: the controller failed; the message carries an error id for its log
    INTERNAL = "internal"
    #: the audit chain does not verify, or signing stopped
    TAMPERED = "tampered"
    #: no agent is connected to the ticket
    NO_AGENT = "no_agent"
    #: the agent went away or did not answer in time
    AGENT_OFFLINE = "agent_offline"
    AUTH_FAILED = "auth_failed"
    # the client's own, never sent by the controller
    UNREACHABLE = "unreachable"
    PIN_MISMATCH = "pin_mismatch"
    PROTOCOL = "protocol"
    NOT_CONFIGURED = "not_configured"
