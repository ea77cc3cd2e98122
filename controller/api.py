"""The ``/api`` endpoint: SSH-key authentication, role checks, and the call table.

Every call is looked up in ``METHODS``, which names the roles allowed to make it; a call
outside the caller's role is refused with ``forbidden`` and audited.
"""

from __future__ import annotations

import asyncio
import contextlib
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

from controller import codes
from controller.store import Attachment, Session, Ticket, User
from protocol import codec, signing
from protocol.api import ApiServer, AuthRequested, CallReceived
from protocol.errors import AuthError, ProtocolError
from protocol.messages import Ping

if TYPE_CHECKING:
    from controller.server import Controller

log = logging.getLogger("helpline.api")

ROLES = ("admin", "technician", "auditor")
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


def parse_ticket_id(value: object) -> int:
    text = str(value).strip().upper()
    if text.startswith("T-"):
        text = text[2:]
    if not text.isdigit():
        raise ApiError("bad_request", f"not a ticket id: {value!r} (expected T-<number>)")
    return int(text)


def _text(params: dict[str, Any], key: str, *, limit: int = 500) -> str:
    value = params.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ApiError("bad_request", f"{key} is required")
    if len(value) > limit:
        raise ApiError("bad_request", f"{key} is longer than {limit} characters")
    return value.strip()


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
                    elif isinstance(event, CallReceived) and caller is not None:
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
                await flush()
                if machine.finished:
                    await connection.close(CloseCode.POLICY_VIOLATION, "authentication failed")
                    return
        except ConnectionClosed:
            pass
        finally:
            for task in tasks:
                task.cancel()
            if caller is not None:
                self.connections.get(caller.user.name, set()).discard(connection)

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
            await self.controller.audit(
                "auth.failed", source=source, details={"reason": reason, "key": fingerprint}
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
            result = await handler(self, caller, params, progress)
            machine.reply(call_id, result)
        except ApiError as exc:
            machine.reply_error(call_id, exc.code, exc.message)
        except Exception as exc:  # one bad call must not take the connection down
            log.exception("API call %s failed", method)
            machine.reply_error(call_id, "internal", f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(ConnectionClosed):
            await flush()

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
        return {"code": code, "ticket": f"T-{ticket.id}", "expires_at": expires_at.isoformat()}

    async def sessions_list(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        sessions = await self.store.list_sessions(live_only=not params.get("all", False))
        return [session_json(s, s.id in self.controller.links) for s in sessions]

    async def session_end(self, caller: Caller, params: dict[str, Any], _p: Any) -> Any:
        """End every open session on a ticket: the work is done, or consent should stop.

        A connected agent is told at once and its customer may rate the session; a
        session whose agent is offline is ended in the store, so it can never resume.
        """
        ticket = await self._ticket(params)
        reason = params.get("reason") or f"ended by {caller.user.name}"
        if not isinstance(reason, str) or len(reason) > 200:
            raise ApiError("bad_request", "a reason is text of at most 200 characters")
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
        since = parse_since(params["since"]) if params.get("since") else None
        limit = params.get("limit", 1000)
        if not isinstance(limit, int) or not 1 <= limit <= 100_000:
            raise ApiError("bad_request", "limit must be 1 to 100000")
        events = await self.store.audit_events(
            type=params.get("type"),
            ticket_id=ticket,
            session_id=params.get("session"),
            actor=params.get("actor"),
            since=since,
            limit=limit,
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
        return report.as_json()

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
            page["header"] = auditchain.export_header(
                log.key,
                controller=self.controller.name,
                exported_at=utcnow(),
                head_seq=seq,
                head=head,
            )
            page["checkpoints"] = [
                c.as_json() for c in await self.store.audit_checkpoints() if c.seq <= seq
            ]
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


def parse_since(text: str) -> datetime:
    """``30m``, ``24h``, ``7d`` ago, or an ISO-8601 time."""
    units = {"m": 60, "h": 3600, "d": 86400}
    if text and text[-1] in units and text[:-1].isdigit():
        return utcnow() - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError("bad_request", f"since: not a time or age: {text!r}") from None
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
