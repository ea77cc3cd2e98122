"""The call registry: each handler declared once with its call model and its roles.

::

    @ROUTES.handler(SessionsList, roles=ANYONE)
    async def sessions_list(ctx: Context, call: SessionsList) -> list[SessionInfo]: ...

The endpoint (``controller/api/endpoint.py``) looks the method up here, checks the role,
validates the parameters into the call model (a failure is ``bad_request`` naming the
parameter), runs the handler and dumps its result with the call's result type. Handlers see
a :class:`Context`: the caller, a progress callback and the narrow services they use, never
the server itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Generic, Protocol, TypeVar

from protocol.calls import Call
from protocol.errors import ErrorCode
from protocol.vocabulary import Role

if TYPE_CHECKING:
    from controller.audit import AuditLog
    from controller.catalogue import PublishedCatalogue
    from controller.findings import Catalogue
    from controller.server import AgentLink
    from controller.store import Store, User
    from controller.tickets.desk import TicketDesk

C = TypeVar("C", bound=Call[Any])
R = TypeVar("R")

ANYONE: Final[frozenset[Role]] = frozenset({"admin", "technician", "auditor"})
#: the roles that work on tickets and machines
WORKERS: Final[frozenset[Role]] = frozenset({"admin", "technician"})
ADMINS: Final[frozenset[Role]] = frozenset({"admin"})
#: the roles that read the record
AUDITORS: Final[frozenset[Role]] = frozenset({"admin", "auditor"})


class ApiError(Exception):
    """A refused call; ``code`` maps to the CLI's exit status."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def utcnow() -> datetime:
    return datetime.now(UTC)


class Audit(Protocol):
    async def __call__(self, type: str, **fields: Any) -> None: ...


class Links(Protocol):
    """The live agent connections, by session and by ticket."""

    links: dict[str, AgentLink]

    def link_for_ticket(self, ticket_id: int) -> AgentLink | None: ...

    async def finish_session(self, link: AgentLink, reason: str, *, by: str) -> None: ...


class Progress(Protocol):
    async def __call__(
        self, stage: str, stream: str | None = None, data: str | None = None
    ) -> None: ...


@dataclass(frozen=True)
class Services:
    """What handlers may use: built once by the server, shared by every call."""

    store: Store
    audit: Audit
    audit_log: AuditLog
    links: Links
    desk: TicketDesk
    #: the controller's home directory (agent builds, the fix catalogue)
    home: Path
    #: the controller's name, as agents and exports show it
    name: str
    pepper: bytes
    #: close every API connection of a user, with a reason; how many were closed
    revoke: Callable[[str, str], Awaitable[int]]
    #: the signed fix catalogue published in the home
    fixes: PublishedCatalogue
    #: the findings rules (``controller/rules.toml``)
    rules: Catalogue


@dataclass(frozen=True)
class Caller:
    user: User
    source: str


@dataclass(frozen=True)
class Context:
    """One call's view of the controller."""

    caller: Caller
    services: Services
    progress: Progress

    @property
    def store(self) -> Store:
        return self.services.store

    async def audit(self, type: str, **fields: Any) -> None:
        """Record ``type`` as done by the caller (actor, role and source filled in)."""
        user = self.caller.user
        await self.services.audit(
            type, actor=user.name, role=user.role, source=self.caller.source, **fields
        )

    async def ticket(self, ticket_id: int) -> Any:
        """The ticket, or ``not_found``."""
        ticket = await self.services.store.get_ticket(ticket_id)
        if ticket is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"there is no ticket T-{ticket_id}")
        return ticket


Handler = Callable[[Context, C], Awaitable[Any]]


@dataclass(frozen=True)
class Route(Generic[C]):
    method: str
    roles: frozenset[Role]
    #: walks whole tables: one at a time controller-wide, one per user at all
    heavy: bool
    call: type[C]
    handler: Handler[C]


class Registry:
    """Every API method, its roles and its handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Route[Any]] = {}

    def handler(
        self, call: type[C], *, roles: frozenset[Role], heavy: bool = False
    ) -> Callable[[Handler[C]], Handler[C]]:
        """Declare the handler of ``call``, allowed for ``roles``."""

        def register(function: Handler[C]) -> Handler[C]:
            self._add(Route(call.method, roles, heavy, call, function))
            return function

        return register

    def _add(self, route: Route[Any]) -> None:
        if route.method in self.routes:
            raise ValueError(f"two handlers for {route.method}")
        self.routes[route.method] = route

    def __contains__(self, method: object) -> bool:
        return method in self.routes

    def get(self, method: str) -> Route[Any] | None:
        return self.routes.get(method)


ROUTES = Registry()
