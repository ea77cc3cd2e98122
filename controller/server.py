"""The controller server: one websockets server over TLS 1.3 with two endpoints.

``/agent`` is where customer agents dial in (:mod:`controller.agents`); ``/api`` is where
technicians and admins connect (:mod:`controller.api`). ``Controller`` wires them to the
shared pieces (store, audit log, desk, the live links of :mod:`controller.links`) and
guards the door: who may wait to log in, for how long, and what a broken frame costs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from controller.agents import AgentEndpoint, GrantSettings
from controller.audit import AuditLog
from controller.guard import AuditThrottle, Limits, PreauthGate
from controller.home import ControllerHome
from controller.links import AgentLink, Links
from controller.store import Store
from controller.tickets.desk import TicketDesk
from protocol.errors import ProtocolError

log = logging.getLogger("helpline.controller")

HEARTBEAT_SECONDS = float(os.environ.get("HELPLINE_HEARTBEAT", "20"))


class GatedConnection(ServerConnection):
    """A server connection that gives back its pre-login slot however it ends.

    ``connection_lost`` runs for every accepted connection, including those whose
    websocket handshake failed after ``process_request`` counted them in.
    """

    gate: PreauthGate | None = None
    login_timer: asyncio.TimerHandle | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.login_timer is not None:
            self.login_timer.cancel()
        if self.gate is not None:
            self.gate.release(self)


class ApiEndpoint(Protocol):
    """What serves ``/api`` (``controller.api.Api``): one authenticated connection at a time."""

    async def handle(self, connection: ServerConnection) -> None: ...


class Controller:
    """One controller process: the door (waiting to log in, login deadlines, hostile
    events) and the wiring of both endpoints to the store, audit log, desk and links."""

    def __init__(
        self,
        home: ControllerHome,
        store: Store,
        *,
        name: str,
        audit_log: AuditLog,
        api: Callable[[Controller], ApiEndpoint],
        settings: GrantSettings | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.home = home
        self.store = store
        self.audit_log = audit_log
        self.name = name
        self.settings = settings or GrantSettings()
        self.cert_sha256 = home.pin()
        self.pepper = home.pepper()
        self.limits = limits or Limits()
        #: connections that have not joined, resumed or authenticated yet
        self.gate = PreauthGate(self.limits.preauth_per_source, self.limits.preauth_total)
        #: hostile events from one source: the first audited, then one row per interval
        self.hostile = AuditThrottle(self.audit, self.limits.report_interval)
        self.api_connections: set[ServerConnection] = set()
        #: connections that missed their login deadline, being closed
        self._closing: set[asyncio.Task[None]] = set()
        #: tickets under SLA: lifecycle, SLA monitor, webhook delivery (controller/tickets)
        self.desk = TicketDesk.for_home(home.path, store, audit=self.audit)
        #: the live agent connections, by session and by ticket
        self.links = Links(store, self.audit, self.desk)
        self.agents = AgentEndpoint(
            name=name,
            cert_sha256=self.cert_sha256,
            pepper=self.pepper,
            settings=self.settings,
            store=store,
            links=self.links,
            desk=self.desk,
            audit=self.audit,
            hostile=self.hostile,
            door=self,
        )
        #: the /api endpoint, made by the caller: the API depends on the server, not back
        self.api = api(self)

    # -- routing --------------------------------------------------------------------

    async def process_request(
        self, connection: ServerConnection, request: Request
    ) -> Response | None:
        if request.path not in ("/agent", "/api"):
            return connection.respond(404, "helpline serves /agent and /api only\n")
        # Refused here, before a websocket or a handler exists: a flood of connections
        # that never log in costs a TLS handshake each and cannot hold file descriptors.
        source = self.source(connection)
        refusal = self.gate.admit(connection, source)
        if refusal is not None:
            await self.hostile.record(
                "connection.refused",
                source,
                details={"endpoint": request.path, "reason": refusal, "waiting": self.gate.pending},
            )
            response = connection.respond(503, refusal + "\n")
            response.headers["Retry-After"] = "10"
            return response
        if isinstance(connection, GatedConnection):
            connection.gate = self.gate
            connection.login_timer = asyncio.get_running_loop().call_later(
                self.limits.login_timeout, self._login_expired, connection, request.path
            )
        return None

    def logged_in(self, connection: ServerConnection, max_frame: int) -> None:
        """The peer proved who it is: no login deadline, and its full frame limit.

        Until now websockets refused any frame over :data:`codec.PREAUTH_MAX_FRAME` before
        buffering it. The new limit applies from the next frame: the parser reads each
        limit when a frame begins, and a client sends nothing between its login and our
        answer to it.
        """
        if isinstance(connection, GatedConnection) and connection.login_timer is not None:
            connection.login_timer.cancel()
            connection.login_timer = None
        self.gate.release(connection)
        connection.protocol.max_message_size = max_frame

    def _login_expired(self, connection: ServerConnection, endpoint: str) -> None:
        task = asyncio.create_task(self._close_unauthenticated(connection, endpoint))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_unauthenticated(self, connection: ServerConnection, endpoint: str) -> None:
        """Close a connection that did not log in within the deadline."""
        self.gate.release(connection)
        source = self.source(connection)  # gone once the transport is
        seconds = self.limits.login_timeout
        try:
            # a peer that ignores the close frame holds its descriptor no longer than this
            async with asyncio.timeout(2.0):
                await connection.close(CloseCode.POLICY_VIOLATION, f"log in within {seconds:g} s")
        except TimeoutError:
            connection.transport.abort()
        await self.hostile.record(
            "connection.timed_out",
            source,
            details={"endpoint": endpoint, "login_timeout_s": seconds},
        )

    async def handle(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        if connection.request.path == "/agent":
            await self.agents.handle(connection)
        else:
            self.api_connections.add(connection)
            try:
                await self.api.handle(connection)
            finally:
                self.api_connections.discard(connection)

    async def audit(self, type: str, **fields: Any) -> None:
        """Record a security-relevant event; returns once it is durable."""
        await self.audit_log.append(type, **fields)

    @staticmethod
    def source(connection: ServerConnection) -> str:
        address = connection.remote_address
        return str(address[0]) if address else "unknown"

    async def protocol_failure(
        self, connection: ServerConnection, machine_fail: Any, exc: ProtocolError, endpoint: str
    ) -> None:
        """Answer a broken frame: error to the peer, audit, close with 1002."""
        machine_fail(exc)
        await self.hostile.record(
            "protocol.error",
            self.source(connection),
            details={"endpoint": endpoint, "code": exc.code, "reason": exc.reason},
        )

    async def frame_too_large(self, connection: ServerConnection, endpoint: str) -> None:
        """Audit a frame websockets refused with 1009 before buffering it."""
        limit = connection.protocol.max_message_size
        await self.hostile.record(
            "protocol.error",
            self.source(connection),
            details={
                "endpoint": endpoint,
                "code": "frame_too_large",
                "reason": f"a frame over {limit} bytes",
            },
        )

    async def report_hostile(self) -> None:
        """Write the aggregated hostile-event rows as their intervals end."""
        while True:
            await asyncio.sleep(self.limits.report_interval / 4)
            try:
                await self.hostile.flush(time.monotonic())
            except Exception:  # a failed write is retried next time, never ends the task
                log.exception("cannot write the aggregated audit rows; retrying")

    def link_for_ticket(self, ticket_id: int) -> AgentLink | None:
        """The most recently connected live link on a ticket (for the handlers that do not
        take their services from the call registry yet)."""
        return self.links.link_for_ticket(ticket_id)


__all__ = [
    "HEARTBEAT_SECONDS",
    "AgentLink",
    "ApiEndpoint",
    "Controller",
    "GatedConnection",
    "GrantSettings",
]
