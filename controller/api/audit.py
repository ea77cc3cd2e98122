"""``audit.*``: the audit log for admins and auditors; ``audit.accept`` for admins only.

``audit.list``, ``audit.verify`` and ``audit.export`` walk whole tables: they are heavy
(one at a time controller-wide, one per user).
"""

from __future__ import annotations

from controller import auditchain
from controller.api.registry import ADMINS, AUDITORS, ROUTES, ApiError, Context, utcnow
from controller.audit import (
    EVENT_TYPES,
    ROUTINE_TYPES,
    AuditNothingToAccept,
    AuditTampered,
    match_types,
    public_text,
)
from protocol.calls.audit import (
    AuditAccept,
    AuditAccepted,
    AuditEventInfo,
    AuditExport,
    AuditList,
    AuditPubkey,
    AuditPublicKey,
    AuditVerified,
    AuditVerify,
    ChainLink,
    ExportHeader,
    ExportPage,
    SignedCheckpoint,
)
from protocol.calls.base import since_moment
from protocol.errors import ErrorCode


@ROUTES.handler(AuditList, roles=AUDITORS, heavy=True)
async def audit_list(ctx: Context, call: AuditList) -> list[AuditEventInfo]:
    types = None
    if call.type is not None:
        # a type no longer written still names its old events
        known = EVENT_TYPES | await ctx.store.audit_types()
        try:
            types = match_types(call.type, known)
        except ValueError as exc:
            raise ApiError(ErrorCode.BAD_REQUEST, str(exc)) from None
    events = await ctx.store.audit_events(
        types=types,
        hide_types=() if call.all or types is not None else ROUTINE_TYPES,
        ticket_id=call.ticket,
        session_id=call.session,
        actor=call.actor,
        since=since_moment(call.since, utcnow()) if call.since is not None else None,
        limit=call.limit,
    )
    return [
        AuditEventInfo(
            seq=e.id,
            at=e.at,
            type=e.type,
            actor=e.actor,
            role=e.role,
            source=e.source,
            ticket=e.ticket_id or None,
            session=e.session_id,
            agent=e.agent_id,
            details=e.details,
        )
        for e in events
    ]


@ROUTES.handler(AuditVerify, roles=AUDITORS, heavy=True)
async def audit_verify(ctx: Context, call: AuditVerify) -> AuditVerified:
    await ctx.progress("walking the audit chain")
    log = ctx.services.audit_log
    report = await log.verify()
    await ctx.audit(
        "audit.verified",
        details={"ok": report.ok, "events": report.events, "problem": report.problem},
    )
    return AuditVerified.model_validate({**report.as_json(), "signing": log.status()})


@ROUTES.handler(AuditExport, roles=AUDITORS, heavy=True)
async def audit_export(ctx: Context, call: AuditExport) -> ExportPage:
    header = None
    checkpoints: list[auditchain.Checkpoint] = []
    until = call.until
    if call.after == 0:
        # the export covers the chain as it is now, under a fresh checkpoint
        log = ctx.services.audit_log
        try:
            await log.checkpoint()
        except AuditTampered as exc:
            raise ApiError(ErrorCode.TAMPERED, str(exc)) from None
        seq, head = await ctx.store.audit_head()
        until = seq
        # checkpoints an admin's acceptance set aside stay out: the export verifies alone
        superseded = await log.superseded()
        checkpoints = [
            c
            for c in await ctx.store.audit_checkpoints()
            if c.seq <= seq and (c.seq, c.head) not in superseded
        ]
        header = ExportHeader.model_validate(
            auditchain.export_header(
                log.key,
                controller=ctx.services.name,
                exported_at=utcnow(),
                head_seq=seq,
                head=head,
                checkpoints=checkpoints,
            )
        )
        await ctx.audit("audit.exported", details={"head_seq": seq})
    assert until is not None  # the call's validation requires it after the first page
    links = await ctx.store.audit_links(
        call.after, min(call.limit, max(until - call.after, 0)), check_columns=False
    )
    return ExportPage(
        header=header,
        checkpoints=tuple(SignedCheckpoint.model_validate(c.as_json()) for c in checkpoints),
        until=until,
        links=tuple(ChainLink(seq=x.seq, prev=x.prev, hash=x.hash, record=x.record) for x in links),
    )


@ROUTES.handler(AuditPubkey, roles=AUDITORS)
async def audit_pubkey(ctx: Context, call: AuditPubkey) -> AuditPublicKey:
    return AuditPublicKey(public_key=public_text(ctx.services.audit_log.key.public_key()))


@ROUTES.handler(AuditAccept, roles=ADMINS)
async def audit_accept(ctx: Context, call: AuditAccept) -> AuditAccepted:
    user = ctx.caller.user
    try:
        accepted = await ctx.services.audit_log.accept(
            actor=user.name, role=user.role, source=ctx.caller.source, reason=call.reason
        )
    except AuditNothingToAccept as exc:
        raise ApiError(ErrorCode.CONFLICT, str(exc)) from None
    except AuditTampered as exc:
        raise ApiError(ErrorCode.TAMPERED, str(exc)) from None
    checkpoint = accepted["checkpoint"]
    return AuditAccepted(
        accepted_seq=accepted["accepted"],
        problem=accepted["problem"],
        signed_seq=checkpoint.seq if checkpoint is not None else None,
    )
