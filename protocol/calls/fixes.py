"""Fixes: publish the signed catalogue, list it, propose one fix to a ticket's agent.

:class:`FixReport` is also what an agent sends back about a proposal (``Result.data`` of a
``fix_proposal``, and what the root helper returns): the agent writes it, the controller
audits it, stores it on the ticket and hands it on as the result of ``fix.run``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError

from protocol.calls.base import Call, Model, Text, TicketId
from protocol.catalogue import SignedBundle
from protocol.vocabulary import StaffLevel

#: how a proposal ended on the agent: it ran (and how that went), or it never ran
FixStatus = Literal["succeeded", "failed", "timed_out", "refused"]
#: who allowed it: the customer when asked, at join (``--allow``), or the agent's config
Consent = Literal["customer", "preapproved", "unattended"]


class Truncated(Model):
    """Which captured streams hit the agent's output cap."""

    stdout: bool = False
    stderr: bool = False


class FixReport(Model):
    """What an agent reports about one fix proposal.

    A refusal (``status`` refused) carries ``fix`` and ``code`` (declined, bad_param,
    bundle_signature…; the message is the result's error); a run carries the rest.
    """

    #: the fix's id (an agent may leave it out: the controller knows what it proposed)
    fix: str | None = None
    status: FixStatus
    #: why it did not run
    code: str | None = None
    #: a run that could not start, or the refusal's message (in a ``fix.run`` result)
    error: str | None = None
    title: str | None = None
    sha256: str | None = None
    bundle_serial: int | None = None
    #: the parameters as the fix got them (paths resolved)
    params: dict[str, str] | None = None
    #: who allowed it (one of ``Consent`` from our agents; shown as sent, whatever it is)
    consent: str | None = None
    #: the finding the fix is meant to clear
    targets: str | None = None
    #: "root helper" when the root helper ran it
    privileged: str | None = None
    exit_code: int | None = None
    argv: tuple[str, ...] | None = None
    duration_ms: float | None = None
    timed_out: bool | None = None
    stdout: str | None = None
    stderr: str | None = None
    truncated: Truncated | None = None

    def data(self) -> dict[str, Any]:
        """As the agent sends it (``Result.data``): the fields it has, nothing more."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def read(cls, data: Any) -> FixReport | None:
        """``data`` from an agent as a report, or None when it is not one.

        Agents are not trusted: a field of another version is left out and anything that
        does not fit is None, never an exception in the reader.
        """
        if not isinstance(data, dict):
            return None
        try:
            return cls.model_validate({k: v for k, v in data.items() if k in cls.model_fields})
        except ValidationError:
            return None


class AgentBuild(Model):
    kind: str
    path: str


class FixesPublished(Model):
    serial: int
    #: the catalogue key, base64url
    key: str
    fixes: tuple[str, ...]
    #: the first bundle pins its key
    key_pinned: bool
    #: agents built here that carry no or another catalogue key: they refuse every fix
    rebuild: tuple[AgentBuild, ...]


class FixesPublish(Call[FixesPublished]):
    method = "fixes.publish"
    bundle: SignedBundle
    #: accept a bundle signed with another key than the pinned one
    replace_key: bool = False


class FixInfo(Model):
    id: str
    title: str
    description: str
    min_level: StaffLevel
    needs_root: bool
    reversible: bool
    targets: str | None
    platforms: tuple[str, ...]
    timeout: float
    #: each parameter's schema, as the catalogue declares it
    params: dict[str, dict[str, Any]]
    sha256: str
    #: the rule of the ticket's finding that suggests it (``fixes.list`` with a ticket)
    suggested_for: str | None


class FixCatalogue(Model):
    serial: int
    fixes: tuple[FixInfo, ...]


class FixesList(Call[FixCatalogue]):
    method = "fixes.list"
    #: suggest for this ticket's findings first
    ticket: TicketId | None = None


class Verification(Model):
    """Whether the finding a fix targets cleared: the ticket's snapshot before, a re-run after."""

    targets: str
    #: False when the follow-up diagnostics did not come (``note`` says why)
    checked: bool
    note: str | None = None
    #: None when no snapshot on the ticket had looked
    present_before: bool | None = None
    present_after: bool | None = None
    #: cleared, still there, appeared, not present before or after, …
    outcome: str | None = None
    cleared: bool | None = None
    #: the titles of the findings still there
    remaining: tuple[str, ...] | None = None
    #: the follow-up diagnostics request
    request: str | None = None


class FixOutcome(FixReport):
    """The agent's report, with what the controller knows: ticket, request, verification."""

    ticket: TicketId
    request: str
    verification: Verification | None = None


class FixRun(Call[FixOutcome]):
    method = "fix.run"
    ticket: TicketId
    fix: Annotated[str, Text(48)]
    #: the fix's parameters by name (``params`` on the wire: ``Call.params`` is taken); the
    #: catalogue's schema checks the values
    values: Annotated[dict[Annotated[str, Text(32)], str | int], Field(max_length=32)] = Field(
        default={}, alias="params"
    )
