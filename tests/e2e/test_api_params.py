"""Every API method, every parameter it reads, every wrong kind of value: a clear refusal.

The table is built from the methods themselves: for each entry of ``METHODS`` the names of
the parameters are its call model's fields (or, for a handler not yet on a model, the names
its source reads), and each is given wrong types,
huge numbers, huge and odd strings, in turn, beside a valid ticket. The answer must be a
result or a refusal with a domain code, never ``internal``, and no error text may carry
SQL or a Python exception name.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import subprocess
from pathlib import Path
from typing import Any

from controller.api import METHODS
from controller.client import ClientError, ClientSettings, Connection
from tests.e2e.conftest import Controller

#: every parameter name any handler reads (the helpers included)
KNOWN = {
    "ticket",
    "other",
    "since",
    "until",
    "limit",
    "type",
    "session",
    "actor",
    "seconds",
    "reason",
    "name",
    "role",
    "level",
    "public_key",
    "after",
    "collectors",
    "timeout",
    "from",
    "to",
    "fix",
    "params",
    "bundle",
    "replace_key",
    "title",
    "customer",
    "priority",
    "channel",
    "link",
    "contact",
    "category",
    "assignee",
    "state",
    "sla",
    "mine",
    "text",
    "internal",
    "resolution",
    "article",
    "article_title",
    "vendor",
    "vendor_ref",
    "kind",
    "by",
    "words",
    "findings",
    "fixes",
    "url",
    "events",
    "secret",
    "id",
    "pending",
    "all",
    "nobody",
    "body",
}
BAD: tuple[Any, ...] = (
    None,
    True,
    2**70,
    -(2**70),
    -1,
    1.5,
    "x" * 100_000,
    "T-" + "9" * 40,
    "\x00",
    [],
    {"a": 1},
)
LEAKS = re.compile(r"SELECT|INSERT|UPDATE |sqlite|asyncpg|Traceback|Error:|KeyError|TypeError")


def _params_of(method: str) -> list[str]:
    route = METHODS[method]
    if route.call is not None:  # its model lists them
        fields = route.call.model_fields.items()
        return sorted({field.alias or name for name, field in fields} | {"ticket"})
    source = inspect.getsource(inspect.unwrap(route.handler))
    names = set(re.findall(r'"([a-z_]+)"', source)) & KNOWN
    return sorted(names | {"ticket"})


#: valid values, so that a call gets past its first parameters to the one under test
#: (the calls change the tickets: later ones may meet a domain refusal, which is fine)
VALID: dict[str, Any] = {
    "ticket": "T-1",
    "other": "T-2",
    "title": "Printer jams",
    "customer": "ACME",
    "text": "a note",
    "reason": "because",
    "resolution": "replaced the toner",
    "words": "printer",
    "body": "text",
    "name": "nobody-such",
    "url": "http://127.0.0.1:9/hook",
    "kind": "relates",
    "to": "L2",
    "fix": "disk.free_space",
}


def _calls() -> list[tuple[str, dict[str, Any]]]:
    calls = []
    for method in sorted(METHODS):
        names = _params_of(method)
        base = {k: v for k, v in VALID.items() if k in names}
        for name in names:
            for value in BAD:
                calls.append((method, {**base, name: value}))
    return calls


def _settings(controller: Controller, tmp: Path, key: Path | None = None) -> ClientSettings:
    pin = controller.json("agent-config", "--out", str(tmp / "a.toml"))["pin"]
    return ClientSettings(
        url=controller.url, pin=pin, key=str(key or controller.home / "admin_ed25519")
    )


async def _call_all(settings: ClientSettings, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    problems = []
    async with Connection(settings) as connection:
        for method, params in calls:
            try:
                await connection.call(method, params)
            except ClientError as exc:
                if exc.code == "internal" or LEAKS.search(exc.message):
                    shown = {k: (repr(v)[:40]) for k, v in params.items()}
                    problems.append(f"{method} {shown}: {exc.code}: {exc.message[:200]}")
    return problems


def test_wrong_parameters_are_bad_requests_never_internal(
    controller: Controller, tmp_path: Path
) -> None:
    controller.open_ticket()
    controller.open_ticket()
    key = tmp_path / "tech"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    controller.json("user", "add", "tina", "--key", f"{key}.pub", "--level", "L3")
    calls = _calls()
    assert len(calls) > 500
    problems = asyncio.run(_call_all(_settings(controller, tmp_path), calls))
    # fix.run is for technicians only: call it as one, so its parameters are reached
    fix_calls = [c for c in calls if c[0] == "fix.run"]
    problems += asyncio.run(_call_all(_settings(controller, tmp_path, key), fix_calls))
    assert problems == [], "\n".join(problems[:40]) + f"\n({len(problems)} in all)"
    # the server is still there, and still serves
    assert controller.json("ticket", "show", "T-1")["id"] == "T-1"


def test_the_refusal_names_the_parameter(controller: Controller, tmp_path: Path) -> None:
    controller.open_ticket()

    async def refusals() -> list[tuple[str, str]]:
        out = []
        async with Connection(_settings(controller, tmp_path)) as connection:
            for method, params in (
                ("audit.list", {"since": 5}),
                ("ticket.link", {"ticket": "T-1", "other": "T-" + "9" * 30}),
                ("ticket.link", {"ticket": 2**70, "other": "T-1"}),
                ("kb.show", {"article": "KB-" + "9" * 30}),
            ):
                try:
                    await connection.call(method, params)
                except ClientError as exc:
                    out.append((exc.code, exc.message))
        return out

    got = asyncio.run(refusals())
    assert [code for code, _ in got] == ["bad_request"] * 4
    for (_, message), name in zip(got, ("since", "other", "ticket", "article"), strict=True):
        assert message.startswith(name), message
        assert len(message) < 200


def test_webhook_log_is_for_every_role_and_shows_no_secrets(
    controller: Controller, tmp_path: Path
) -> None:
    """README and code agree: ``webhook.log`` is open to every role, as a ticket's
    deliveries are in ``ticket show``; whole URLs (``webhook.list``) are admin and auditor."""
    secret_url = "http://127.0.0.1:9/hooks/s3cr3t-token?key=abc"
    controller.json("webhook", "add", secret_url)
    controller.open_ticket()  # an event to deliver (to a closed port: it stays pending)
    key = tmp_path / "tech"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    controller.json("user", "add", "tina", "--key", f"{key}.pub")

    async def as_technician() -> tuple[Any, str]:
        async with Connection(_settings(controller, tmp_path, key)) as connection:
            log = await connection.call("webhook.log", {})
            try:
                await connection.call("webhook.list", {})
            except ClientError as exc:
                return log, exc.code
            return log, "allowed"

    log, listing = asyncio.run(as_technician())
    assert log and {item["endpoint"] for item in log} == {"http://127.0.0.1:9"}
    assert "s3cr3t" not in repr(log)
    assert listing == "forbidden"
