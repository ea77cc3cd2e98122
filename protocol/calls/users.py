"""Who may use the controller: ``whoami`` and the admin's ``user.*`` calls."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import model_validator

from protocol.calls.base import Call, Model, Text, Time
from protocol.vocabulary import Role, StaffLevel


class UserInfo(Model):
    name: str
    role: Role
    level: StaffLevel | None
    fingerprint: str
    created_at: Time


class RemovedUser(UserInfo):
    #: the user's API connections closed by the removal
    connections_closed: int


class _RoleAndLevel(Call[UserInfo]):
    """A role, and a support level for technicians only (L1 unless given)."""

    role: Role = "technician"
    level: StaffLevel | None = None

    @model_validator(mode="before")
    @classmethod
    def _level_upper(cls, data: object) -> object:
        if isinstance(data, dict) and isinstance(data.get("level"), str):
            return {**data, "level": data["level"].upper() or None}
        return data

    @model_validator(mode="after")
    def _level_for_technicians(self) -> Self:
        if self.role == "technician" and self.level is None:
            object.__setattr__(self, "level", "L1")
        elif self.role != "technician" and self.level is not None:
            raise ValueError("only technicians have a support level")
        return self


class Whoami(Call[UserInfo]):
    method = "whoami"


class UserAdd(_RoleAndLevel):
    method = "user.add"
    name: Annotated[str, Text(100)]
    public_key: Annotated[str, Text(16384)]


class UserList(Call[list[UserInfo]]):
    method = "user.list"


class UserRemove(Call[RemovedUser]):
    method = "user.remove"
    name: Annotated[str, Text(100)]


class UserSetRole(_RoleAndLevel):
    method = "user.set_role"
    name: Annotated[str, Text(100)]
