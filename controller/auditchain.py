"""The audit chain, pure: canonical records, link hashes, signed checkpoints, verification.

Each event is stored as a canonical JSON record (sorted keys, no spaces, UTF-8). Its link
hash is ``SHA-256(previous link hash ‖ record)``, the first event's predecessor being 32
zero bytes. Every so often the controller signs ``(seq, head hash, time)`` with its audit
key (Ed25519): a checkpoint. The verifier walks the chain in ``seq`` order and names the
first bad link:

* an edited record no longer hashes to its stored link hash;
* a deleted or reordered event breaks the ``seq`` run or the ``prev`` link;
* a truncated tail leaves a checkpoint (or the head file outside the database) pointing
  past the end of the chain;
* a forged checkpoint fails its signature.

Nothing here touches the database or the disk: the store and the export feed it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import ProtocolError
from protocol.signing import b64d, b64e

GENESIS: Final = "0" * 64
RECORD_VERSION: Final = 1


_CANONICAL: Final = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical(value: Mapping[str, Any]) -> str:
    """The one JSON text of ``value`` that hashes and signs: sorted keys, no spaces, UTF-8.

    orjson rather than the standard library because verification re-encodes every event
    and orjson does it an order of magnitude faster; the text is the same for our records.
    """
    return orjson.dumps(value, option=_CANONICAL).decode()


def record(
    *,
    seq: int,
    at: datetime,
    type: str,
    actor: str | None,
    role: str | None,
    source: str | None,
    ticket_id: int | None,
    session_id: str | None,
    agent_id: str | None,
    details: Mapping[str, Any],
) -> str:
    """The canonical record of one event."""
    return canonical(
        {
            "v": RECORD_VERSION,
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "type": type,
            "actor": actor,
            "role": role,
            "source": source,
            "ticket": ticket_id,
            "session": session_id,
            "agent": agent_id,
            "details": dict(details),
        }
    )


def link_hash(prev: str, record_text: str) -> str:
    """The link hash of a record that follows ``prev``."""
    return hashlib.sha256(bytes.fromhex(prev) + record_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: the chain had ``head`` as its hash at ``seq``."""

    seq: int
    head: str
    at: str
    signature: str

    def payload(self) -> bytes:
        return checkpoint_payload(self.seq, self.head, self.at)

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "head": self.head, "at": self.at, "signature": self.signature}

    def verified_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether ``public_key`` made this checkpoint's signature."""
        try:
            public_key.verify(b64d(self.signature), self.payload())
        except (InvalidSignature, ProtocolError):
            return False
        return True


def checkpoint_payload(seq: int, head: str, at: str) -> bytes:
    return canonical(
        {"kind": "helpline-audit-checkpoint", "seq": seq, "head": head, "at": at}
    ).encode()


def sign_checkpoint(key: Ed25519PrivateKey, seq: int, head: str, at: datetime) -> Checkpoint:
    """Sign the head of the chain at ``seq``."""
    stamp = at.isoformat(timespec="microseconds")
    return Checkpoint(seq, head, stamp, b64e(key.sign(checkpoint_payload(seq, head, stamp))))


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """An audit public key from its base64url text (as ``helpline audit pubkey`` prints)."""
    raw = b64d(text.strip())
    if len(raw) != 32:
        raise ValueError("an audit public key is 32 bytes of Ed25519, base64url encoded")
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class Link:
    """One stored event as the verifier sees it."""

    seq: int
    prev: str
    hash: str
    record: str
    #: False when the row's queryable columns disagree with its hashed record
    columns_match: bool = True


@dataclass
class Report:
    """What a verification found; ``problem`` names the first bad link, if any."""

    events: int = 0
    checkpoints: int = 0
    head: str = GENESIS
    last_seq: int = 0
    problem: str | None = None
    bad_seq: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem is None

    def fail(self, seq: int | None, problem: str) -> None:
        if self.problem is None:
            self.problem, self.bad_seq = problem, seq

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "checkpoints": self.checkpoints,
            "last_seq": self.last_seq,
            "head": self.head,
            "problem": self.problem,
            "bad_seq": self.bad_seq,
            "notes": self.notes,
        }


class Verifier:
    """Walks a chain fed in seq order, one link at a time; stops at the first bad link."""

    def __init__(
        self,
        checkpoints: Iterable[Checkpoint],
        public_key: Ed25519PublicKey,
        *,
        known_head: Checkpoint | None = None,
        superseded: Mapping[tuple[int, str], str] | None = None,
    ) -> None:
        self.report = Report()
        self._wanted: dict[int, list[Checkpoint]] = {}
        self._prev = GENESIS
        self._expected = 1
        superseded = superseded or {}
        for checkpoint in checkpoints:
            why = superseded.get((checkpoint.seq, checkpoint.head))
            if why is not None:
                # an admin accepted a chain that no longer matches this checkpoint; the
                # acceptance is itself an event in the chain, covered by later signatures
                self.report.notes.append(f"checkpoint at seq {checkpoint.seq} {why}")
                continue
            if not checkpoint.verified_by(public_key):
                self.report.fail(
                    checkpoint.seq, f"checkpoint at seq {checkpoint.seq} has a bad signature"
                )
                return
            self._wanted.setdefault(checkpoint.seq, []).append(checkpoint)
            self.report.checkpoints += 1
        if known_head is not None:
            self._wanted.setdefault(known_head.seq, []).append(known_head)

    def feed(self, link: Link) -> bool:
        """Check one link; False once the chain is known to be bad."""
        report = self.report
        if not report.ok:
            return False
        expected = self._expected
        if link.seq != expected:
            if link.seq > expected:
                report.fail(expected, f"events {expected}..{link.seq - 1} are missing (deleted)")
            else:
                report.fail(link.seq, f"event {link.seq} is out of order (after {expected - 1})")
            return False
        if link.prev != self._prev:
            report.fail(link.seq, f"event {link.seq} does not link to event {link.seq - 1}")
            return False
        actual = link_hash(self._prev, link.record)
        if actual != link.hash:
            report.fail(link.seq, f"event {link.seq} was modified (its content hash differs)")
            return False
        if not link.columns_match:
            report.fail(
                link.seq,
                f"event {link.seq} was modified (its columns differ from its hashed record)",
            )
            return False
        for checkpoint in self._wanted.get(link.seq, ()):
            if checkpoint.head != actual:
                report.fail(link.seq, f"event {link.seq} differs from the signed checkpoint")
                return False
        self._prev = actual
        self._expected = expected + 1
        report.events += 1
        return True

    def finish(self) -> Report:
        """The verdict, including truncation behind the last link fed."""
        report = self.report
        if not report.ok:
            return report
        report.head, report.last_seq = self._prev, self._expected - 1
        beyond = [seq for seq in self._wanted if seq > report.last_seq]
        if beyond:
            report.fail(
                report.last_seq + 1,
                f"the chain ends at event {report.last_seq} but a signed checkpoint covers "
                f"event {max(beyond)}: events were truncated",
            )
        return report


def extends(anchor: Checkpoint | None, links: Iterable[Link], seq: int) -> str | None:
    """Whether the stored chain up to ``seq`` extends the signed ``anchor``; the problem, or None.

    ``links`` must start at the anchor's own event (or at event 1 without an anchor), in
    seq order. Each link is checked against its predecessor and re-hashed, so an edit
    anywhere between the anchor and ``seq`` (hashes recomputed or not) is found, as is a
    chain that ends before the anchor.
    """
    if anchor is not None and seq < anchor.seq:
        return (
            f"the chain ends at event {seq} but this controller signed event {anchor.seq}: "
            "events were truncated"
        )
    expected, prev = (anchor.seq, None) if anchor is not None else (1, GENESIS)
    for link in links:
        if link.seq > seq:
            break
        if link.seq != expected:
            return f"event {expected} is missing"
        if prev is None:  # the anchor's own event: its stored hash must be the signed one
            assert anchor is not None
            if link.hash != anchor.head:
                return (
                    f"event {link.seq} differs from the head this controller signed "
                    f"({anchor.head[:16]}…): the chain up to it was rewritten"
                )
        else:
            if link.prev != prev:
                return f"event {link.seq} does not extend the signed chain"
            if link_hash(prev, link.record) != link.hash or not link.columns_match:
                return f"event {link.seq} was modified"
        prev, expected = link.hash, link.seq + 1
    if expected <= seq:
        return f"events {expected}..{seq} are missing"
    return None


def verify(
    links: Iterable[Link],
    checkpoints: Iterable[Checkpoint],
    public_key: Ed25519PublicKey,
    *,
    known_head: Checkpoint | None = None,
) -> Report:
    """Verify a whole chain held in memory."""
    verifier = Verifier(checkpoints, public_key, known_head=known_head)
    for link in links:
        if not verifier.feed(link):
            break
    return verifier.finish()


# -- exports ------------------------------------------------------------------------------
#
# An export is JSON lines, each in canonical form: a signed header, the checkpoints, then
# every event. The header's signature covers the chain head at export time, so a tail cut
# off the file is found like a tail cut off the database, and (since version 2) the number
# and digest of the checkpoint lines, so a checkpoint dropped from the file is found too;
# any edited byte either changes a hash, breaks a signature or breaks the canonical form.

EXPORT_VERSION: Final = 2


def checkpoints_digest(checkpoints: Iterable[Checkpoint]) -> str:
    """SHA-256 over the export's checkpoint lines, in order."""
    digest = hashlib.sha256()
    for checkpoint in checkpoints:
        digest.update(checkpoint_line(checkpoint).encode() + b"\n")
    return digest.hexdigest()


def export_header(
    key: Ed25519PrivateKey,
    *,
    controller: str,
    exported_at: datetime,
    head_seq: int,
    head: str,
    checkpoints: list[Checkpoint],
) -> dict[str, Any]:
    """The signed first line of an export."""
    public = key.public_key().public_bytes_raw()
    header: dict[str, Any] = {
        "helpline_audit_export": EXPORT_VERSION,
        "controller": controller,
        "exported_at": exported_at.isoformat(timespec="microseconds"),
        "head_seq": head_seq,
        "head": head,
        "checkpoints": len(checkpoints),
        "checkpoints_sha256": checkpoints_digest(checkpoints),
        "public_key": b64e(public),
    }
    header["signature"] = b64e(key.sign(canonical(header).encode()))
    return header


def link_line(link: Link) -> str:
    return canonical({"seq": link.seq, "prev": link.prev, "hash": link.hash, "record": link.record})


def checkpoint_line(checkpoint: Checkpoint) -> str:
    return canonical({"checkpoint": checkpoint.as_json()})


def verify_export(lines: Iterable[str], public_key: Ed25519PublicKey) -> Report:
    """Verify an export, line by line, with nothing but the audit public key."""
    report = Report()
    iterator = iter(lines)
    verifier: Verifier | None = None
    checkpoints: list[Checkpoint] = []
    header: dict[str, Any] | None = None
    number = 0
    try:
        for number, raw in enumerate(iterator, start=1):
            if not raw.endswith("\n"):
                report.fail(None, f"line {number} is cut short")
                return report
            line = raw[:-1]
            data = orjson.loads(line)
            if not isinstance(data, dict) or canonical(data) != line:
                report.fail(None, f"line {number} is not in canonical form (edited?)")
                return report
            if number == 1:
                header = _check_header(data, public_key, report)
                if header is None:
                    return report
                continue
            if "checkpoint" in data:
                if verifier is not None:
                    report.fail(None, f"line {number}: a checkpoint after the events")
                    return report
                c = data["checkpoint"]
                checkpoints.append(
                    Checkpoint(int(c["seq"]), str(c["head"]), str(c["at"]), str(c["signature"]))
                )
                continue
            if verifier is None:
                assert header is not None
                verifier = _export_verifier(header, checkpoints, public_key)
                if not verifier.report.ok:
                    return verifier.report
            link = Link(int(data["seq"]), str(data["prev"]), str(data["hash"]), str(data["record"]))
            if not verifier.feed(link):
                return verifier.report
    except (ValueError, KeyError, TypeError) as exc:
        report.fail(None, f"line {number} is not a valid export line: {exc}")
        return report
    if header is None:
        report.fail(None, "the export is empty")
        return report
    if verifier is None:
        verifier = _export_verifier(header, checkpoints, public_key)
        if not verifier.report.ok:
            return verifier.report
    result = verifier.finish()
    if result.ok and result.last_seq != header["head_seq"]:
        result.fail(result.last_seq, "the export holds more events than its header covers")
    return result


def _export_verifier(
    header: dict[str, Any], checkpoints: list[Checkpoint], public_key: Ed25519PublicKey
) -> Verifier:
    """The verifier for an export's events, once its checkpoint lines are all read."""
    known = Checkpoint(int(header["head_seq"]), str(header["head"]), "", "")
    verifier = Verifier(checkpoints, public_key, known_head=known)
    if header["helpline_audit_export"] == 1:
        verifier.report.notes.append(
            "a version 1 export: its header does not cover the checkpoint lines"
        )
    elif header.get("checkpoints") != len(checkpoints) or header.get(
        "checkpoints_sha256"
    ) != checkpoints_digest(checkpoints):
        verifier.report.fail(
            None,
            f"the export holds {len(checkpoints)} checkpoint lines but its signed header "
            f"covers {header.get('checkpoints')}: checkpoint lines were removed or changed",
        )
    return verifier


def _check_header(
    data: dict[str, Any], public_key: Ed25519PublicKey, report: Report
) -> dict[str, Any] | None:
    if data.get("helpline_audit_export") not in (1, EXPORT_VERSION):
        report.fail(None, "line 1 is not a helpline audit export header")
        return None
    unsigned = {k: v for k, v in data.items() if k != "signature"}
    if unsigned.get("public_key") != b64e(public_key.public_bytes_raw()):
        report.fail(None, "the export was signed with another audit key than the one given")
        return None
    try:
        public_key.verify(b64d(str(data.get("signature", ""))), canonical(unsigned).encode())
    except (InvalidSignature, ProtocolError):
        report.fail(None, "the export header's signature does not verify")
        return None
    return data
