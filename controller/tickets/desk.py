"""The controller's ticket service: lifecycle changes, SLA monitor, webhook worker.

Every change is one call to :meth:`Store.change_ticket`, whose ``decide`` function (built
here from :mod:`lifecycle`'s table) sees the ticket under a row lock: so two technicians
resolving the same ticket at once get one resolution and one clear refusal, and the event
and its webhook outbox rows commit with the change or not at all. After the commit the
accountable part goes to the audit log (assignments, escalations, state changes) and the
webhook worker is woken.

The SLA monitor (every ``HELPLINE_SLA_INTERVAL`` seconds, 30 by default) raises one
``ticket.sla_at_risk`` and one ``ticket.sla_breached`` event per clock and ticket (the
markers live on the ticket row, so replicas agree), and escalates a ticket whose
resolution is at risk when its priority's policy says ``escalate_at_risk``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final, Protocol

from controller.store import Article, Change, Store, Ticket, TicketEvent, User
from controller.tickets import lifecycle, sla, webhooks
from controller.tickets.lifecycle import Action, State, TransitionError
from protocol.calls.fixes import FixReport
from protocol.vocabulary import CHANNELS

log = logging.getLogger("helpline.tickets")

#: events audited under their own name; other events are audited only when they move
#: the ticket to another state (``ticket.state_changed``)
AUDITED: Final = frozenset({"ticket.assigned", "ticket.escalated"})


class Audit(Protocol):
    def __call__(self, type: str, **fields: Any) -> Awaitable[None]: ...


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Who:
    """Who acts: a user through the API, or the controller itself (``sla-policy``)."""

    name: str
    role: str | None = None
    source: str | None = None


SLA_POLICY: Final = Who("sla-policy")


class DeskError(Exception):
    """A refused ticket operation; ``code`` is one of the API's error codes."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def _no_audit(type: str, **fields: Any) -> None:
    return None


class TicketDesk:
    """Applies ticket changes and runs the background work of tickets."""

    def __init__(
        self,
        store: Store,
        policy: sla.Policy,
        *,
        audit: Audit | None = None,
        clock: Callable[[], datetime] = utcnow,
        deliverer: webhooks.Deliverer | None = None,
        interval: float | None = None,
    ) -> None:
        self.store = store
        self.policy = policy
        self.clock = clock
        self._audit = audit or _no_audit
        self.deliverer = deliverer or webhooks.Deliverer(store, clock=clock)
        self.interval = interval or float(os.environ.get("HELPLINE_SLA_INTERVAL", "30"))
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def for_home(cls, home: Path, store: Store, *, audit: Audit) -> TicketDesk:
        """The desk of a controller home: ``HOME/sla.toml`` (or the built-in policy)."""
        policy = sla.load_policy(home / "sla.toml")
        for warning in policy.warnings:
            log.warning("SLA policy: %s", warning)
        return cls(store, policy, audit=audit)

    async def start(self) -> None:
        """Start the webhook worker and the SLA monitor."""
        self._tasks = [
            asyncio.create_task(self.deliverer.run()),
            asyncio.create_task(self._monitor()),
        ]

    async def stop(self) -> None:
        """Stop both; an event in flight is delivered again later (at least once)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    # -- reading ----------------------------------------------------------------------------

    async def get(self, ticket_id: int) -> Ticket:
        ticket = await self.store.get_ticket(ticket_id)
        if ticket is None:
            raise DeskError("not_found", f"there is no ticket T-{ticket_id}")
        return ticket

    def clocks(
        self, ticket: Ticket, events: Sequence[TicketEvent], now: datetime | None = None
    ) -> tuple[sla.Clock, sla.Clock]:
        """Both SLA clocks of a ticket."""
        return sla.evaluate(self.policy, ticket, events, now or self.clock())

    async def suggestions(self, ticket: Ticket, findings: Sequence[str] = ()) -> list[Article]:
        """Articles for a ticket: those linked to its findings, then matches on its title."""
        linked = await self.store.articles_for(findings=findings, limit=5)
        hits = await self.store.search_articles(ticket.title, limit=3, match_all=False)
        seen = {a.id for a in linked}
        return linked + [h.article for h in hits if h.article.id not in seen]

    # -- changes ------------------------------------------------------------------------------

    async def open(
        self,
        who: Who,
        *,
        title: str,
        customer: str,
        priority: str,
        contact: str | None = None,
        channel: str = "remote",
        category: str | None = None,
        assignee: str | None = None,
    ) -> Ticket:
        """Open a ticket (``new``), assigned at once if ``assignee`` is given."""
        if channel not in CHANNELS:
            raise DeskError("bad_request", f"channel is one of {', '.join(CHANNELS)}")
        ticket = await self.store.open_ticket(
            title,
            customer,
            priority,
            who.name,
            self.clock(),
            contact=contact,
            channel=channel,
            category=category,
        )
        await self._audit(
            "ticket.opened",
            actor=who.name,
            role=who.role,
            source=who.source,
            ticket_id=ticket.id,
            details={"priority": priority, "channel": channel},
        )
        self.deliverer.notify()
        if assignee is not None:
            ticket = await self.assign(who, ticket.id, assignee)
        return ticket

    async def assign(self, who: Who, ticket_id: int, to: str | None) -> Ticket:
        """Assign a ticket to a user whose level suffices (None: unassign)."""
        user = None
        if to is not None:
            user = await self.store.user_by_name(to)
            if user is None:
                raise DeskError("not_found", f"there is no user {to!r}")

        def decide(t: Ticket) -> list[Change]:
            if user is not None and not lifecycle.may_work(user.role, user.level, t.level):
                raise DeskError(
                    "bad_request",
                    f"{t.ref} is at {t.level}; {user.name} is "
                    f"{user.role}{' ' + user.level if user.level else ''} and may not work it",
                )
            if t.assignee == to:
                return []
            if to is None:
                if State(t.state) not in lifecycle.ACTIVE:
                    raise TransitionError(State(t.state), Action.ASSIGN, t.ref)
                return [
                    Change("ticket.assigned", {"from": t.assignee, "to": None}, {"assignee": None})
                ]
            return [
                self._step(
                    t,
                    Action.ASSIGN,
                    "ticket.assigned",
                    {"from": t.assignee, "to": to},
                    {"assignee": to},
                )
            ]

        return await self._change(who, ticket_id, decide)

    async def note(self, who: Who, ticket_id: int, text: str, *, internal: bool = False) -> Ticket:
        """Add a note. A note to or about the customer is a response; internal ones are not."""

        def decide(t: Ticket) -> list[Change]:
            if internal:
                if State(t.state) is State.CLOSED:
                    raise TransitionError(State.CLOSED, Action.RESPOND, t.ref)
                return [Change("ticket.noted", {"text": text, "internal": True})]
            return [
                self._step(t, Action.RESPOND, "ticket.noted", {"text": text, "internal": False})
            ]

        return await self._change(who, ticket_id, decide)

    async def wait(self, who: Who, ticket_id: int, reason: str) -> Ticket:
        """Wait on the customer: the resolution clock pauses."""
        return await self._simple(who, ticket_id, Action.WAIT, "ticket.waiting", {"reason": reason})

    async def resume(self, who: Who, ticket_id: int, reason: str) -> Ticket:
        """The customer answered: back to open, the clock runs on."""
        return await self._simple(
            who, ticket_id, Action.RESUME, "ticket.resumed", {"reason": reason}
        )

    async def resolve(
        self, who: Who, ticket_id: int, resolution: str, *, article: str | None = None
    ) -> tuple[Ticket, Article | None]:
        """Resolve; with ``article`` (its title), the resolution becomes a KB article."""
        now = self.clock()
        ticket = await self._simple(
            who,
            ticket_id,
            Action.RESOLVE,
            "ticket.resolved",
            {"resolution": resolution},
            {"resolution": resolution, "resolved_at": now},
        )
        if article is None:
            return ticket, None
        written = await self.write_article(who, ticket, article or ticket.title, resolution)
        return ticket, written

    async def close(self, who: Who, ticket_id: int) -> Ticket:
        """Close a resolved ticket for good."""
        return await self._simple(
            who, ticket_id, Action.CLOSE, "ticket.closed", {}, {"closed_at": self.clock()}
        )

    async def reopen(self, who: Who, ticket_id: int, reason: str) -> Ticket:
        """Reopen a resolved ticket: the resolution clock runs on from where it stopped."""
        return await self._simple(
            who,
            ticket_id,
            Action.REOPEN,
            "ticket.reopened",
            {"reason": reason},
            {"resolved_at": None, "resolution": None},
        )

    async def escalate(
        self,
        who: Who,
        ticket_id: int,
        to: str,
        reason: str,
        *,
        vendor: str | None = None,
        vendor_ref: str | None = None,
        auto: bool = False,
    ) -> Ticket:
        """Raise the ticket's support level; L4 is the vendor and names them.

        An assignee whose level is below the new one is unassigned. ``auto`` (the SLA
        policy) does nothing to a ticket that is already at or above ``to``.
        """
        try:
            target = lifecycle.level_rank(to)
        except ValueError as exc:
            raise DeskError("bad_request", str(exc)) from None
        if to == "L4" and not vendor:
            raise DeskError("bad_request", "L4 is the vendor: name them with --vendor")
        if to != "L4" and (vendor or vendor_ref):
            raise DeskError("bad_request", "--vendor and --vendor-ref are for L4 only")
        users = {u.name: u for u in await self.store.list_users()}

        def decide(t: Ticket) -> list[Change]:
            if target <= lifecycle.level_rank(t.level):
                if auto:
                    return []
                raise DeskError(
                    "conflict",
                    f"{t.ref} is already at {t.level}; escalation goes up: L1 → L2 → L3 → "
                    "L4 (vendor)",
                )
            lifecycle.next_state(t.state, Action.ESCALATE, t.ref)
            fields: dict[str, Any] = {"level": to, "vendor": vendor, "vendor_ref": vendor_ref}
            data: dict[str, Any] = {
                "from": t.level,
                "to": to,
                "reason": reason,
                "vendor": vendor,
                "vendor_ref": vendor_ref,
                "auto": auto,
            }
            holder: User | None = users.get(t.assignee) if t.assignee else None
            if holder is not None and not lifecycle.may_work(holder.role, holder.level, to):
                fields["assignee"] = None
                data["unassigned"] = holder.name
            return [Change("ticket.escalated", data, fields)]

        return await self._change(who, ticket_id, decide)

    async def link(self, who: Who, ticket_id: int, other_id: int, kind: str) -> None:
        """Link two tickets (``relates``, ``duplicates``, ``follows``, ``blocks``…)."""
        try:
            await self.store.link_tickets(ticket_id, other_id, kind, who.name, self.clock())
        except KeyError as exc:
            raise DeskError("not_found", f"there is no ticket {exc.args[0]}") from None
        except ValueError as exc:
            code = "conflict" if "already" in str(exc) else "bad_request"
            raise DeskError(code, str(exc)) from None
        self.deliverer.notify()

    async def write_article(self, who: Who, ticket: Ticket, title: str, body: str) -> Article:
        """A KB article from a ticket, linked to its findings and the fixes that worked."""
        findings, fixes = await self._findings_and_fixes(ticket.id)
        article = await self.store.add_article(
            title, body, who.name, self.clock(), ticket_id=ticket.id, findings=findings, fixes=fixes
        )
        self.deliverer.notify()
        return article

    async def findings(self, ticket_id: int) -> list[str]:
        """Rule ids of the findings in the ticket's latest good diagnostics snapshot."""
        return (await self._findings_and_fixes(ticket_id))[0]

    async def _findings_and_fixes(self, ticket_id: int) -> tuple[list[str], list[str]]:
        attachments = await self.store.attachments(ticket_id)
        snapshots = [a for a in attachments if a.kind == "diagnostics" and a.ok]
        findings: list[str] = []
        if snapshots:
            try:
                from controller.findings import evaluate

                findings = [str(f["rule"]) for f in evaluate(snapshots[-1].data)]
            except Exception:  # a broken rule catalogue must not block a resolution
                log.exception("findings of T-%s could not be evaluated", ticket_id)
        reports = [FixReport.read(a.data) for a in attachments if a.kind == "fix"]
        fixes = [r.fix for r in reports if r is not None and r.status == "succeeded" and r.fix]
        return findings, list(dict.fromkeys(fixes))

    # -- from the agent channel -------------------------------------------------------------

    async def session_started(self, ticket_id: int, session_id: str, technician: str) -> None:
        """A customer joined a session: a response, and the end of waiting on them.

        Bookkeeping only: a failure here is logged and never fails the customer's join.
        """
        try:
            await self._session_started(ticket_id, session_id, technician)
        except Exception:
            log.exception("T-%s: the session %s could not be recorded", ticket_id, session_id)

    async def _session_started(self, ticket_id: int, session_id: str, technician: str) -> None:

        def decide(t: Ticket) -> list[Change]:
            changes = []
            state = State(t.state)
            if state is State.WAITING:
                reason = "the customer joined a session"
                changes.append(self._step(t, Action.RESUME, "ticket.resumed", {"reason": reason}))
                t = _moved(t, changes[-1])
            data = {"session": session_id, "technician": technician}
            if (State(t.state), Action.RESPOND) in lifecycle.TABLE:
                changes.append(self._step(t, Action.RESPOND, "ticket.session_started", data))
            else:  # a session on a closed ticket is still on its record
                changes.append(Change("ticket.session_started", data))
            return changes

        await self._change(Who(technician, "technician"), ticket_id, decide)

    async def fix_interrupted(self, ticket_id: int, data: dict[str, Any], technician: str) -> None:
        """A fix ended without a result (the agent went away): on the timeline, with the
        output it streamed. Bookkeeping only, like :meth:`session_started`."""
        try:
            await self._change(
                Who(technician, "technician"),
                ticket_id,
                lambda _t: [Change("ticket.fix_interrupted", data)],
            )
        except Exception:
            log.exception("T-%s: an interrupted fix could not be recorded", ticket_id)

    async def rating(
        self,
        ticket_id: int,
        session_id: str | None,
        score: int,
        comment: str | None,
        technician: str | None,
    ) -> bool:
        """Put a customer's rating on the ticket; False if this session already rated (or
        it could not be stored: logged, and never the end of the agent's connection)."""
        try:
            if technician is None and session_id is not None:
                session = await self.store.get_session(session_id)
                technician = session.technician if session is not None else None
            stored = await self.store.add_rating(
                ticket_id, session_id, score, comment, technician, self.clock()
            )
        except Exception:
            log.exception(
                "T-%s: the rating of session %s could not be stored", ticket_id, session_id
            )
            return False
        self.deliverer.notify()
        return stored is not None

    # -- the SLA monitor ----------------------------------------------------------------------

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check_sla()
            except Exception:
                log.exception("SLA check failed")

    async def check_sla(self) -> list[TicketEvent]:
        """Raise due SLA alerts and policy escalations; returns the alert events."""
        now = self.clock()
        active = await self.store.list_tickets(states=[s.value for s in lifecycle.ACTIVE])
        timelines = await self.store.events_for(t.id for t in active)
        raised: list[TicketEvent] = []
        for ticket in active:
            clocks = self.clocks(ticket, timelines.get(ticket.id, []), now)
            due = [
                (clock, f"{clock.kind}:{clock.status}")
                for clock in clocks
                if clock.status in ("at_risk", "breached")
            ]
            if any(marker not in ticket.sla_alerts for _, marker in due):
                raised += await self._alert(ticket.id, due)
            target = self.policy.target(ticket.priority)
            resolution = clocks[1]
            if (
                target is not None
                and target.escalate_at_risk is not None
                and resolution.status in ("at_risk", "breached")
                and lifecycle.level_rank(ticket.level)
                < lifecycle.level_rank(target.escalate_at_risk)
            ):
                why = (
                    f"resolution SLA at risk ({_duration(resolution.remaining)} left)"
                    if resolution.status == "at_risk"
                    else "resolution SLA breached"
                )
                # the ticket may have moved on since it was read (resolved, say): skip it
                with contextlib.suppress(DeskError):
                    await self.escalate(
                        SLA_POLICY, ticket.id, target.escalate_at_risk, why, auto=True
                    )
        return raised

    async def _alert(self, ticket_id: int, due: list[tuple[sla.Clock, str]]) -> list[TicketEvent]:
        def decide(t: Ticket) -> list[Change]:
            markers = list(t.sla_alerts)
            changes = []
            for clock, marker in due:
                if marker in markers:
                    continue  # another replica (or an earlier pass) raised it
                markers.append(marker)
                data = {"clock": clock.kind, **clock.as_json()}
                changes.append(
                    Change(f"ticket.sla_{clock.status}", data, {"sla_alerts": list(markers)})
                )
            return changes

        result = await self.store.change_ticket(ticket_id, self.clock(), SLA_POLICY.name, decide)
        self.deliverer.notify()
        return [] if result is None else result[1]

    # -- mechanics ----------------------------------------------------------------------------

    async def _simple(
        self,
        who: Who,
        ticket_id: int,
        action: Action,
        type_: str,
        data: dict[str, Any],
        fields: dict[str, Any] | None = None,
    ) -> Ticket:
        return await self._change(
            who, ticket_id, lambda t: [self._step(t, action, type_, data, fields or {})]
        )

    def _step(
        self,
        ticket: Ticket,
        action: Action,
        type_: str,
        data: dict[str, Any],
        fields: dict[str, Any] | None = None,
    ) -> Change:
        """The change ``action`` makes to ``ticket``, or :class:`TransitionError`."""
        new = lifecycle.next_state(ticket.state, action, ticket.ref)
        fields = dict(fields or {})
        data = dict(data)
        if new.value != ticket.state:
            fields["state"] = new.value
            data["transition"] = [ticket.state, new.value]
        if action in lifecycle.RESPONSES and ticket.responded_at is None:
            fields["responded_at"] = self.clock()
            data["first_response"] = True
        return Change(type_, data, fields)

    async def _change(
        self, who: Who, ticket_id: int, decide: Callable[[Ticket], Sequence[Change]]
    ) -> Ticket:
        try:
            result = await self.store.change_ticket(ticket_id, self.clock(), who.name, decide)
        except TransitionError as exc:
            raise DeskError("conflict", str(exc)) from None
        if result is None:
            raise DeskError("not_found", f"there is no ticket T-{ticket_id}")
        ticket, events = result
        for event in events:
            details = {k: v for k, v in event.data.items() if k not in ("ticket", "text")}
            if event.type in AUDITED:
                type_ = event.type
            elif "transition" in event.data:
                type_ = "ticket.state_changed"
                details["event"] = event.type
            else:
                continue
            await self._audit(
                type_,
                actor=who.name,
                role=who.role,
                source=who.source,
                ticket_id=ticket.id,
                details={"event_id": event.uid, **details},
            )
        if events:
            self.deliverer.notify()
        return ticket


def _moved(ticket: Ticket, change: Change) -> Ticket:
    """``ticket`` as ``change`` leaves it (for decisions that take two steps)."""
    allowed = {k: v for k, v in change.fields.items() if k in ("state", "responded_at")}
    return replace(ticket, **allowed)


def _duration(value: timedelta | None) -> str:
    if value is None:
        return "?"
    seconds = max(0, int(value.total_seconds()))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"
