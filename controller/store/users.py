"""Users (technicians, admins, auditors) and the session codes they issue."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controller.store.atomic import atomic_methods
from controller.store.engine import StoreBase, utc
from controller.store.schema import CodeRow, TicketRow, UserRow
from protocol.vocabulary import ROLES, STAFF_LEVELS


@dataclass(frozen=True)
class User:
    id: int
    name: str
    role: str
    level: str | None
    public_key: str
    fingerprint: str
    created_at: datetime
    removed_at: datetime | None


@dataclass(frozen=True)
class Code:
    code_hash: bytes
    ticket_id: int
    issued_by: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None


RefusalReason = Literal["unknown", "expired", "used"]

_REFUSALS: Final[dict[str, str]] = {
    "unknown": "no such session code was issued",
    "expired": "the session code has expired",
    "used": "the session code has already been used",
}


class CodeRefused(Exception):
    """A session code could not be consumed; ``reason`` says why."""

    def __init__(self, reason: RefusalReason) -> None:
        self.reason: RefusalReason = reason
        super().__init__(_REFUSALS[reason])


@atomic_methods
class UserStore(StoreBase):
    """Users and session codes (part of ``Store``)."""

    async def add_user(
        self,
        name: str,
        role: str,
        level: str | None,
        public_key: str,
        fingerprint: str,
        now: datetime,
    ) -> User:
        """Enrol a user; names and key fingerprints are unique among active users."""
        _check_role(role, level)
        try:
            async with self._write() as s, s.begin():
                clash = await s.scalar(
                    select(UserRow).where(
                        UserRow.removed_at.is_(None),
                        (UserRow.name == name) | (UserRow.fingerprint == fingerprint),
                    )
                )
                if clash is not None:
                    raise ValueError(_user_clash(clash, name))
                row = UserRow(
                    name=name,
                    role=role,
                    level=level,
                    public_key=public_key,
                    fingerprint=fingerprint,
                    created_at=now,
                )
                s.add(row)
        except IntegrityError as exc:
            # Another controller enrolled the same name or key between check and insert.
            raise ValueError(f"user {name!r} or key {fingerprint} is already enrolled") from exc
        return _user(row)

    async def remove_user(self, name: str, now: datetime) -> User | None:
        """Mark an active user removed (the row stays for the record); None if none."""
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(UserRow)
                .where(UserRow.name == name, UserRow.removed_at.is_(None))
                .values(removed_at=now)
                .returning(UserRow)
            )
            return None if row is None else _user(row)

    async def user_by_fingerprint(self, fingerprint: str) -> User | None:
        """The active user whose key has this fingerprint, if any."""
        async with self._read() as s:
            row = await s.scalar(
                select(UserRow).where(
                    UserRow.fingerprint == fingerprint, UserRow.removed_at.is_(None)
                )
            )
            return None if row is None else _user(row)

    async def user_by_name(self, name: str) -> User | None:
        """The active user with this name, if any."""
        async with self._read() as s:
            row = await s.scalar(
                select(UserRow).where(UserRow.name == name, UserRow.removed_at.is_(None))
            )
            return None if row is None else _user(row)

    async def list_users(self, *, include_removed: bool = False) -> list[User]:
        """Users in enrolment order; removed ones only when asked for."""
        query = select(UserRow).order_by(UserRow.id)
        if not include_removed:
            query = query.where(UserRow.removed_at.is_(None))
        async with self._read() as s:
            return [_user(row) for row in await s.scalars(query)]

    async def set_role(self, name: str, role: str, level: str | None) -> User | None:
        """Change an active user's role (and level); None when there is no such user."""
        _check_role(role, level)
        async with self._write() as s, s.begin():
            row = await s.scalar(
                update(UserRow)
                .where(UserRow.name == name, UserRow.removed_at.is_(None))
                .values(role=role, level=level)
                .returning(UserRow)
            )
            return None if row is None else _user(row)

    # session codes

    async def add_code(
        self,
        code_hash: bytes,
        ticket_id: int,
        issued_by: str,
        now: datetime,
        expires_at: datetime,
    ) -> Code:
        """Store the hash of a freshly issued code for a ticket."""
        row = CodeRow(
            code_hash=code_hash,
            ticket_id=ticket_id,
            issued_by=issued_by,
            created_at=now,
            expires_at=expires_at,
        )
        try:
            async with self._write() as s, s.begin():
                if await s.get(TicketRow, ticket_id) is None:
                    raise ValueError(f"no ticket T-{ticket_id}")
                s.add(row)
        except IntegrityError as exc:
            raise ValueError("a code with this hash already exists") from exc
        return _code(row)

    async def consume_code(self, code_hash: bytes, now: datetime) -> Code:
        """Use a code once; raise ``CodeRefused`` if it is unknown, expired or used."""
        async with self._write() as s, s.begin():
            # One conditional UPDATE is the whole decision, so of any number of concurrent
            # consumers (on any replica) exactly one sees a row come back.
            row = await s.scalar(
                update(CodeRow)
                .where(
                    CodeRow.code_hash == code_hash,
                    CodeRow.used_at.is_(None),
                    CodeRow.expires_at > now,
                )
                .values(used_at=now)
                .returning(CodeRow)
            )
            if row is not None:
                return _code(row)
            existing = await s.get(CodeRow, code_hash)
        if existing is None:
            raise CodeRefused("unknown")
        if existing.used_at is not None:
            raise CodeRefused("used")
        raise CodeRefused("expired")


def _check_role(role: str, level: str | None) -> None:
    if role not in ROLES:
        raise ValueError(f"role must be one of {sorted(ROLES)}, not {role!r}")
    if role == "technician" and level not in STAFF_LEVELS:
        raise ValueError(f"a technician needs a level of {sorted(STAFF_LEVELS)}, not {level!r}")
    if role != "technician" and level is not None:
        raise ValueError(f"only technicians have a level; {role} was given {level!r}")


def _user_clash(row: UserRow, name: str) -> str:
    if row.name == name:
        return f"a user named {name!r} is already enrolled"
    return f"this key ({row.fingerprint}) is already enrolled for user {row.name!r}"


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        name=row.name,
        role=row.role,
        level=row.level,
        public_key=row.public_key,
        fingerprint=row.fingerprint,
        created_at=utc(row.created_at),
        removed_at=utc(row.removed_at),
    )


def _code(row: CodeRow) -> Code:
    return Code(
        code_hash=row.code_hash,
        ticket_id=row.ticket_id,
        issued_by=row.issued_by,
        created_at=utc(row.created_at),
        expires_at=utc(row.expires_at),
        used_at=utc(row.used_at),
    )
