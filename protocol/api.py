"""The API channel (technician or admin ↔ controller) as two sans-I/O machines.

::

    client                                  controller
      │            ◄── hello(challenge)         │  SENT_HELLO
      │ auth(ssh public key, signature) ──►     │  CHECKING   (driver verifies, finds the user)
      │            ◄── auth_ok                  │  READY
      │ call(method, params) ──►                │
      │            ◄── progress*, reply         │

SSH signatures are checked by the driver (it owns asyncssh); this module only orders the
conversation. Calls may overlap: each reply names its call in ``reply_to``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from protocol.machine import Machine
from protocol.messages import Auth, AuthOk, Call, Hello, Message, Progress, Reply


@dataclass(frozen=True)
class AuthRequested:
    """Controller: verify ``signature`` over the transcript with ``public_key``."""

    public_key: str
    signature: str


@dataclass(frozen=True)
class CallReceived:
    """Controller: a call to dispatch."""

    call: Call


@dataclass(frozen=True)
class ChallengeReceived:
    """Client: sign ``hello.challenge`` and answer with :meth:`ApiClient.authenticate`."""

    hello: Hello


@dataclass(frozen=True)
class Authenticated:
    """Client: the controller accepted us."""

    ok: AuthOk


@dataclass(frozen=True)
class ReplyReceived:
    """Client: the outcome of a call."""

    reply: Reply


@dataclass(frozen=True)
class ProgressReceived:
    """Client: a running call reports progress."""

    progress: Progress


class ApiServerState(enum.Enum):
    SENT_HELLO = "sent_hello"
    CHECKING = "checking"
    READY = "ready"
    ENDED = "ended"
    FAILED = "failed"


class ApiServer(Machine[ApiServerState]):
    """The controller's view of one API connection."""

    _TABLE: ClassVar = {
        (ApiServerState.SENT_HELLO, "auth"): "_on_auth",
        (ApiServerState.READY, "call"): "_on_call",
    }
    _ENDED = ApiServerState.ENDED
    _FAILED = ApiServerState.FAILED

    def __init__(self, *, challenge: str, controller: str, now: datetime) -> None:
        super().__init__(ApiServerState.SENT_HELLO)
        self.challenge = challenge
        self._send([Hello(challenge=challenge, controller=controller, server_time=now)])

    def _on_auth(self, message: Message) -> list[object]:
        assert isinstance(message, Auth)
        self.state = ApiServerState.CHECKING
        return [AuthRequested(message.public_key, message.signature)]

    def accept(self, user: str, role: str, level: str | None) -> None:
        """The signature verified and the key belongs to an enrolled user."""
        self._expect(ApiServerState.CHECKING)
        self._send([AuthOk(user=user, role=role, level=level)])
        self.state = ApiServerState.READY

    def _on_call(self, message: Message) -> list[object]:
        assert isinstance(message, Call)
        return [CallReceived(message)]

    def progress(
        self, call_id: str, stage: str, stream: str | None = None, data: str | None = None
    ) -> None:
        """Report progress of a running call (with live output, for a fix)."""
        self._expect(ApiServerState.READY)
        self._send(
            [
                Progress.model_validate(
                    {"reply_to": call_id, "stage": stage, "stream": stream, "data": data}
                )
            ]
        )

    def reply(self, call_id: str, result: Any) -> None:
        """Answer a call successfully."""
        self._expect(ApiServerState.READY)
        self._send([Reply(reply_to=call_id, ok=True, result=result)])

    def reply_error(self, call_id: str, code: str, message: str) -> None:
        """Answer a call with an error the CLI turns into a message and exit code."""
        self._expect(ApiServerState.READY)
        self._send([Reply(reply_to=call_id, ok=False, error_code=code, error=message)])


class ApiClientState(enum.Enum):
    AWAIT_HELLO = "await_hello"
    SIGNING = "signing"
    AWAIT_AUTH = "await_auth"
    READY = "ready"
    ENDED = "ended"
    FAILED = "failed"


class ApiClient(Machine[ApiClientState]):
    """The technician's view of an API connection."""

    _TABLE: ClassVar = {
        (ApiClientState.AWAIT_HELLO, "hello"): "_on_hello",
        (ApiClientState.AWAIT_AUTH, "auth_ok"): "_on_auth_ok",
        (ApiClientState.READY, "reply"): "_on_reply",
        (ApiClientState.READY, "progress"): "_on_progress",
    }
    _ENDED = ApiClientState.ENDED
    _FAILED = ApiClientState.FAILED

    def __init__(self) -> None:
        super().__init__(ApiClientState.AWAIT_HELLO)

    def _on_hello(self, message: Message) -> list[object]:
        assert isinstance(message, Hello)
        self.state = ApiClientState.SIGNING
        return [ChallengeReceived(message)]

    def authenticate(self, public_key: str, signature: str) -> None:
        """Send our key and signature over the challenge."""
        self._expect(ApiClientState.SIGNING)
        self._send([Auth(public_key=public_key, signature=signature)])
        self.state = ApiClientState.AWAIT_AUTH

    def _on_auth_ok(self, message: Message) -> list[object]:
        assert isinstance(message, AuthOk)
        self.state = ApiClientState.READY
        return [Authenticated(message)]

    def call(self, method: str, params: dict[str, Any]) -> str:
        """Queue a call; returns its id, which the reply will name."""
        self._expect(ApiClientState.READY)
        call = Call(method=method, params=params)
        self._send([call])
        return call.id

    def _on_reply(self, message: Message) -> list[object]:
        assert isinstance(message, Reply)
        return [ReplyReceived(message)]

    def _on_progress(self, message: Message) -> list[object]:
        assert isinstance(message, Progress)
        return [ProgressReceived(message)]
