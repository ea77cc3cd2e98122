"""``whoami`` and the admin's ``user.*`` calls."""

from __future__ import annotations

from controller.api.registry import ADMINS, ANYONE, AUDITORS, ROUTES, ApiError, Context, utcnow
from controller.store import User
from protocol.calls.users import (
    RemovedUser,
    UserAdd,
    UserInfo,
    UserList,
    UserRemove,
    UserSetRole,
    Whoami,
)
from protocol.errors import ErrorCode


def user_info(user: User) -> UserInfo:
    return UserInfo(
        name=user.name,
        role=user.role,
        level=user.level,
        fingerprint=user.fingerprint,
        created_at=user.created_at,
    )


@ROUTES.handler(Whoami, roles=ANYONE)
async def whoami(ctx: Context, call: Whoami) -> UserInfo:
    return user_info(ctx.caller.user)


@ROUTES.handler(UserAdd, roles=ADMINS)
async def user_add(ctx: Context, call: UserAdd) -> UserInfo:
    import asyncssh

    try:
        key = asyncssh.import_public_key(call.public_key)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ApiError(ErrorCode.BAD_REQUEST, f"not an SSH public key: {exc}") from None
    try:
        user = await ctx.store.add_user(
            call.name,
            call.role,
            call.level,
            key.export_public_key().decode().strip(),
            key.get_fingerprint("sha256"),
            utcnow(),
        )
    except ValueError as exc:
        raise ApiError(ErrorCode.CONFLICT, str(exc)) from None
    await ctx.audit(
        "user.added",
        details={
            "user": call.name,
            "new_role": call.role,
            "level": call.level,
            "key": user.fingerprint,
        },
    )
    return user_info(user)


@ROUTES.handler(UserList, roles=AUDITORS)
async def user_list(ctx: Context, call: UserList) -> list[UserInfo]:
    return [user_info(user) for user in await ctx.store.list_users()]


@ROUTES.handler(UserRemove, roles=ADMINS)
async def user_remove(ctx: Context, call: UserRemove) -> RemovedUser:
    if call.name == ctx.caller.user.name:
        raise ApiError(ErrorCode.BAD_REQUEST, "you cannot remove yourself; ask another admin")
    removed = await ctx.store.remove_user(call.name, utcnow())
    if removed is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no user {call.name!r}")
    closed = await ctx.services.revoke(call.name, "access revoked")
    await ctx.audit(
        "user.removed",
        details={"user": call.name, "key": removed.fingerprint, "connections_closed": closed},
    )
    return RemovedUser(**user_info(removed).model_dump(), connections_closed=closed)


@ROUTES.handler(UserSetRole, roles=ADMINS)
async def user_set_role(ctx: Context, call: UserSetRole) -> UserInfo:
    before = next((u for u in await ctx.store.list_users() if u.name == call.name), None)
    if before is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"there is no user {call.name!r}")
    updated = await ctx.store.set_role(call.name, call.role, call.level)
    assert updated is not None
    closed = await ctx.services.revoke(call.name, "role changed: log in again")
    await ctx.audit(
        "user.role_changed",
        details={
            "user": call.name,
            "from": [before.role, before.level],
            "to": [call.role, call.level],
            "connections_closed": closed,
        },
    )
    return user_info(updated)
