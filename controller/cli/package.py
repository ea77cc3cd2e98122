"""``helpline package …``: build the agent for this controller's customers.

``agent`` writes the single-file agent (``helpline-agent.pyz`` and its ``.sha256``);
``deb`` writes the Debian package (and its ``.sha256``). Both carry this controller's URL
and certificate pin; the build itself is :mod:`helpline_packaging`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from controller import artefacts
from controller.cli.common import HomeOpt, JsonOpt
from controller.cli.output import emit, fail, stderr, stdout

if TYPE_CHECKING:  # the build is imported when a command runs, not with the CLI
    from helpline_packaging.bundle import Bundle
    from helpline_packaging.pyz import Built

package_app = typer.Typer(
    help="Build the agent for customers: a single file (.pyz) or a .deb.", no_args_is_help=True
)

OutOpt = Annotated[Path, typer.Option("--out", help="Directory to write the files into.")]
UnattendedOpt = Annotated[
    list[str] | None,
    typer.Option(help="A fix this (managed) agent runs without asking; repeatable."),
]


def _config_text(
    home: Path | None, unattended: list[str] | None, *, root_helper: str | None = None
) -> tuple[str, Path, str | None]:
    """The agent config for this controller, as `helpline agent-config` would write it,
    the home, and the fix-catalogue key the agent will carry."""
    from controller.catalogue import PublishedCatalogue
    from controller.home import ControllerHome, HomeError
    from helpline_packaging import agent_config_text

    target = ControllerHome.resolve(home)
    try:
        config = target.load()
        pin = target.pin()
    except HomeError as exc:
        fail("not_configured", str(exc))
    fix_key = PublishedCatalogue(target.path).key()
    if fix_key is None:
        stderr.print(
            "[yellow]warning:[/] no fix catalogue is published on this controller, so this "
            "agent carries no catalogue key and will refuse every fix; publish one first "
            "(`helpline fixes sign --builtin …`, `helpline fixes publish`) and build again",
            highlight=False,
            soft_wrap=True,
        )
    text = agent_config_text(
        config.url,
        pin,
        name=config.name,
        fix_key=fix_key,
        unattended=unattended or (),
        root_helper=root_helper,
    )
    return text, target.path, fix_key


def _record(home: Path, kind: str, built: Built, fix_key: str | None) -> None:
    try:
        artefacts.record(home, kind, built.path, built.sha256, fix_key)
    except OSError as exc:  # the agent is built; only the hints for later are lost
        stderr.print(
            f"[yellow]warning:[/] cannot record the build in {home}: {exc}", highlight=False
        )


def _collect() -> Bundle:
    from helpline_packaging.bundle import BundleError, collect

    stderr.print("collecting agent/, protocol/ and their dependencies…", highlight=False)
    try:
        return collect()
    except BundleError as exc:
        fail("not_configured", str(exc))


def _report(
    kind: str,
    built: Built,
    bundle: Bundle,
    started: float,
    as_json: bool,
    fix_key: str | None,
) -> None:
    data = {
        "kind": kind,
        "fix_key": fix_key,
        "path": str(built.path),
        "sha256": built.sha256,
        "checksum_file": str(built.checksum_path),
        "size": built.size,
        "seconds": round(time.monotonic() - started, 1),
        **bundle.summary(),
    }

    def render(d: dict[str, Any]) -> None:
        stdout.print(f"[green]{d['kind']} written[/] {d['path']} ({d['size'] / 1e6:.1f} MB)")
        stdout.print(f"  sha256  {d['sha256']}  ({d['checksum_file']})")
        stdout.print(f"  for     {d['target']}")
        carried = ", ".join(f"{x['name']} {x['version']}" for x in d["dependencies"])
        stdout.print(f"  carries agent, protocol, {carried}", highlight=False)

    emit(data, as_json, render)


@package_app.command("agent")
def agent(
    out: OutOpt, unattended: UnattendedOpt = None, home: HomeOpt = None, as_json: JsonOpt = False
) -> None:
    """Build the single-file agent (helpline-agent.pyz + .sha256) for this controller."""
    from helpline_packaging.pyz import build_pyz

    started = time.monotonic()
    config, target, fix_key = _config_text(home, unattended)
    bundle = _collect()
    stderr.print(f"writing {out / 'helpline-agent.pyz'}…", highlight=False)
    try:
        built = build_pyz(bundle, config, out)
    except OSError as exc:
        fail("bad_request", f"cannot write to {out}: {exc}")
    _record(target, "pyz", built, fix_key)
    _report("single-file agent", built, bundle, started, as_json, fix_key)


@package_app.command("deb")
def deb(
    out: OutOpt,
    home: HomeOpt = None,
    revision: Annotated[
        int, typer.Option(min=1, help="Debian revision; raise it to ship an upgrade.")
    ] = 1,
    unattended: UnattendedOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Build the .deb (hardened systemd unit, system user) for this controller."""
    from helpline_packaging.bundle import BundleError
    from helpline_packaging.deb import ROOT_SOCKET, build_deb

    started = time.monotonic()
    config, target, fix_key = _config_text(home, unattended, root_helper=ROOT_SOCKET)
    bundle = _collect()
    stderr.print("compiling and packing the .deb…", highlight=False)
    try:
        built = build_deb(bundle, config, out, revision=revision)
    except BundleError as exc:
        fail("not_configured", str(exc))
    except OSError as exc:
        fail("bad_request", f"cannot write to {out}: {exc}")
    _record(target, "deb", built, fix_key)
    _report(".deb", built, bundle, started, as_json, fix_key)
