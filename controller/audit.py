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
        "agent.disconnected", "agent.joined", "agent.left", "agent.reconnected",
        "agent.resume_refused", "api.forbidden", "audit.exported", "audit.verified",
        "auth.failed", "auth.ok", "catalogue.key_pinned", "catalogue.publish_refused",
        "catalogue.published", "code.failed", "code.issued", "code.rate_limited", "code.used",
        "consent.asked", "consent.given", "consent.refused", "consent.revoked",
        "diag.requested", "diag.result", "fix.approved", "fix.declined", "fix.finished",
        "fix.proposed", "fix.refused", "protocol.error", "result.refused", "session.ended",
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


def read_head_file(path: Path) -> auditchain.Checkpoint | None:
    """The last checkpoint written outside the database, if any."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return auditchain.Checkpoint(int(data["seq"]), data["head"], data["at"], data["signature"])


def write_head_file(path: Path, checkpoint: auditchain.Checkpoint) -> None:
    """Atomically replace the head file with ``checkpoint``."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as handle:
        handle.write(auditchain.canonical(checkpoint.as_json()))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


@dataclass
class _Pending:
    event: NewAuditEvent
    done: asyncio.Future[AuditEvent]


class AuditLog:
    """Appends, checkpoints and verifies one controller's audit chain."""

    def __init__(
        self,
        store: Store,
        key: Ed25519PrivateKey,
        head_file: Path | None,
        *,
        checkpoint_events: int = 1000,
        checkpoint_seconds: float = 60.0,
    ) -> None:
        self.store = store
        self.key = key
        self.head_file = head_file
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._since_checkpoint = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._checkpoint_lock = asyncio.Lock()

    async def start(self) -> None:
        """Start the writer and the checkpoint timer."""
        self._tasks = [
            asyncio.create_task(self._writer()),
            asyncio.create_task(self._timer()),
        ]

    async def close(self) -> None:
        """Write what is queued, sign a last checkpoint, stop."""
        if self._tasks:
            await self._queue.join()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._checkpoint_or_warn()

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
            if self._since_checkpoint >= self.checkpoint_events:
                await self._checkpoint_or_warn()

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            written = await self.store.append_audit([p.event for p in batch])
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

    async def _timer(self) -> None:
        while True:
            await asyncio.sleep(self.checkpoint_seconds)
            await self._checkpoint_or_warn()

    async def _checkpoint_or_warn(self) -> None:
        """Checkpoint from the background: a tampered chain is reported loudly, never
        signed, and never stops the writer (appends keep being recorded)."""
        try:
            await self.checkpoint()
        except AuditTampered as exc:
            log.critical("%s; run `helpline audit verify`", exc)

    async def checkpoint(self) -> auditchain.Checkpoint | None:
        """Sign the current head (if it moved since the last checkpoint)."""
        async with self._checkpoint_lock:
            seq, head = await self.store.audit_head()
            if seq == 0:
                return None
            last = await self.store.last_checkpoint()
            if last is not None and last.seq == seq:
                return last
            # sign only a chain that still extends the last signed head: otherwise an edit
            # made in the unsigned window would be blessed by this signature
            problem = await self._check_since(last, seq)
            if problem is not None:
                raise AuditTampered(f"refusing to sign the audit chain: {problem}")
            checkpoint = auditchain.sign_checkpoint(self.key, seq, head, utcnow())
            await self.store.add_checkpoint(checkpoint)
            if self.head_file is not None:
                write_head_file(self.head_file, checkpoint)
            self._since_checkpoint = 0
            return checkpoint

    async def _check_since(self, last: auditchain.Checkpoint | None, seq: int) -> str | None:
        """Walk the links after ``last`` up to ``seq``; the first problem, or None."""
        after, prev = (last.seq, last.head) if last is not None else (0, auditchain.GENESIS)
        while after < seq:
            links = await self.store.audit_links(after, min(seq - after, 20_000))
            if not links:
                return f"events {after + 1}..{seq} are missing"
            for link in links:
                if link.seq != after + 1 or link.prev != prev:
                    return f"event {link.seq} does not extend the signed chain"
                digest = auditchain.link_hash(prev, link.record)
                if digest != link.hash or not link.columns_match:
                    return f"event {link.seq} was modified"
                after, prev = link.seq, digest
        return None

    async def verify(self, page: int = 20_000) -> auditchain.Report:
        """Walk the whole chain in the database, every checkpoint and the head file."""
        known = read_head_file(self.head_file) if self.head_file is not None else None
        verifier = auditchain.Verifier(
            await self.store.audit_checkpoints(), self.key.public_key(), known_head=known
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
