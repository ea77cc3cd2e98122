"""The controller's audit log: group-committed appends, signed checkpoints, verification.

Appends from every coroutine go through one queue to one writer task, which commits them
in batches (group commit): an ``append`` returns only after its batch is durable, and a
busy controller pays one fsync for many events. Every ``checkpoint_events`` events or
``checkpoint_seconds`` seconds, and at shutdown, the writer signs the chain head with the
audit key and also writes that checkpoint to a file outside the database, so a truncated
database is caught even if its checkpoint rows went with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controller import auditchain, logs
from controller.store import AuditEvent, NewAuditEvent, Store
from controller.tls import write_secret
from protocol.signing import b64e

log = logging.getLogger("helpline.audit")

BATCH_LIMIT = 512

#: every type the controller writes; ``audit log --type`` takes these and patterns of them
EVENT_TYPES: Final = frozenset(
    {
        "agent.auth_failed", "agent.disconnected", "agent.joined", "agent.left",
        "agent.reconnected", "agent.resume_refused", "api.forbidden", "audit.accepted",
        "audit.exported", "audit.verified", "connection.refused", "connection.timed_out",
        "auth.failed", "auth.ok", "catalogue.key_pinned", "catalogue.publish_refused",
        "catalogue.published", "code.failed", "code.issued", "code.rate_limited", "code.used",
        "consent.asked", "consent.given", "consent.refused", "consent.revoked",
        "diag.requested", "diag.result", "fix.approved", "fix.declined", "fix.finished",
        "fix.interrupted", "fix.proposed", "fix.refused", "protocol.error", "result.refused",
        "session.ended",
        "ticket.assigned", "ticket.escalated", "ticket.opened", "ticket.state_changed",
        "user.added", "user.removed", "user.role_changed",
        "webhook.added", "webhook.removed", "webhook.retried",
    }
)  # fmt: skip
#: one per CLI call: kept in the chain, but ``audit log`` shows them only with ``--all``
#: (or when ``--type`` asks for them), so the log reads as what happened
ROUTINE_TYPES: Final = ("auth.ok",)


def match_types(patterns: str, known: Iterable[str]) -> list[str]:
    """The known types that ``patterns`` (comma-separated, ``*`` and ``?`` wildcards)
    name; a ValueError listing the known types if one of them names none."""
    names = sorted(set(known))
    wanted: set[str] = set()
    for pattern in (p.strip() for p in patterns.split(",")):
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else []
        if not hits:
            raise ValueError(
                f"no audit event type matches {pattern!r}; the types are: {', '.join(names)} "
                "(patterns like 'consent.*' work)"
            )
        wanted.update(hits)
    return sorted(wanted)


def _log_event(type: str, fields: dict[str, Any]) -> None:
    """The event as one log line too (``helpline serve``'s log reads as what happened)."""
    if type not in EVENT_TYPES:
        log.warning("audit event type %r is not in EVENT_TYPES: audit log --type misses it", type)
    ticket = fields.get("ticket_id")
    line: dict[str, Any] = {
        "actor": fields.get("actor"),
        "source": fields.get("source"),
        "ticket": f"T-{ticket}" if ticket else None,
        "session": fields.get("session_id"),
        "agent": fields.get("agent_id"),
    }
    for name, value in (fields.get("details") or {}).items():
        line.setdefault(name, value)
    # auth.ok comes once per CLI call: in the audit log, but noise in the server's log
    logs.event(log, type, line, logging.DEBUG if type in ROUTINE_TYPES else logging.INFO)


class AuditTampered(Exception):
    """The chain no longer extends its last signed checkpoint: someone edited it."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def create_key(path: Path) -> Ed25519PrivateKey:
    """Make the audit signing key (mode 0600) and its public half beside it (``.pub``)."""
    key = Ed25519PrivateKey.generate()
    write_secret(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    Path(str(path) + ".pub").write_text(public_text(key.public_key()) + "\n")
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    """Load the audit signing key."""
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key


def public_text(key: Ed25519PublicKey) -> str:
    """The audit public key as outsiders get it: raw 32 bytes, base64url."""
    return b64e(key.public_bytes_raw())


def read_head_file(path: Path, public_key: Ed25519PublicKey | None = None) -> HeadFile | None:
    """The last checkpoint written outside the database, if any.

    With ``public_key`` its signature is checked: a head file that does not verify is
    reported as tampering, never trusted.
    """
    try:
        data = json.loads(path.read_text())
        checkpoint = auditchain.Checkpoint(
            int(data["seq"]), str(data["head"]), str(data["at"]), str(data["signature"])
        )
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        raise AuditTampered(f"the head file {path} is unreadable: {exc}") from None
    if public_key is not None and not checkpoint.verified_by(public_key):
        raise AuditTampered(f"the head file {path} is not signed by this controller's audit key")
    return HeadFile(checkpoint, bool(data.get("final", False)))


def write_head_file(path: Path, checkpoint: auditchain.Checkpoint, *, final: bool = False) -> None:
    """Atomically replace the head file with ``checkpoint``.

    ``final`` marks the checkpoint a controller signs as it stops: nothing may be appended
    after it until the next start, so events found beyond it were not written by us.
    """
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(auditchain.canonical({**checkpoint.as_json(), "final": final}))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass(frozen=True)
class HeadFile:
    checkpoint: auditchain.Checkpoint
    final: bool


@dataclass
class _Pending:
    event: NewAuditEvent
    done: asyncio.Future[AuditEvent]


#: how long a failed background checkpoint waits before it tries again (then doubling)
RETRY_FIRST_SECONDS: Final = 1.0
#: how often a checkpoint that keeps failing is reported again
REPORT_EVERY_SECONDS: Final = 300.0


class AuditLog:
    """Appends, checkpoints and verifies one controller's audit chain.

    It signs only a chain that extends the last head it signed itself: the head it holds
    in memory, or at start the head file in the home, which a database-only attacker
    cannot write. It also remembers the head of what it appended, so an edit made in the
    window that no checkpoint covers yet (recomputed hashes and all) is never signed. On
    any mismatch it stops signing (appends go on) until an admin accepts the chain as it
    is with :meth:`accept`, which is recorded.

    ``shared`` is for several writers on one database (tests, and later replicas): events
    appended by another writer are then accepted when they extend the chain.
    """

    def __init__(
        self,
        store: Store,
        key: Ed25519PrivateKey,
        head_file: Path | None,
        *,
        checkpoint_events: int = 1000,
        checkpoint_seconds: float = 60.0,
        shared: bool = False,
    ) -> None:
        self.store = store
        self.key = key
        self.head_file = head_file
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self.shared = shared
        #: why signing stopped, when it did
        self.halted: str | None = None
        self._halted_at: datetime | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._since_checkpoint = 0
        self._tasks: list[asyncio.Task[None]] = []
        # one lock for appends and checkpoints, so the head held in memory is always the
        # database's head as this writer left it when a checkpoint compares the two
        self._lock = asyncio.Lock()
        self._opened = False
        self._signed: auditchain.Checkpoint | None = None
        self._head: tuple[int, str] = (0, auditchain.GENESIS)
        self._failing_since: float | None = None
        self._reported_at = 0.0

    async def start(self) -> None:
        """Check the stored chain against the last signed head; start the writer and timer."""
        async with self._lock:
            await self._open()
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._timer()),
        ]
        signed = self._signed
        if self.halted is None and (signed is None or signed.seq != self._head[0]):
            await self._checkpoint_in_background()  # adopted events get a signature at once

    async def close(self) -> None:
        """Write what is queued, sign a last checkpoint (retrying), stop."""
        if self._tasks:
            await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        delay = 0.2
        for attempt in range(4):
            try:
                await self.checkpoint(final=True)
                return
            except AuditTampered as exc:
                log.critical("no final audit checkpoint: %s", exc)
                return
            except Exception as exc:
                log.error("final audit checkpoint failed (attempt %d of 4): %s", attempt + 1, exc)
                await asyncio.sleep(delay)
                delay *= 2

    # -- the anchor --------------------------------------------------------------------

    async def _open(self) -> None:
        """Find the last head this controller signed and check the stored chain extends it."""
        if self._opened:
            return
        self._opened = True
        seq, head = await self.store.audit_head()
        self._head = (seq, head)
        try:
            known = self._read_head()
        except AuditTampered as exc:
            self._halt(str(exc))
            return
        if known is None:
            # no head file (a home from before it existed, or a test without one): the
            # newest stored checkpoint that verifies is the best anchor there is
            self._signed = await self._last_valid_checkpoint()
            if self._signed is not None and self.head_file is not None:
                log.warning(
                    "no audit head file at %s: checking against the newest stored checkpoint",
                    self.head_file,
                )
        else:
            self._signed = known.checkpoint
        problem = await self._check_extends(self._signed, seq)
        if problem is not None:
            self._halt(problem)
            return
        anchor_seq = self._signed.seq if self._signed is not None else 0
        if seq > anchor_seq and not self.shared and known is not None:
            if known.final:
                self._halt(
                    f"events {anchor_seq + 1}..{seq} were appended after the final checkpoint "
                    f"this controller signed when it last stopped (event {anchor_seq}): "
                    "nothing but the controller writes the audit log"
                )
                return
            # the previous run ended without its final checkpoint (killed, crashed): its
            # last events extend the signed chain, but nobody vouches for them
            log.warning(
                "audit events %d..%d were written after the last signed head by a run that "
                "did not stop cleanly; they extend the signed chain and are adopted",
                anchor_seq + 1,
                seq,
            )
        if known is not None and known.final and self.head_file is not None:
            # running again: events after this head are ours until the next final one
            write_head_file(self.head_file, known.checkpoint, final=False)

    def _read_head(self) -> HeadFile | None:
        """The head file, its signature checked (AuditTampered if it does not verify)."""
        if self.head_file is None:
            return None
        return read_head_file(self.head_file, self.key.public_key())

    async def _last_valid_checkpoint(self) -> auditchain.Checkpoint | None:
        public = self.key.public_key()
        checkpoints = reversed(await self.store.audit_checkpoints())
        return next((c for c in checkpoints if c.verified_by(public)), None)

    async def _check_extends(self, anchor: auditchain.Checkpoint | None, seq: int) -> str | None:
        """Walk the stored links from ``anchor`` to ``seq``; the first problem, or None."""
        if anchor is not None and seq < anchor.seq:
            return auditchain.extends(anchor, [], seq)
        # page by page, each page checked from the last link of the one before (an
        # unsigned stand-in anchor): memory stays bounded however long the stretch
        while True:  # at least once: the anchor's own event must still carry its hash
            after = anchor.seq - 1 if anchor is not None else 0
            page = await self.store.audit_links(after, min(seq - after, 20_000))
            until = page[-1].seq if page else seq
            problem = auditchain.extends(anchor, page, min(until, seq))
            if problem is not None or not page:
                return problem
            anchor = auditchain.Checkpoint(page[-1].seq, page[-1].hash, "", "")
            if anchor.seq >= seq:
                return None

    def _halt(self, problem: str) -> None:
        if self.halted is None:
            self.halted, self._halted_at = problem, utcnow()
            log.critical(
                "AUDIT LOG TAMPERED: %s. Signing stopped; events are still recorded. "
                "Run `helpline audit verify`; an admin resolves it with `helpline audit accept`.",
                problem,
            )

    def status(self) -> dict[str, Any]:
        """Whether checkpoints are being signed, and the last signed head."""
        signed = self._signed
        return {
            "signing": "stopped" if self.halted else "ok",
            "problem": self.halted,
            "since": self._halted_at.isoformat() if self._halted_at is not None else None,
            "signed_seq": signed.seq if signed is not None else 0,
            "signed_at": signed.at if signed is not None else None,
        }

    # -- appends -----------------------------------------------------------------------

    async def append(self, type: str, **fields: Any) -> AuditEvent:
        """Append one event; returns once it is durable."""
        done: asyncio.Future[AuditEvent] = asyncio.get_running_loop().create_future()
        fields.setdefault("details", {})
        _log_event(type, fields)
        self._queue.put_nowait(_Pending(NewAuditEvent(utcnow(), type, **fields), done))
        if not self._tasks:
            # no writer running (e.g. one-shot admin commands): write inline
            await self._write_batch([self._queue.get_nowait()])
        return await done

    async def _writer(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_LIMIT and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._write_batch(batch)
            # while checkpoints fail, the timer retries them: not every batch
            if self._since_checkpoint >= self.checkpoint_events and self._failing_since is None:
                await self._checkpoint_in_background()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            async with self._lock:
                await self._open()
                written = await self.store.append_audit([p.event for p in batch])
                if written:
                    self._follow(written[0], written[-1])
        except Exception as exc:  # every waiter learns it; the writer keeps running
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            return
        finally:
            for _ in batch:
                self._queue.task_done()
        self._since_checkpoint += len(written)
        for pending, event in zip(batch, written, strict=True):
            if not pending.done.done():
                pending.done.set_result(event)

    def _follow(self, first: AuditEvent, last: AuditEvent) -> None:
        """Move the head held in memory; a batch that does not link to it means the chain
        changed behind this writer's back."""
        seq, head = self._head
        if (first.id != seq + 1 or first.prev_hash != head) and not self.shared:
            self._halt(
                f"event {first.id} was appended after a chain head (seq {first.id - 1}, "
                f"{first.prev_hash[:16]}…) that is not the one this controller wrote "
                f"(seq {seq}, {head[:16]}…): events were added, removed or rewritten "
                "behind its back"
            )
        self._head = (last.id, last.hash)

    # -- checkpoints -------------------------------------------------------------------

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self._next_delay())
            await self._checkpoint_in_background()

    def _next_delay(self) -> float:
        if self._failing_since is None:
            return self.checkpoint_seconds
        failed_for = time.monotonic() - self._failing_since
        return min(self.checkpoint_seconds, max(RETRY_FIRST_SECONDS, failed_for))

    async def _checkpoint_in_background(self) -> None:
        """Checkpoint from the background: a tampered chain is reported loudly and never
        signed; any other failure (a full disk, too many open files) is retried and
        reported, and never stops the writer or the timer."""
        try:
            await self.checkpoint()
        except AuditTampered:
            pass  # reported once by _halt; verify and serve say it too
        except Exception as exc:
            now = time.monotonic()
            if self._failing_since is None:
                self._failing_since = now
            if now - self._reported_at >= REPORT_EVERY_SECONDS or self._reported_at == 0.0:
                self._reported_at = now
                log.error(
                    "audit checkpoint failed (%s: %s); retrying, failing for %.0f s",
                    type(exc).__name__,
                    exc,
                    now - self._failing_since,
                )
        else:
            if self._failing_since is not None:
                log.warning(
                    "audit checkpoints work again after %.0f s",
                    time.monotonic() - self._failing_since,
                )
            self._failing_since, self._reported_at = None, 0.0

    async def checkpoint(self, *, final: bool = False) -> auditchain.Checkpoint | None:
        """Sign the current head if it moved since the last checkpoint; AuditTampered if
        the stored chain does not extend the last head this controller signed."""
        async with self._lock:
            await self._open()
            if self.halted is not None:
                raise AuditTampered(f"refusing to sign the audit chain: {self.halted}")
            seq, head = await self.store.audit_head()
            signed = self._signed
            unmoved = signed is not None and (signed.seq, signed.head) == (seq, head)
            problem = None if unmoved else await self._check_extends(signed, seq)
            if problem is None and (seq, head) != self._head and not self.shared:
                # consistent links, but not the ones this writer made: a rewrite of the
                # window no signature covers yet, hashes recomputed
                problem = (
                    f"the stored chain ends at event {seq} ({head[:16]}…) but this controller "
                    f"last appended event {self._head[0]} ({self._head[1][:16]}…)"
                )
            if problem is not None:
                self._halt(problem)
                raise AuditTampered(f"refusing to sign the audit chain: {problem}")
            if seq == 0:
                return None
            if unmoved and not final:
                return signed
            checkpoint = auditchain.sign_checkpoint(self.key, seq, head, utcnow())
            # the head file first: it is what a database-only attacker cannot touch
            if self.head_file is not None:
                write_head_file(self.head_file, checkpoint, final=final)
            if signed is None or signed.seq != seq or signed.head != head:
                await self.store.add_checkpoint(checkpoint)
            self._signed, self._head = checkpoint, (seq, head)
            self._since_checkpoint = 0
            return checkpoint

    async def accept(self, *, actor: str, role: str, source: str | None, reason: str) -> Any:
        """An admin accepts the stored chain as it is now, after signing stopped.

        Only a chain that is sound in itself (every link, from the first event) can be
        accepted; the acceptance is appended as ``audit.accepted`` with what was wrong,
        the head that was signed before and the checkpoints it supersedes, then signed.
        """
        async with self._lock:
            await self._open()
            problem = self.halted
            if problem is None:
                raise AuditNothingToAccept(
                    "the audit chain extends the last signed head: there is nothing to accept"
                )
            report = await self._walk(check_checkpoints=False)
            if not report.ok:
                raise AuditTampered(
                    f"the stored chain is broken in itself ({report.problem}): it cannot be "
                    "accepted; restore the database from a backup or compare with an export"
                )
            seq, head = report.last_seq, report.head
            superseded = [c.as_json() for c in await self._mismatching_checkpoints(seq)]
            previous = self._signed
            event = NewAuditEvent(
                utcnow(),
                "audit.accepted",
                actor=actor,
                role=role,
                source=source,
                details={
                    "reason": reason,
                    "problem": problem,
                    "detected_at": self._halted_at.isoformat() if self._halted_at else None,
                    "signed_before": previous.as_json() if previous is not None else None,
                    "accepted_seq": seq,
                    "accepted_head": head,
                    "superseded": superseded,
                },
            )
            written = await self.store.append_audit([event])
            self._head = (written[-1].id, written[-1].hash)
            self.halted, self._halted_at = None, None
            # the walk above checked the whole chain up to ``head``: it is the anchor the
            # checkpoint below extends, so that checkpoint does not walk it all again
            self._signed = auditchain.Checkpoint(seq, head, "", "")
            self._since_checkpoint = 0
        checkpoint = await self.checkpoint()
        log.warning("audit chain accepted by %s at event %d: %s", actor, seq, reason)
        return {"accepted": written[-1].id, "problem": problem, "checkpoint": checkpoint}

    async def _mismatching_checkpoints(self, seq: int) -> list[auditchain.Checkpoint]:
        """Stored checkpoints (and the head file) that the chain up to ``seq`` contradicts."""
        candidates = list(await self.store.audit_checkpoints())
        if self._signed is not None:
            candidates.append(self._signed)
        out: list[auditchain.Checkpoint] = []
        for checkpoint in candidates:
            if checkpoint in out:
                continue
            links = await self.store.audit_links(checkpoint.seq - 1, 1, check_columns=False)
            if checkpoint.seq > seq or not links or links[0].hash != checkpoint.head:
                out.append(checkpoint)
        return out

    # -- verification ------------------------------------------------------------------

    async def superseded(self) -> dict[tuple[int, str], str]:
        """Checkpoints an admin's ``audit.accepted`` events set aside, with why."""
        out: dict[tuple[int, str], str] = {}
        for event in await self.store.audit_events(type="audit.accepted", limit=10_000):
            for c in event.details.get("superseded") or []:
                out[(int(c["seq"]), str(c["head"]))] = (
                    f"was superseded when {event.actor} accepted the chain at event {event.id}"
                )
        return out

    async def verify(self, page: int = 20_000) -> auditchain.Report:
        """Walk the whole chain in the database, every checkpoint and the head file; report
        too when signing has stopped."""
        report = await self._walk(check_checkpoints=True, page=page)
        if self.halted is not None:
            report.fail(None, f"checkpoint signing stopped: {self.halted}")
        return report

    async def _walk(self, *, check_checkpoints: bool, page: int = 20_000) -> auditchain.Report:
        checkpoints: list[auditchain.Checkpoint] = []
        known = None
        superseded: dict[tuple[int, str], str] = {}
        if check_checkpoints:
            checkpoints = await self.store.audit_checkpoints()
            superseded = await self.superseded()
            try:
                head_file = self._read_head()
            except AuditTampered as exc:
                report = auditchain.Report()
                report.fail(None, str(exc))
                return report
            known = head_file.checkpoint if head_file is not None else None
        verifier = auditchain.Verifier(
            checkpoints, self.key.public_key(), known_head=known, superseded=superseded
        )
        after = 0
        while verifier.report.ok:
            links = await self.store.audit_links(after, page)
            if not links:
                break
            for link in links:
                if not verifier.feed(link):
                    break
            after = links[-1].seq
        return verifier.finish()


class AuditNothingToAccept(Exception):
    """``accept`` when signing never stopped."""
