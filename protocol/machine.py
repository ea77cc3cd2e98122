"""The small base every sans-I/O machine shares: a state, an outbox, a dispatch table.

Rules (everything that decides a transition lives in each machine's ``_TABLE``):

* ``receive(message)`` looks up ``(state, message.type)`` in the table. A pair that is not
  there is a :class:`RemoteProtocolError` naming machine, state and type; the machine moves
  to its failed state and queues an ``error`` frame for the peer.
* ``error`` and ``end`` frames are accepted in every non-terminal state.
* Methods the driver calls (``answer_consent``, ``send_request``…) check the state first and
  raise :class:`LocalProtocolError` when it is wrong: that is a bug in the driver.
* Frames to send accumulate until the driver takes them with ``data_to_send()``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.messages import End, Error, Message

S = TypeVar("S", bound=enum.Enum)


@dataclass(frozen=True)
class Refused:
    """The peer refused us (an ``error`` frame), or we refused the peer."""

    code: str
    message: str


@dataclass(frozen=True)
class Ended:
    """The session ended; ``by_peer`` tells who ended it. ``rating_invited``: the peer
    waits for one rating (or our ``end``) before it closes."""

    reason: str
    by_peer: bool
    rating_invited: bool = False


class Machine(Generic[S]):
    """Shared mechanics; subclasses declare ``_TABLE``, ``_ENDED`` and ``_FAILED``."""

    _TABLE: ClassVar[dict[tuple[Any, str], str]]
    _ENDED: ClassVar[Any]
    _FAILED: ClassVar[Any]
    #: the state after an ``end`` that invites a rating (None: the machine has no such state)
    _RATING: ClassVar[Any] = None

    def __init__(self, state: S) -> None:
        self.state: S = state
        self._outgoing: list[Message] = []

    @property
    def finished(self) -> bool:
        """True once the machine reached a terminal state."""
        return self.state in (self._ENDED, self._FAILED)

    def data_to_send(self) -> list[Message]:
        """Frames queued for the peer, in order; the queue is emptied."""
        out, self._outgoing = self._outgoing, []
        return out

    def receive(self, message: Message) -> list[object]:
        """Feed one decoded frame; return the events it produced for the driver."""
        if self.finished:
            raise RemoteProtocolError(
                f"{type(self).__name__}: {message.type!r} after the session finished"
            )
        if isinstance(message, Error):
            self.state = self._FAILED
            return [Refused(message.code, message.message)]
        if isinstance(message, End):
            invited = message.rate and self._RATING is not None
            self.state = self._RATING if invited else self._ENDED
            return [Ended(message.reason, by_peer=True, rating_invited=invited)]
        handler_name = self._TABLE.get((self.state, message.type))
        try:
            if handler_name is None:
                raise RemoteProtocolError(
                    f"{type(self).__name__}: unexpected {message.type!r} in state {self.state.name}"
                )
            handler: Callable[[Message], list[object]] = getattr(self, handler_name)
            return handler(message)
        except RemoteProtocolError as exc:
            self.fail(exc)
            raise

    def fail(self, error: ProtocolError) -> None:
        """Queue an ``error`` frame for ``error`` and move to the failed state."""
        if not self.finished:
            # reasons may quote the peer: clip to what an error frame may carry
            self._outgoing.append(Error(code=error.code[:64], message=error.reason[:2000]))
        self.state = self._FAILED

    def end(self, reason: str) -> None:
        """End the session from our side: queue ``end`` and move to the ended state."""
        if not self.finished:
            self._outgoing.append(End(reason=reason))
        self.state = self._ENDED

    def _expect(self, *states: S) -> None:
        if self.state not in states:
            raise LocalProtocolError(
                f"{type(self).__name__}: not allowed in state {self.state.name}"
                f" (needs {', '.join(s.name for s in states)})"
            )

    def _send(self, messages: Iterable[Message]) -> None:
        self._outgoing.extend(messages)
