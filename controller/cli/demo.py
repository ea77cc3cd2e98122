"""``helpline demo``: the whole journey on this machine, with real processes and real TLS.

A controller in a temporary home on a free loopback port, a demo ticket, a session code, a
local agent that joins with ``--yes``, one diagnostics snapshot attached to the ticket.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from controller.cli.output import stderr, stdout
from controller.cli.render import render_diagnostics
from controller.client import ClientError, Connection, load_client_settings
from controller.home import ControllerHome
from controller.setup import initialise
from protocol.calls.diagnostics import DiagRun


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the controller exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the controller did not listen on port {port} within {seconds:g} s")


async def _journey(home: Path, base: Path) -> int:
    settings = load_client_settings(home)
    async with Connection(settings) as api:
        ticket = await api.call(
            "ticket.open",
            {"title": "Laptop slow (demo)", "customer": "ACME", "priority": "P2"},
        )
        stdout.print(f"[bold]2.[/] technician opened {ticket['id']}: {ticket['title']}")
        issued = await api.call("code.issue", {"ticket": ticket["id"]})
        stdout.print(f"[bold]3.[/] session code for {ticket['id']}: [bold]{issued['code']}[/]")
        agent = subprocess.Popen(  # noqa: ASYNC220 - started once, never awaited on
            [
                sys.executable,
                "-m",
                "agent",
                "join",
                issued["code"],
                "--yes",
                "--config",
                str(base / "agent.toml"),
                "--home",
                str(base / "agent"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        try:
            for _ in range(200):
                live = [s for s in await api.call("sessions.list") if s["connected"]]
                if live or agent.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if not live:
                output = agent.stdout.read().decode() if agent.stdout else ""
                stderr.print(f"[red]the agent did not join:[/]\n{escape(output)}")
                return 1
            stdout.print(
                f"[bold]4.[/] customer agent joined with consent: session "
                f"{live[0]['id']} on {live[0]['ticket']}"
            )
            result = await api.request(DiagRun(ticket=ticket["id"]))
            stdout.print(
                f"[bold]5.[/] diagnostics from the customer's machine "
                f"({result.data.get('duration_ms', '?')} ms on the agent):"
            )
            render_diagnostics(stdout, result.data, [f.model_dump() for f in result.findings])
            shown = await api.call("ticket.show", {"ticket": ticket["id"]})
            stdout.print(
                f"[bold]6.[/] {shown['id']} now holds {len(shown['attachments'])} "
                "attachment(s); `helpline ticket show T-1 --json` gives them whole."
            )
        finally:
            agent.send_signal(signal.SIGTERM)
            agent.wait(10)
    return 0


def run_demo(keep: bool) -> int:
    """Run the demo; returns the exit status."""
    base = Path(tempfile.mkdtemp(prefix="helpline-demo-"))
    home = base / "controller"
    port = free_port()
    url = f"wss://127.0.0.1:{port}"
    server: subprocess.Popen[bytes] | None = None
    try:
        made: dict[str, Any] = asyncio.run(
            initialise(ControllerHome(home), url, None, "helpline demo", "admin", None)
        )
        stdout.print(f"[bold]1.[/] controller home at {home}, certificate sha256:{made['pin']}")
        (base / "agent.toml").write_text(f'url = "{url}"\npin = "{made["pin"]}"\n')
        server = subprocess.Popen(
            [sys.executable, "-m", "controller", "serve", "--home", str(home)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_for_port(port, server)
        stdout.print(f"   controller serving on {url}")
        return asyncio.run(_journey(home, base))
    except (ClientError, RuntimeError) as exc:
        stderr.print(f"[red]demo failed:[/] {escape(str(exc))}")
        return 1
    finally:
        if server is not None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        if keep:
            stdout.print(f"demo files kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
