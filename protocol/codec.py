"""Frames to messages and back, with a hard size limit checked before any parsing."""

from __future__ import annotations

from typing import Final

from pydantic import TypeAdapter, ValidationError

from protocol.errors import FrameTooLarge, MalformedFrame, UnknownMessageType
from protocol.messages import Message

#: Agent frames carry snapshots and results; 1 MiB is far above any real one.
AGENT_MAX_FRAME: Final = 1 << 20
#: API replies may carry a whole ticket with its attachments.
API_MAX_FRAME: Final = 8 << 20
#: Before a peer has logged in: a join, a resume or an API auth (an RSA-16384 key and its
#: signature are under 6 KiB). A flood of anonymous frames cannot cost memory.
PREAUTH_MAX_FRAME: Final = 16 << 10

_ADAPTER: Final[TypeAdapter[Message]] = TypeAdapter(Message)


def encode(message: Message) -> str:
    """Serialise one message to its JSON frame."""
    return message.model_dump_json()


def decode(frame: str | bytes, max_size: int = AGENT_MAX_FRAME) -> Message:
    """Parse one frame, refusing anything oversized, malformed or of unknown type."""
    size = len(frame)
    if isinstance(frame, str) and size * 4 > max_size:
        # UTF-8 needs at most 4 bytes a character: encode only frames that could be too big
        size = len(frame.encode("utf-8", "surrogatepass"))
    if size > max_size:
        raise FrameTooLarge(f"frame of {size} bytes exceeds the limit of {max_size}")
    try:
        return _ADAPTER.validate_json(frame)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        first = errors[0] if errors else {"type": "unknown", "msg": str(exc), "loc": ()}
        if first["type"] == "union_tag_invalid":
            raise UnknownMessageType(f"unknown message type: {first['msg'][:120]}") from None
        where = ".".join(str(part) for part in first["loc"])[:120] or "frame"
        raise MalformedFrame(f"{where}: {first['msg'][:200]}") from None
