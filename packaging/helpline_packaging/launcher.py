#!/usr/bin/python3 -IB
"""``helpline-agent`` as the .deb installs it: run the agent as the owner of its state.

Installed as ``/usr/lib/helpline-agent/helpline-agent`` (``/usr/bin/helpline-agent`` links
here); the agent's code and libraries are in ``lib/`` beside it. Defaults: config
``/etc/helpline-agent/agent.toml``, state ``/var/lib/helpline-agent``
(``HELPLINE_AGENT_CONFIG``, ``HELPLINE_AGENT_HOME`` or ``--home`` choose others).

The owner of the state directory is the account the agent runs as (the package makes it
``helpline-agent``). Root is switched to that account first, so ``sudo helpline-agent join
CODE`` works and never leaves root-owned files in the state; any other user is refused
with what to do. ``-I`` keeps the caller's environment and user site out of the import
path; ``-B`` writes no bytecode into the read-only install (it ships compiled).
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

SYSTEM_CONFIG = "/etc/helpline-agent/agent.toml"
SYSTEM_HOME = "/var/lib/helpline-agent"
EXIT_USAGE = 2


def _fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USAGE)


def state_dir(argv: list[str]) -> str:
    """The state directory this run will use: ``--home``, else the environment."""
    for index, arg in enumerate(argv):
        if arg == "--home" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--home="):
            return arg.partition("=")[2]
    return os.environ["HELPLINE_AGENT_HOME"]


def become_owner(home: str) -> None:
    """Run as the owner of ``home``: switch to it from root, refuse anyone else."""
    try:
        st = os.stat(home)
    except FileNotFoundError:
        _fail(
            f"the agent's state directory {home} is missing; reinstall the package: "
            f"sudo apt install --reinstall helpline-agent"
        )
    except PermissionError:
        _fail(f"{home} belongs to the helpline agent: run this as root, e.g. sudo helpline-agent")
    if st.st_uid == 0:
        _fail(
            f"{home} is owned by root; the agent must not run as root. Give it back with: "
            f"sudo chown -R helpline-agent:helpline-agent {home}"
        )
    euid = os.geteuid()
    if st.st_uid == euid:
        return
    if euid != 0:
        _fail(
            f"the agent on this machine runs as the owner of {home} (uid {st.st_uid}); "
            f"run it with sudo: sudo helpline-agent {' '.join(sys.argv[1:])}".rstrip()
        )
    import pwd

    try:
        os.initgroups(pwd.getpwuid(st.st_uid).pw_name, st.st_gid)
    except KeyError:  # an owner without a passwd entry (a foreign root): no extra groups
        os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)
    os.environ["HOME"] = home


def main() -> None:
    here = os.path.dirname(os.path.realpath(__file__))
    os.environ.setdefault("HELPLINE_AGENT_CONFIG", SYSTEM_CONFIG)
    os.environ.setdefault("HELPLINE_AGENT_HOME", SYSTEM_HOME)
    os.environ["TYPER_USE_RICH"] = "0"  # rich is not shipped (helpline_packaging.bundle)
    args = sys.argv[1:]
    if args and not {"--help", "-h"} & set(args):
        become_owner(state_dir(args))
    sys.path.insert(0, os.path.join(here, "lib"))
    sys.argv[0] = "helpline-agent"
    from agent.cli import run

    run()


if __name__ == "__main__":
    main()
