"""The ``/api`` endpoint: SSH-key authentication, call limits, dispatch through the registry.

Every call is looked up in :data:`controller.api.registry.ROUTES`, which names the roles
allowed to make it; a call outside the caller's role is refused with ``forbidden`` and
audited. Calls overlap on a connection within the bounds of ``controller/guard.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from controller import logs
from controller.api.registry import (
    ROUTES,
    ApiError,
    Caller,
    Context,
    Progress,
    Route,
    Services,
    utcnow,
)
from controller.catalogue import PublishedCatalogue
from controller.findings import default_catalogue
from protocol import codec, signing
from protocol.api import ApiServer, AuthRequested, CallReceived
from protocol.calls import explain
from protocol.errors import AuthError, ErrorCode, ProtocolError

if TYPE_CHECKING:
    from controller.server import Controller

log = logging.getLogger("helpline.api")


class Api:
    """Authenticates API connections and dispatches their calls."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = controller.store
        #: open API connections per user, so that removing a user or changing their role
        #: takes effect at once
        self.connections: dict[str, set[ServerConnection]] = {}
        #: calls in flight per user, over all their connections
        self.in_flight: dict[str, int] = {}
        #: users with a heavy call running or waiting for :attr:`heavy`
        self.heavy_users: set[str] = set()
        self.heavy = asyncio.Lock()
        self.services = Services(
            store=controller.store,
            audit=controller.audit,
            audit_log=controller.audit_log,
            links=controller.links,
            desk=controller.desk,
            home=controller.home.path,
            name=controller.name,
            pepper=controller.pepper,
            revoke=self.revoke,
            fixes=PublishedCatalogue(controller.home.path),
            rules=default_catalogue(),
        )

    async def revoke(self, name: str, reason: str) -> int:
        """Close every open API connection of ``name``; returns how many."""
        connections = self.connections.pop(name, set())
        for connection in connections:
            with contextlib.suppress(ConnectionClosed):
                await connection.close(CloseCode.POLICY_VIOLATION, reason)
        return len(connections)

    async def handle(self, connection: ServerConnection) -> None:
        controller = self.controller
        source = controller.source(connection)
        machine = ApiServer(
            challenge=signing.b64e(os.urandom(24)), controller=controller.name, now=utcnow()
        )
        caller: Caller | None = None
        tasks: set[asyncio.Task[None]] = set()

        async def flush() -> None:
            for message in machine.data_to_send():
                await connection.send(codec.encode(message))

        try:
            await flush()
            async for frame in connection:
                try:
                    events = machine.receive(codec.decode(frame, codec.API_MAX_FRAME))
                except ProtocolError as exc:
                    await controller.protocol_failure(connection, machine.fail, exc, "api")
                    await flush()
                    await connection.close(CloseCode.PROTOCOL_ERROR, exc.code)
                    return
                for event in events:
                    if isinstance(event, AuthRequested):
                        caller = await self._authenticate(machine, event, source)
                        if caller is not None:
                            self.connections.setdefault(caller.user.name, set()).add(connection)
                            controller.logged_in(connection, codec.API_MAX_FRAME)
                    elif isinstance(event, CallReceived) and caller is not None:
                        busy = self._busy(caller, len(tasks))
                        if busy is not None:
                            # refused at once, never queued: a client cannot pile up work
                            machine.reply_error(event.call.id, "busy", busy)
                            continue
                        name = caller.user.name
                        self.in_flight[name] = self.in_flight.get(name, 0) + 1
                        task = asyncio.create_task(
                            self._dispatch(
                                machine,
                                flush,
                                caller,
                                event.call.id,
                                event.call.method,
                                event.call.params,
                            )
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                        task.add_done_callback(functools.partial(self._call_done, name))
                await flush()
                if machine.finished:
                    await connection.close(CloseCode.POLICY_VIOLATION, "authentication failed")
                    return
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                await controller.frame_too_large(connection, "api")
        finally:
            for task in tasks:
                task.cancel()
            if caller is not None:
                self.connections.get(caller.user.name, set()).discard(connection)

    def _busy(self, caller: Caller, on_connection: int) -> str | None:
        """Why another call from ``caller`` is refused now, or None."""
        limits = self.controller.limits
        if on_connection >= limits.calls_per_connection:
            return (
                f"{limits.calls_per_connection} calls are already running on this "
                "connection; wait for one to finish"
            )
        if self.in_flight.get(caller.user.name, 0) >= limits.calls_per_user:
            return (
                f"{caller.user.name} has {limits.calls_per_user} calls running already; "
                "wait for one to finish"
            )
        return None

    def _call_done(self, name: str, _task: object) -> None:
        left = self.in_flight.get(name, 1) - 1
        if left:
            self.in_flight[name] = left
        else:
            self.in_flight.pop(name, None)

    async def _authenticate(
        self, machine: ApiServer, event: AuthRequested, source: str
    ) -> Caller | None:
        import asyncssh

        transcript = signing.transcript(
            signing.API_PURPOSE, machine.challenge, self.controller.cert_sha256
        )
        fingerprint = None
        try:
            key = asyncssh.import_public_key(event.public_key)
            fingerprint = key.get_fingerprint("sha256")
            signature = signing.b64d(event.signature)
            if signature[4:11] == b"ssh-rsa":
                raise ValueError("SHA-1 RSA signatures are not accepted; use rsa-sha2-256")
            verified = key.verify(transcript, signature)
        except (asyncssh.KeyImportError, ValueError, AuthError) as exc:
            verified = False
            log.info("api auth from %s: %s", source, exc)
        user = (
            await self.store.user_by_fingerprint(fingerprint) if verified and fingerprint else None
        )
        if user is None:
            reason = "key not enrolled" if verified else "bad signature"
            await self.controller.hostile.record(
                "auth.failed", source, details={"reason": reason, "key": fingerprint}
            )
            machine.fail(
                _AuthRefused(
                    "this SSH key is not enrolled on this controller: ask an admin to run "
                    "`helpline user add NAME --key FILE.pub`"
                    if verified
                    else "the SSH signature did not verify"
                )
            )
            return None
        await self.controller.audit(
            "auth.ok",
            source=source,
            actor=user.name,
            role=user.role,
            details={"key": fingerprint},
        )
        machine.accept(user.name, user.role, user.level)
        return Caller(user, source)

    async def _dispatch(
        self,
        machine: ApiServer,
        flush: Callable[[], Awaitable[None]],
        caller: Caller,
        call_id: str,
        method: str,
        params: dict[str, Any],
    ) -> None:
        async def progress(stage: str, stream: str | None = None, data: str | None = None) -> None:
            if not machine.finished:  # the technician's connection failed: nobody listens
                machine.progress(call_id, stage, stream, data)
                await flush()

        try:
            route = ROUTES.get(method)
            if route is None:
                raise ApiError(ErrorCode.BAD_REQUEST, f"no such API method: {method}")
            if caller.user.role not in route.roles:
                await self.controller.audit(
                    "api.forbidden",
                    actor=caller.user.name,
                    role=caller.user.role,
                    source=caller.source,
                    details={"method": method},
                )
                raise ApiError(
                    ErrorCode.FORBIDDEN, f"{method} is not allowed for the {caller.user.role} role"
                )
            run = self._runner(route, caller, params, progress)
            result = await (self._heavy(caller, method, run) if route.heavy else run())
            reply: tuple[str, str] | None = None
            outcome = "ok"
        except ApiError as exc:
            reply, outcome = (exc.code, exc.message), exc.code
        except (ConnectionError, ConnectionClosed):
            # an agent that went away mid-request is an answer, not a controller failure
            reply = ("agent_offline", "the agent disconnected before it answered")
            outcome = "agent_offline"
        except TimeoutError:
            reply = ("agent_offline", "the agent did not answer in time")
            outcome = "agent_offline"
        except Exception:  # one bad call must not take the connection down
            # the details (SQL, paths, values) stay in the server's log: the caller gets
            # an id to quote, never the text of the exception
            error_id = os.urandom(4).hex()
            log.exception("API call %s failed (error %s)", method, error_id)
            reply = (
                "internal",
                f"the controller failed to answer {method} (error {error_id}; its log has "
                "the details)",
            )
            outcome = "internal"
        # a call may outlive its connection's protocol (a bad frame failed it meanwhile):
        # then there is nobody to answer
        if not machine.finished:
            if reply is None:
                machine.reply(call_id, result)
            else:
                machine.reply_error(call_id, *reply)
        # the method and its outcome only: params may hold secrets (a webhook's)
        logs.event(
            log,
            "api.call",
            {
                "method": method[:100],
                "user": caller.user.name,
                "source": caller.source,
                "result": outcome,
            },
        )
        with contextlib.suppress(ConnectionClosed):
            await flush()

    def _runner(
        self, route: Route[Any], caller: Caller, params: dict[str, Any], progress: Progress
    ) -> Callable[[], Awaitable[Any]]:
        """The call as a coroutine function: params validated, result dumped for the wire."""
        call_type = route.call
        try:
            call = call_type.model_validate(params)
        except ValidationError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, explain(exc)) from None
        ctx = Context(caller, self.services, progress)

        async def run() -> Any:
            return call_type.dump_result(await route.handler(ctx, call))

        return run

    async def _heavy(self, caller: Caller, method: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run a call that walks whole tables: one per user, one at a time overall."""
        name = caller.user.name
        if name in self.heavy_users:
            raise ApiError(
                "busy",
                f"{method} refused: {name} already has one of {', '.join(heavy_methods())} "
                "running or waiting; try again when it has finished",
            )
        self.heavy_users.add(name)
        try:
            async with self.heavy:  # other users' heavy calls wait their turn, in order
                return await run()
        finally:
            self.heavy_users.discard(name)

    # -- helpers --------------------------------------------------------------------


class _AuthRefused(ProtocolError):
    code = "auth_failed"


def heavy_methods() -> list[str]:
    return sorted(route.method for route in ROUTES.routes.values() if route.heavy)
