"""The root helper (agent.rootfix) over a real Unix socket, with real signed bundles.

The helper's checks run here in-process, served by :func:`rootfix.serve` on a socket in a
temporary directory; the client is the agent's own :func:`fixes.run_as_root`. The helper
started from the installed .deb, with a real unprivileged agent, is in
tests/packaging/test_deb.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import fixes, rootfix
from agent.config import AgentConfig
from protocol.calls.fixes import FixReport
from tests.agent.test_fixes import ECHO, PINNED, _alive, bundle, make_fix, proposal

pytestmark = pytest.mark.skipif(
    os.name != "posix" or os.geteuid() != 0, reason="the root helper runs as root"
)

WHOAMI = make_fix(
    id="test.whoami",
    command=["{python}", "-c", "import os; print('euid', os.geteuid())"],
    needs_root=True,
)
LINGER = make_fix(
    id="test.linger",
    command=["{python}", "-c", "import os, time; print(os.getpid(), flush=True); time.sleep(600)"],
    needs_root=True,
    timeout=300,
)
SIGNED = bundle(WHOAMI, LINGER)
CONFIG = AgentConfig(url="wss://127.0.0.1:1", pin="00" * 32, fix_key=PINNED)


def settings(tmp_path: Path, **changes: Any) -> rootfix.Settings:
    base: dict[str, Any] = {
        "config": CONFIG,
        "allowed_uids": frozenset({os.geteuid()}),
        "serial_file": tmp_path / "serial",
    }
    base.update(changes)
    return rootfix.Settings(**base)


class Output:
    def __init__(self) -> None:
        self.frames: list[tuple[str, str]] = []

    async def emit(self, stream: str, data: str) -> None:
        self.frames.append((stream, data))

    def text(self, stream: str = "stdout") -> str:
        return "".join(data for name, data in self.frames if name == stream)


@contextlib.asynccontextmanager
async def helper(tmp_path: Path, helper_settings: rootfix.Settings) -> AsyncIterator[str]:
    path = str(tmp_path / "root.sock")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await rootfix.serve(reader, writer, helper_settings)

    server = await asyncio.start_unix_server(handle, path=path, limit=fixes.ROOT_HELPER_MAX_LINE)
    async with server:
        yield path


def ask(
    tmp_path: Path,
    fix_id: str,
    *,
    helper_settings: rootfix.Settings | None = None,
    consent: str = "customer",
    values: dict[str, str] | None = None,
    signed: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> tuple[dict[str, Any], Output]:
    output = Output()

    async def scenario() -> FixReport:
        async with helper(tmp_path, helper_settings or settings(tmp_path)) as path:
            return await fixes.run_as_root(
                path,
                proposal(fix_id, params, signed=signed or SIGNED),
                consent=consent,
                values=values if values is not None else dict(params or {}),
                notes={},
                emit=output.emit,
            )

    return asyncio.run(scenario()), output


def refusal(tmp_path: Path, fix_id: str, **kwargs: Any) -> fixes.Refused:
    with pytest.raises(fixes.Refused) as info:
        ask(tmp_path, fix_id, **kwargs)
    return info.value


def test_a_signed_root_fix_runs_as_root_and_streams_its_output(tmp_path: Path) -> None:
    result, output = ask(tmp_path, "test.whoami")
    assert result.status == "succeeded"
    assert result.stdout.strip() == "euid 0"
    assert output.text() == "euid 0\n"  # streamed before the result
    assert (tmp_path / "serial").read_text().strip() == "10"


def test_a_caller_that_is_not_the_agent_is_refused(tmp_path: Path) -> None:
    refused = refusal(
        tmp_path, "test.whoami", helper_settings=settings(tmp_path, allowed_uids=frozenset({65534}))
    )
    assert refused.code == "not_agent"


def test_the_helper_verifies_the_bundle_with_its_own_key(tmp_path: Path) -> None:
    forged = bundle(WHOAMI, key=Ed25519PrivateKey.generate())
    assert refusal(tmp_path, "test.whoami", signed=forged).code == "bundle_signature"
    tampered = dict(SIGNED)
    tampered["payload"] = tampered["payload"].replace("'euid'", "'owned'")
    assert refusal(tmp_path, "test.whoami", signed=tampered).code == "bundle_signature"


def test_the_helper_refuses_a_rollback_of_the_catalogue(tmp_path: Path) -> None:
    (tmp_path / "serial").write_text("11\n")
    assert refusal(tmp_path, "test.whoami").code == "bundle_rollback"


def test_fixes_that_do_not_need_root_are_not_run_by_the_helper(tmp_path: Path) -> None:
    refused = refusal(tmp_path, "test.echo", params={"message": "hi"})
    assert refused.code == "not_root"
    assert ECHO.needs_root is False


def test_parameters_are_validated_again(tmp_path: Path) -> None:
    restart = "service.restart"
    bad = refusal(tmp_path, restart, params={"service": "evil.service"})
    assert bad.code == "bad_param"


def test_values_other_than_those_shown_to_the_customer_are_refused(tmp_path: Path) -> None:
    refused = refusal(
        tmp_path,
        "service.restart",
        params={"service": "cups.service"},
        values={"service": "ssh.service"},
    )
    assert refused.code == "changed"


def test_unattended_consent_needs_the_root_owned_config_to_say_so(tmp_path: Path) -> None:
    assert refusal(tmp_path, "test.whoami", consent="unattended").code == "consent"
    allowed = settings(
        tmp_path,
        config=AgentConfig(
            url=CONFIG.url, pin=CONFIG.pin, fix_key=PINNED, unattended=("test.whoami",)
        ),
    )
    result, _ = ask(tmp_path, "test.whoami", consent="unattended", helper_settings=allowed)
    assert result.status == "succeeded"
    assert refusal(tmp_path, "test.whoami", consent="because").code == "bad_request"


def test_a_request_that_is_not_json_is_refused(tmp_path: Path) -> None:
    async def scenario() -> FixReport:
        async with helper(tmp_path, settings(tmp_path)) as path:
            reader, writer = await asyncio.open_unix_connection(path)
            writer.write(b"rm -rf /\n")
            await writer.drain()
            answer: dict[str, Any] = json.loads(await reader.readline())
            writer.close()
            return answer

    assert asyncio.run(scenario())["refused"]["code"] == "bad_request"


def test_hanging_up_kills_the_running_fix(tmp_path: Path) -> None:
    """The session ends while a root fix runs: the agent's task is cancelled, the
    connection closes, and the helper kills the fix's process group."""

    async def scenario() -> int:
        started = asyncio.Event()
        pids: list[int] = []

        async def emit(stream: str, data: str) -> None:
            if stream == "stdout":
                pids.append(int(data.split()[0]))
                started.set()

        async with helper(tmp_path, settings(tmp_path)) as path:
            task = asyncio.create_task(
                fixes.run_as_root(
                    path,
                    proposal("test.linger", signed=SIGNED),
                    consent="customer",
                    values={},
                    notes={},
                    emit=emit,
                )
            )
            await asyncio.wait_for(started.wait(), 20)
            assert _alive(pids[0])
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(200):  # bounded: 10 s
                if not _alive(pids[0]):
                    break
                await asyncio.sleep(0.05)
        return pids[0]

    assert not _alive(asyncio.run(scenario()))


async def _whoami_via(path: str) -> FixReport:
    return await fixes.run_as_root(
        path,
        proposal("test.whoami", signed=SIGNED),
        consent="customer",
        values={},
        notes={},
        emit=Output().emit,
    )


def test_no_helper_listening_is_a_clear_refusal(tmp_path: Path) -> None:
    with pytest.raises(fixes.Refused) as info:
        asyncio.run(_whoami_via(str(tmp_path / "absent.sock")))
    assert info.value.code == "root_helper_unavailable"
    assert "systemctl enable --now helpline-agent-root.socket" in info.value.message


def test_a_helper_that_hangs_up_without_an_answer_is_a_refusal(tmp_path: Path) -> None:
    path = str(tmp_path / "mute.sock")

    async def scenario() -> None:
        async def mute(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_unix_server(mute, path=path)
        async with server:
            await _whoami_via(path)

    with pytest.raises(fixes.Refused) as info:
        asyncio.run(scenario())
    assert info.value.code == "root_helper_failed"


# -- setting up: what the helper trusts ----------------------------------------------------


def _config_file(tmp_path: Path, text: str | None = None) -> Path:
    folder = tmp_path / "etc"
    folder.mkdir(mode=0o755)
    path = folder / "agent.toml"
    path.write_text(
        text or f'url = "wss://127.0.0.1:1"\npin = "{"00" * 32}"\nfix_key = "{PINNED}"\n'
    )
    path.chmod(0o644)
    tmp_path.chmod(0o755)
    return path


def test_settings_come_from_a_root_owned_config(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    loaded = rootfix.load_settings(path, ["65534"], tmp_path / "state")
    assert loaded.config.fix_key == PINNED
    assert loaded.allowed_uids == frozenset({65534})
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p.chmod(0o666), "writable only by root"),
        (lambda p: p.parent.chmod(0o777), "writable only by root"),
        (lambda p: os.chown(p, 65534, -1), "owned by root"),
        (
            lambda p: p.write_text('url = "wss://127.0.0.1:1"\npin = "' + "00" * 32 + '"\n'),
            "fix_key",
        ),
    ],
)
def test_a_config_others_could_change_is_refused(
    tmp_path: Path, change: Callable[[Path], object], message: str
) -> None:
    path = _config_file(tmp_path)
    change(path)
    with pytest.raises(rootfix.SetupError, match=message):
        rootfix.load_settings(path, ["65534"], tmp_path / "state")


def test_root_and_unknown_users_are_not_agents(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    with pytest.raises(rootfix.SetupError, match="root needs no helper"):
        rootfix.load_settings(path, ["0"], tmp_path / "state")
    with pytest.raises(rootfix.SetupError, match="no such user"):
        rootfix.load_settings(path, ["no-such-user-here"], tmp_path / "state")


def test_peer_credentials_are_the_kernels(tmp_path: Path) -> None:
    left, right = socket.socketpair(socket.AF_UNIX)
    with left, right:
        pid, uid, _gid = rootfix.peer_credentials(left)
    assert (pid, uid) == (os.getpid(), os.geteuid())
