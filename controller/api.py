"""The ``/api`` endpoint: SSH-key authentication, role checks, and the call table.

Every call is looked up in ``METHODS``, which names the roles allowed to make it; a call
outside the caller's role is refused with ``forbidden`` and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from controller import codes, logs
from controller.store import Attachment, Session, Ticket, User
from protocol import codec, signing
from protocol.api import ApiServer, AuthRequested, CallReceived
from protocol.errors import AuthError, ProtocolError
from protocol.messages import Ping

if TYPE_CHECKING:
    from controller.server import Controller

log = logging.getLogger("helpline.api")

ROLES = ("admin", "technician", "auditor")
#: calls that walk whole tables: one at a time controller-wide, one per user at all
HEAVY = frozenset({"audit.verify", "audit.export", "audit.list", "report.kpi"})
LEVELS = ("L1", "L2", "L3")
PRIORITIES = ("P1", "P2", "P3", "P4")


class ApiError(Exception):
    """A refused or failed call; ``code`` maps to the CLI's exit status."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Caller:
    user: User
    source: str


Handler = Callable[
    ["Api", Caller, dict[str, Any], Callable[[str], Awaitable[None]]], Awaitable[Any]
]


def utcnow() -> datetime:
    return datetime.now(UTC)


#: the largest id or count the store holds (a 64-bit signed integer)
ID_MAX = 2**63 - 1


def parse_id(value: object, name: str, prefix: str, what: str) -> int:
    """``PREFIX-<n>``, ``<n>`` or an int, as a positive id the store can hold."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError("bad_request", f"{name}: not {what} id (expected {prefix}-<number>)")
    text = str(value).strip().upper().removeprefix(f"{prefix}-")
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or not 0 < int(text) <= ID_MAX:
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "…"
        raise ApiError(
            "bad_request", f"{name}: not {what} id: {shown} (expected {prefix}-<number>)"
        )
    return int(text)


def parse_ticket_id(value: object, name: str = "ticket") -> int:
    return parse_id(value, name, "T", "a ticket")


def _text(params: dict[str, Any], key: str, *, limit: int = 500) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError("bad_request", f"{key} is required, as text")
    if len(value) > limit:
        raise ApiError("bad_request", f"{key} is longer than {limit} characters")
    if "\x00" in value:
        raise ApiError("bad_request", f"{key} contains a NUL character")
    return value.strip()


def optional_text(params: dict[str, Any], key: str, *, limit: int = 500) -> str | None:
    """A parameter that may be absent (or null or empty); if given, text within ``limit``."""
    if params.get(key) in (None, ""):
        return None
    return _text(params, key, limit=limit)


def whole_number(params: dict[str, Any], key: str, default: int, low: int, high: int) -> int:
    """An integer parameter within ``low``…``high`` (booleans are not numbers)."""
    value = params.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError("bad_request", f"{key} must be a whole number from {low} to {high}")
    return value


def session_json(session: Session, connected: bool) -> dict[str, Any]:
    return {
        "id": session.id,
        "ticket": f"T-{session.ticket_id}",
        "agent": session.agent_id,
        "technician": session.technician,
        "scopes": list(session.scopes),
        "state": session.state,
        "connected": connected,
        "created_at": session.created_at.isoformat(),
        "expires_at": session.expires_at.isoformat(),
        "ended_at": session.ended_at.isoformat() if session.ended_at else None,
        "end_reason": session.end_reason,
    }


def attachment_json(attachment: Attachment) -> dict[str, Any]:
    return {
        "id": attachment.id,
        "kind": attachment.kind,
        "ok": attachment.ok,
        "session": attachment.session_id,
        "request": attachment.request_id,
        "created_at": attachment.created_at.isoformat(),
        "produced_at": attachment.produced_at.isoformat() if attachment.produced_at else None,
        "data": attachment.data,
    }


def user_json(user: User) -> dict[str, Any]:
    return {
        "name": user.name,
        "role": user.role,
        "level": user.level,
        "fingerprint": user.fingerprint,
        "created_at": user.created_at.isoformat(),
    }


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
            entry = METHODS.get(method)
            if entry is None:
                raise ApiError("bad_request", f"no such API method: {method}")
            handler, roles = entry
            if caller.user.role not in roles:
                await self.controller.audit(
                    "api.forbidden",
                    actor=caller.user.name,
                    role=caller.user.role,
                    source=caller.source,
                    details={"method": method},
                )
                raise ApiError(
                    "forbidden", f"{method} is not allowed for the {caller.user.role} role"
                )
            if method in HEAVY:
                result = await self._heavy(
                    caller, method, lambda: handler(self, caller, params, progress)
                )
            else:
                result = await handler(self, caller, params, progress)
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

    async def _heavy(self, caller: Caller, method: str, run: Callable[[], Awaitable[Any]]) -> Any:
        """Run a call that walks whole tables: one per user, one at a time overall."""
        name = caller.user.name
        if name in self.heavy_users:
            raise ApiError(
                "busy",
                f"{method} refused: {name} already has one of {', '.join(sorted(HEAVY))} "
                "running or waiting; try again when it has finished",
            )
        self.heavy_users.add(name)
        try:
            async with self.heavy:  # other users' heavy calls wait their turn, in order
                return await run()
        finally:
            self.heavy_users.discard(name)

    # -- helpers --------------------------------------------------------------------

    async def _ticket(self, params: dict[str, Any]) -> Ticket:
        ticket_id = parse_ticket_id(params.get("ticket"))
        ticket = await self.store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError("not_found", f"there is no ticket T-{ticket_id}")
        return ticket

    # -- methods --------------------------------------------------------------------

    async def whoami(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        return user_json(caller.user)

    async def ticket_show(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        # the ticket methods live in controller/tickets_api.py; this one stays here
        # because controller/diag_api.py builds its ticket.show (with findings) on it
        from controller.tickets_api import show_ticket

        return await show_ticket(self, caller, params)

    async def code_issue(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        ticket = await self._ticket(params)
        if ticket.state == "closed":
            # a session would put work on a ticket whose record (and KPIs) are final
            raise ApiError(
                "conflict",
                f"T-{ticket.id} is closed and closed tickets are final: open a new ticket "
                f"with `--link follows:T-{ticket.id}` and issue the code for that one",
            )
        seconds = params.get("seconds", 600)
        if not isinstance(seconds, int) or not 1 <= seconds <= 86_400:
            raise ApiError("bad_request", "a code lives from 1 second to 24 hours")
        code = codes.new_code()
        canonical = codes.normalise(code)
        assert canonical is not None
        now = utcnow()
        expires_at = now + timedelta(seconds=seconds)
        await self.store.add_code(
            codes.code_hash(self.controller.pepper, canonical),
            ticket.id,
            caller.user.name,
            now,
            expires_at,
        )
        await self.controller.audit(
            "code.issued",
            actor=caller.user.name,
            role=caller.user.role,
            source=caller.source,
            ticket_id=ticket.id,
            details={"expires_at": expires_at.isoformat()},
        )
        from controller.artefacts import kinds

        return {
            "code": code,
            "ticket": f"T-{ticket.id}",
            "expires_at": expires_at.isoformat(),
            # the agents built here, newest kind first: the CLI prints their join commands
            "agents": kinds(self.controller.home.path),
        }

    async def sessions_list(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        sessions = await self.store.list_sessions(live_only=not params.get("all", False))
        return [session_json(s, s.id in self.controller.links) for s in sessions]

    async def session_end(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        """End every open session on a ticket: the work is done, or consent should stop.

        A connected agent is told at once and its customer may rate the session; a
        session whose agent is offline is ended in the store, so it can never resume.
        """
        ticket = await self._ticket(params)
        reason = optional_text(params, "reason", limit=200) or f"ended by {caller.user.name}"
        ended: list[dict[str, Any]] = []
        for link in [x for x in self.controller.links.values() if x.ticket_id == ticket.id]:
            await self.controller.finish_session(link, reason, by=caller.user.name)
            ended.append({"session": link.session_id, "connected": True})
        done = {entry["session"] for entry in ended}
        for session in await self.store.list_sessions(live_only=True):
            if session.ticket_id != ticket.id or session.id in done:
                continue
            await self.store.end_session(session.id, reason, utcnow())
            await self.controller.audit(
                "session.ended",
                actor=caller.user.name,
                role=caller.user.role,
                source=caller.source,
                session_id=session.id,
                ticket_id=ticket.id,
                agent_id=session.agent_id,
                details={"reason": reason, "connected": False},
            )
            ended.append({"session": session.id, "connected": False})
        if not ended:
            raise ApiError("not_found", f"T-{ticket.id} has no open session")
        return {"ticket": f"T-{ticket.id}", "reason": reason, "ended": ended}

    async def agent_ping(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        # the hot path: no query unless there is no agent to ask
        ticket_id = parse_ticket_id(params.get("ticket"))
        link = self.controller.link_for_ticket(ticket_id)
        if link is None:
            await self._ticket(params)
            raise ApiError("no_agent", f"no agent is connected to T-{ticket_id}")
        started = time.monotonic()
        result = await link.request(Ping(), 10.0)
        # the controller-to-agent leg alone, so a slow ping says which half is slow
        return {"ok": result.ok, "agent_ms": round((time.monotonic() - started) * 1000, 3)}

    async def user_add(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        import asyncssh

        name = _text(params, "name", limit=100)
        role, level = _role_and_level(params)
        try:
            key = asyncssh.import_public_key(_text(params, "public_key", limit=16384))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise ApiError("bad_request", f"not an SSH public key: {exc}") from None
        try:
            user = await self.store.add_user(
                name,
                role,
                level,
                key.export_public_key().decode().strip(),
                key.get_fingerprint("sha256"),
                utcnow(),
            )
        except ValueError as exc:
            raise ApiError("conflict", str(exc)) from None
        await self.controller.audit(
            "user.added",
            actor=caller.user.name,
            role=caller.user.role,
            source=caller.source,
            details={"user": name, "new_role": role, "level": level, "key": user.fingerprint},
        )
        return user_json(user)

    async def user_list(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        return [user_json(user) for user in await self.store.list_users()]

    async def audit_list(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        ticket = parse_ticket_id(params["ticket"]) if params.get("ticket") else None
        since_text = optional_text(params, "since", limit=100)
        since = parse_since(since_text) if since_text else None
        from controller.audit import EVENT_TYPES, ROUTINE_TYPES, match_types

        types = None
        type_pattern = optional_text(params, "type", limit=1000)
        if type_pattern:
            # a type no longer written still names its old events
            known = EVENT_TYPES | await self.store.audit_types()
            try:
                types = match_types(type_pattern, known)
            except ValueError as exc:
                raise ApiError("bad_request", str(exc)) from None
        events = await self.store.audit_events(
            types=types,
            hide_types=() if params.get("all") or types is not None else ROUTINE_TYPES,
            ticket_id=ticket,
            session_id=optional_text(params, "session", limit=100),
            actor=optional_text(params, "actor", limit=200),
            since=since,
            limit=whole_number(params, "limit", 1000, 1, 100_000),
        )
        return [
            {
                "seq": e.id,
                "at": e.at.isoformat(),
                "type": e.type,
                "actor": e.actor,
                "role": e.role,
                "source": e.source,
                "ticket": f"T-{e.ticket_id}" if e.ticket_id else None,
                "session": e.session_id,
                "agent": e.agent_id,
                "details": e.details,
            }
            for e in events
        ]

    async def audit_verify(
        self, caller: Caller, params: dict[str, Any], progress: Callable[[str], Awaitable[None]]
    ) -> Any:
        await progress("walking the audit chain")
        report = await self.controller.audit_log.verify()
        await self.controller.audit(
            "audit.verified",
            actor=caller.user.name,
            role=caller.user.role,
            source=caller.source,
            details={"ok": report.ok, "events": report.events, "problem": report.problem},
        )
        return {**report.as_json(), "signing": self.controller.audit_log.status()}

    async def audit_accept(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        from controller.audit import AuditNothingToAccept, AuditTampered

        reason = _text(params, "reason", limit=500)
        try:
            accepted = await self.controller.audit_log.accept(
                actor=caller.user.name, role=caller.user.role, source=caller.source, reason=reason
            )
        except AuditNothingToAccept as exc:
            raise ApiError("conflict", str(exc)) from None
        except AuditTampered as exc:
            raise ApiError("tampered", str(exc)) from None
        checkpoint = accepted["checkpoint"]
        return {
            "accepted_seq": accepted["accepted"],
            "problem": accepted["problem"],
            "signed_seq": checkpoint.seq if checkpoint is not None else None,
        }

    async def audit_pubkey(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        from controller.audit import public_text

        return {"public_key": public_text(self.controller.audit_log.key.public_key())}

    async def audit_export(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        from controller import auditchain

        after = params.get("after", 0)
        until = params.get("until")
        limit = params.get("limit", 5000)
        if not isinstance(after, int) or not isinstance(limit, int) or not 1 <= limit <= 20_000:
            raise ApiError("bad_request", "after and limit must be whole numbers")
        page: dict[str, Any] = {}
        if after == 0:
            # the export covers the chain as it is now, under a fresh checkpoint
            from controller.audit import AuditTampered

            log = self.controller.audit_log
            try:
                await log.checkpoint()
            except AuditTampered as exc:
                raise ApiError("tampered", str(exc)) from None
            seq, head = await self.store.audit_head()
            until = seq
            # checkpoints an admin's acceptance set aside stay out: the export verifies alone
            superseded = await log.superseded()
            checkpoints = [
                c
                for c in await self.store.audit_checkpoints()
                if c.seq <= seq and (c.seq, c.head) not in superseded
            ]
            page["header"] = auditchain.export_header(
                log.key,
                controller=self.controller.name,
                exported_at=utcnow(),
                head_seq=seq,
                head=head,
                checkpoints=checkpoints,
            )
            page["checkpoints"] = [c.as_json() for c in checkpoints]
            await self.controller.audit(
                "audit.exported",
                actor=caller.user.name,
                role=caller.user.role,
                source=caller.source,
                details={"head_seq": seq},
            )
        if not isinstance(until, int):
            raise ApiError("bad_request", "until is required after the first page")
        links = await self.store.audit_links(
            after, min(limit, max(until - after, 0)), check_columns=False
        )
        page["until"] = until
        page["links"] = [
            {"seq": x.seq, "prev": x.prev, "hash": x.hash, "record": x.record} for x in links
        ]
        return page

    async def user_remove(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        name = _text(params, "name", limit=100)
        if name == caller.user.name:
            raise ApiError("bad_request", "you cannot remove yourself; ask another admin")
        removed = await self.store.remove_user(name, utcnow())
        if removed is None:
            raise ApiError("not_found", f"there is no user {name!r}")
        closed = await self.revoke(name, "access revoked")
        await self.controller.audit(
            "user.removed",
            actor=caller.user.name,
            role=caller.user.role,
            source=caller.source,
            details={"user": name, "key": removed.fingerprint, "connections_closed": closed},
        )
        return {**user_json(removed), "connections_closed": closed}

    async def user_set_role(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        name = _text(params, "name", limit=100)
        role, level = _role_and_level(params)
        before = next((u for u in await self.store.list_users() if u.name == name), None)
        if before is None:
            raise ApiError("not_found", f"there is no user {name!r}")
        updated = await self.store.set_role(name, role, level)
        assert updated is not None
        closed = await self.revoke(name, "role changed: log in again")
        await self.controller.audit(
            "user.role_changed",
            actor=caller.user.name,
            role=caller.user.role,
            source=caller.source,
            details={
                "user": name,
                "from": [before.role, before.level],
                "to": [role, level],
                "connections_closed": closed,
            },
        )
        return user_json(updated)


def parse_since(text: str, name: str = "since") -> datetime:
    """An age (``30m``, ``24h``, ``7d``, ``1d12h``: :mod:`controller.durations`) ago, or an
    ISO-8601 time."""
    from controller.durations import DurationError, parse_seconds

    if not text.isdigit():  # 20260401 is a basic-format ISO date, not an age in seconds
        try:
            return utcnow() - timedelta(seconds=parse_seconds(text))
        except (DurationError, OverflowError):
            pass
    try:
        moment = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        shown = text if len(text) <= 40 else text[:40] + "…"
        raise ApiError(
            "bad_request",
            f"{name}: not a time or age: {shown!r} (an ISO time, or an age: 30m, 24h, 7d, 1d12h)",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _role_and_level(params: dict[str, Any]) -> tuple[str, str | None]:
    role = str(params.get("role", "technician"))
    level = params.get("level")
    if role not in ROLES:
        raise ApiError("bad_request", f"role must be one of {', '.join(ROLES)}")
    if role == "technician":
        level = str(level or "L1").upper()
        if level not in LEVELS:
            raise ApiError("bad_request", f"level must be one of {', '.join(LEVELS)}")
        return role, level
    if level:
        raise ApiError("bad_request", "only technicians have a support level")
    return role, None


class _AuthRefused(ProtocolError):
    code = "auth_failed"


_ALL = ("admin", "technician", "auditor")
_WORK = ("admin", "technician")
_ADMIN = ("admin",)
_AUDIT = ("admin", "auditor")

METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {
    "whoami": (Api.whoami, _ALL),
    "ticket.show": (Api.ticket_show, _ALL),
    "code.issue": (Api.code_issue, _WORK),
    "sessions.list": (Api.sessions_list, _ALL),
    "agent.ping": (Api.agent_ping, _WORK),
    "session.end": (Api.session_end, _WORK),
    "user.add": (Api.user_add, _ADMIN),
    "user.list": (Api.user_list, _AUDIT),
    "audit.list": (Api.audit_list, _AUDIT),
    "audit.verify": (Api.audit_verify, _AUDIT),
    "audit.export": (Api.audit_export, _AUDIT),
    "audit.pubkey": (Api.audit_pubkey, _AUDIT),
    "audit.accept": (Api.audit_accept, _ADMIN),
    "user.remove": (Api.user_remove, _ADMIN),
    "user.set_role": (Api.user_set_role, _ADMIN),
}


# diag.run, diag.diff, diag.collectors and ticket.show with findings
from controller.diag_api import METHODS as _DIAG  # noqa: E402 - needs the names above

METHODS.update(_DIAG)

# fixes.publish, fixes.list, fix.run
from controller.fixes_api import METHODS as _FIXES  # noqa: E402 - needs the names above

METHODS.update(_FIXES)

# ticket.* (but ticket.show, above), sla.policy, report.kpi, kb.*, webhook.*
from controller.tickets_api import TICKET_METHODS  # noqa: E402 - needs the names above

METHODS.update(TICKET_METHODS)
