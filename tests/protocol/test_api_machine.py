"""The API channel: an ApiClient and an ApiServer talking through the codec."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import codec
from protocol.api import (
    ApiClient,
    ApiClientState,
    ApiServer,
    ApiServerState,
    Authenticated,
    AuthRequested,
    CallReceived,
    ChallengeReceived,
    ProgressReceived,
    ReplyReceived,
)
from protocol.errors import AuthError, LocalProtocolError, RemoteProtocolError
from protocol.machine import Ended, Refused
from protocol.messages import Auth, AuthOk, Call, Error, Hello, Reply
from tests.protocol.wire import CHALLENGE, NOW, Wire

SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBase64KeyMaterialGoesHere alice@laptop"
SSH_SIG = "-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----"


def opened() -> tuple[ApiClient, ApiServer, Wire]:
    client = ApiClient()
    server = ApiServer(challenge=CHALLENGE, controller="hq", now=NOW)
    return client, server, Wire(client, server, max_size=codec.API_MAX_FRAME)


def ready() -> tuple[ApiClient, ApiServer, Wire]:
    """Hello, auth and auth_ok exchanged: both sides READY, nothing queued."""
    client, server, wire = opened()
    wire.deliver(server, client)
    client.authenticate(SSH_KEY, SSH_SIG)
    wire.deliver(client, server)
    server.accept("alice", "technician", "L2")
    wire.deliver(server, client)
    assert client.state is ApiClientState.READY
    assert server.state is ApiServerState.READY
    return client, server, wire


def test_hello_auth_accept_call_progress_reply() -> None:
    client, server, wire = opened()
    assert server.challenge == CHALLENGE

    [event] = wire.deliver(server, client)
    assert isinstance(event, ChallengeReceived)
    assert (event.hello.challenge, event.hello.controller) == (CHALLENGE, "hq")
    assert client.state is ApiClientState.SIGNING

    client.authenticate(SSH_KEY, SSH_SIG)
    assert client.state is ApiClientState.AWAIT_AUTH
    assert wire.deliver(client, server) == [AuthRequested(SSH_KEY, SSH_SIG)]
    assert server.state is ApiServerState.CHECKING

    server.accept("alice", "technician", "L2")
    [event] = wire.deliver(server, client)
    assert isinstance(event, Authenticated)
    assert (event.ok.user, event.ok.role, event.ok.level) == ("alice", "technician", "L2")
    assert client.state is ApiClientState.READY

    call_id = client.call("ticket.list", {"state": "open", "limit": 20})
    [event] = wire.deliver(client, server)
    assert isinstance(event, CallReceived)
    assert event.call.id == call_id
    assert (event.call.method, event.call.params) == ("ticket.list", {"state": "open", "limit": 20})

    server.progress(call_id, "querying")
    [event] = wire.deliver(server, client)
    assert isinstance(event, ProgressReceived)
    assert (event.progress.reply_to, event.progress.stage) == (call_id, "querying")

    server.reply(call_id, {"tickets": [{"id": "T-17"}]})
    [event] = wire.deliver(server, client)
    assert isinstance(event, ReplyReceived)
    assert event.reply.reply_to == call_id
    assert event.reply.ok is True
    assert event.reply.result == {"tickets": [{"id": "T-17"}]}
    assert event.reply.error_code is None

    assert wire.log == ["hello", "auth", "auth_ok", "call", "progress", "reply"]
    assert client.state is ApiClientState.READY and server.state is ApiServerState.READY


def test_the_hello_frame_is_queued_at_construction() -> None:
    server = ApiServer(challenge=CHALLENGE, controller="hq", now=NOW)
    [hello] = server.data_to_send()
    assert isinstance(hello, Hello)
    assert (hello.challenge, hello.server_time) == (CHALLENGE, NOW)
    assert server.data_to_send() == []


def test_accepting_without_a_level() -> None:
    client, server, wire = opened()
    wire.pump()
    client.authenticate(SSH_KEY, SSH_SIG)
    wire.pump()
    server.accept("root", "admin", None)
    [event] = wire.deliver(server, client)
    assert isinstance(event, Authenticated)
    assert event == Authenticated(AuthOk(id=event.ok.id, user="root", role="admin"))
    assert event.ok.level is None


def test_reply_error_carries_a_code_and_message() -> None:
    client, server, wire = ready()
    call_id = client.call("ticket.show", {"id": "T-9"})
    wire.deliver(client, server)
    server.reply_error(call_id, "not_found", "no ticket T-9")
    [event] = wire.deliver(server, client)
    assert isinstance(event, ReplyReceived)
    reply = event.reply
    assert (reply.reply_to, reply.ok, reply.error_code, reply.error) == (
        call_id,
        False,
        "not_found",
        "no ticket T-9",
    )
    assert reply.result is None
    assert client.state is ApiClientState.READY  # a failed call is not a failed connection


def test_overlapping_calls_are_matched_by_reply_to() -> None:
    client, server, wire = ready()
    first = client.call("ticket.list", {})
    second = client.call("agent.ping", {"session": "S-1"})
    assert first != second
    calls = wire.deliver(client, server)
    assert [e.call.id for e in calls if isinstance(e, CallReceived)] == [first, second]
    server.reply(second, "pong")
    server.reply(first, [])
    replies = wire.deliver(server, client)
    assert [
        (e.reply.reply_to, e.reply.result) for e in replies if isinstance(e, ReplyReceived)
    ] == [
        (second, "pong"),
        (first, []),
    ]


def test_a_large_reply_fits_the_api_limit() -> None:
    client, server, wire = ready()
    call_id = client.call("ticket.export", {})
    wire.deliver(client, server)
    server.reply(call_id, "x" * (codec.AGENT_MAX_FRAME + 10))
    [event] = wire.deliver(server, client)
    assert isinstance(event, ReplyReceived)
    assert len(event.reply.result) == codec.AGENT_MAX_FRAME + 10


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["before hello", "signing", "awaiting auth_ok"])
def test_the_client_cannot_call_before_it_is_authenticated(stage: str) -> None:
    client, server, wire = opened()
    if stage != "before hello":
        wire.deliver(server, client)
    if stage == "awaiting auth_ok":
        client.authenticate(SSH_KEY, SSH_SIG)
        wire.deliver(client, server)
    before = client.state
    with pytest.raises(LocalProtocolError, match=f"not allowed in state {before.name}"):
        client.call("ticket.list", {})
    assert client.state is before
    assert client.data_to_send() == []


@pytest.mark.parametrize("authenticating", [False, True], ids=["sent_hello", "checking"])
def test_the_server_refuses_a_call_before_auth(authenticating: bool) -> None:
    client, server, wire = opened()
    wire.deliver(server, client)
    if authenticating:
        client.authenticate(SSH_KEY, SSH_SIG)
        wire.deliver(client, server)
    state = server.state
    with pytest.raises(RemoteProtocolError, match=f"'call' in state {state.name}"):
        server.receive(codec.decode(codec.encode(Call(method="ticket.list"))))
    assert server.state is ApiServerState.FAILED
    [event] = wire.deliver(server, client)
    assert isinstance(event, Refused)
    assert event.code == "remote_protocol_error"
    assert client.state is ApiClientState.FAILED


def test_server_fail_sends_an_error_and_the_client_is_refused() -> None:
    client, server, wire = opened()
    wire.deliver(server, client)
    client.authenticate(SSH_KEY, SSH_SIG)
    wire.deliver(client, server)

    server.fail(AuthError("this key is not enrolled"))
    assert server.state is ApiServerState.FAILED
    assert wire.deliver(server, client) == [Refused("auth_failed", "this key is not enrolled")]
    assert client.state is ApiClientState.FAILED
    assert wire.log[-1] == "error"
    with pytest.raises(LocalProtocolError):
        server.accept("alice", "technician", None)
    with pytest.raises(LocalProtocolError):
        client.call("ticket.list", {})


def test_failing_twice_sends_one_error() -> None:
    _, server, _ = ready()
    server.fail(AuthError("first"))
    server.fail(AuthError("second"))
    frames = server.data_to_send()
    assert len(frames) == 1
    assert isinstance(frames[0], Error)
    assert frames[0].message == "first"


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.accept("alice", "technician", None),
        lambda s: s.progress("c1", "working"),
        lambda s: s.reply("c1", None),
        lambda s: s.reply_error("c1", "oops", "no"),
    ],
    ids=["accept", "progress", "reply", "reply_error"],
)
def test_server_misuse_before_auth_is_a_local_error(call: Callable[[ApiServer], None]) -> None:
    _, server, _ = opened()
    server.data_to_send()
    with pytest.raises(LocalProtocolError, match="ApiServer: not allowed in state SENT_HELLO"):
        call(server)
    assert server.state is ApiServerState.SENT_HELLO
    assert server.data_to_send() == []


def test_authenticating_before_hello_is_a_local_error() -> None:
    client = ApiClient()
    with pytest.raises(LocalProtocolError, match=r"AWAIT_HELLO \(needs SIGNING\)"):
        client.authenticate(SSH_KEY, SSH_SIG)
    assert client.data_to_send() == []


@pytest.mark.parametrize(
    ("side", "message"),
    [
        ("server", Auth(public_key=SSH_KEY, signature=SSH_SIG)),
        ("server", Reply(reply_to="c1", ok=True)),
        ("client", Hello(challenge=CHALLENGE, controller="hq", server_time=NOW)),
        ("client", AuthOk(user="mallory", role="admin")),
        ("client", Call(method="ticket.list")),
    ],
    ids=["auth-again", "reply-to-server", "hello-again", "auth_ok-again", "call-to-client"],
)
def test_unexpected_messages_once_ready_fail_the_connection(side: str, message: Auth) -> None:
    client, server, _ = ready()
    machine = server if side == "server" else client
    with pytest.raises(RemoteProtocolError, match=f"{message.type!r} in state READY"):
        machine.receive(message)
    assert machine.state.name == "FAILED"
    [error] = machine.data_to_send()
    assert isinstance(error, Error)
    assert error.code == "remote_protocol_error"


def test_a_reply_before_auth_is_refused_by_the_client() -> None:
    client, server, wire = opened()
    wire.deliver(server, client)
    with pytest.raises(RemoteProtocolError, match="'reply' in state SIGNING"):
        client.receive(Reply(reply_to="c1", ok=True, result="forged"))
    assert client.state is ApiClientState.FAILED


@pytest.mark.parametrize("ender", ["client", "server"])
def test_either_side_may_end(ender: str) -> None:
    client, server, wire = ready()
    me, peer = (client, server) if ender == "client" else (server, client)
    me.end("bye")
    assert wire.deliver(me, peer) == [Ended("bye", by_peer=True)]
    assert me.state.name == peer.state.name == "ENDED"
    with pytest.raises(RemoteProtocolError, match="after the session finished"):
        peer.receive(Call(method="x"))
