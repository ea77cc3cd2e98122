"""The audit log: reading it, verifying it, exporting it, its key, and resuming signing."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from protocol.calls.base import ID_MAX, Call, Model, Since, Text, TicketId, Time


class AuditEventInfo(Model):
    seq: int
    at: Time
    type: str
    actor: str | None
    role: str | None
    source: str | None
    ticket: TicketId | None
    session: str | None
    agent: str | None
    details: dict[str, Any]


class AuditList(Call[list[AuditEventInfo]]):
    """The events that match every filter given, oldest first (the newest ``limit``)."""

    method = "audit.list"
    ticket: TicketId | None = None
    session: Annotated[str, Text(100)] | None = None
    actor: Annotated[str, Text(200)] | None = None
    #: comma-separated types or fnmatch patterns (``consent.*``) over the known types
    type: Annotated[str, Text(1000)] | None = None
    #: also the routine types (``auth.ok``), which are left out unless asked for
    all: bool = False
    since: Since | None = None
    limit: Annotated[int, Field(ge=1, le=100_000, strict=True)] = 1000


class ChainReport(Model):
    """What a walk over the chain found (``helpline audit verify --file`` makes one too)."""

    ok: bool
    events: int
    checkpoints: int
    last_seq: int
    head: str
    #: the first bad link, in words; ``bad_seq`` is its event
    problem: str | None
    bad_seq: int | None
    #: what is worth knowing but not wrong (checkpoints an admin's acceptance set aside)
    notes: tuple[str, ...]


class SigningStatus(Model):
    """Whether the controller signs checkpoints, or stopped on finding tampering."""

    signing: Literal["ok", "stopped"]
    problem: str | None
    since: Time | None
    signed_seq: int
    signed_at: Time | None


class AuditVerified(ChainReport):
    signing: SigningStatus


class AuditVerify(Call[AuditVerified]):
    """Walk the whole stored chain, every checkpoint and the head file."""

    method = "audit.verify"


class SignedCheckpoint(Model):
    seq: int
    head: str
    #: exactly the text that was signed
    at: str
    signature: str


class ExportHeader(Model):
    """The signed first line of an export (``controller.auditchain.export_header``)."""

    helpline_audit_export: int
    controller: str
    exported_at: str
    head_seq: int
    head: str
    checkpoints: int
    checkpoints_sha256: str
    public_key: str
    signature: str


class ChainLink(Model):
    seq: int
    prev: str
    hash: str
    #: the canonical JSON the hash covers
    record: str


class ExportPage(Model):
    """One page of an export: the first carries the header and the checkpoints."""

    header: ExportHeader | None = None
    checkpoints: tuple[SignedCheckpoint, ...] = ()
    #: the last event the export covers (the head when it began)
    until: int
    links: tuple[ChainLink, ...]


class AuditExport(Call[ExportPage]):
    """A page of the chain; ``after=0`` signs a fresh checkpoint and starts an export."""

    method = "audit.export"
    #: the last event already exported; 0 for the first page
    after: Annotated[int, Field(ge=0, le=ID_MAX, strict=True)] = 0
    #: the ``until`` of the first page, on every later page
    until: Annotated[int, Field(ge=0, le=ID_MAX, strict=True)] | None = Field(
        default=None, validate_default=True
    )
    limit: Annotated[int, Field(ge=1, le=20_000, strict=True)] = 5000

    @field_validator("until")
    @classmethod
    def _until_after_the_first_page(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None and info.data.get("after"):
            raise ValueError("required after the first page (the until of the first)")
        return value


class AuditPublicKey(Model):
    #: base64url of the raw Ed25519 key
    public_key: str


class AuditPubkey(Call[AuditPublicKey]):
    """The key an outsider verifies an export with."""

    method = "audit.pubkey"


class AuditAccepted(Model):
    #: the ``audit.accepted`` event that records the acceptance
    accepted_seq: int
    #: what was wrong
    problem: str
    #: the checkpoint signed right after, if signing worked at once
    signed_seq: int | None


class AuditAccept(Call[AuditAccepted]):
    """Accept the stored chain as it is and sign again, after tampering stopped signing."""

    method = "audit.accept"
    reason: Annotated[str, Text(500)]
