"""How the agent reaches a customer: the single-file agent (.pyz) and the .deb.

Both are built from the same tree, :mod:`helpline_packaging.bundle`: ``agent/``,
``protocol/`` and ``transport/`` plus the installed distributions they need at run time,
nothing from ``controller/``. :mod:`~helpline_packaging.pyz` wraps it in a zipapp whose bootstrap
(:mod:`~helpline_packaging.bootstrap`) checks it and unpacks it into a private cache;
:mod:`~helpline_packaging.deb` lays it out under ``/usr/lib/helpline-agent`` with a
launcher (:mod:`~helpline_packaging.launcher`), a hardened systemd unit and maintainer
scripts (``debian/``), built with ``dpkg-deb``.

This package is importable as ``helpline_packaging`` (pyproject maps it to
``packaging/helpline_packaging``); ``packaging/`` itself is not a Python package, so the
PyPI ``packaging`` library is never shadowed.
"""

from __future__ import annotations

from collections.abc import Sequence

import tomli_w


def agent_config_text(
    url: str,
    pin: str,
    *,
    name: str = "helpline",
    fix_key: str | None = None,
    unattended: Sequence[str] = (),
    root_helper: str | None = None,
) -> str:
    """The agent config both artefacts carry: what ``helpline agent-config`` writes, with
    comments for the person who opens it."""
    data: dict[str, object] = {"url": url, "pin": pin}
    if fix_key is not None:
        data["fix_key"] = fix_key
    if unattended:
        data["unattended"] = list(unattended)
    if root_helper is not None:
        data["root_helper"] = root_helper
    slot = (
        ""
        if fix_key is not None
        else "# fix_key: none published yet, so this agent runs no fixes\n"
    )
    helper_note = (
        "# root_helper: the socket of the root helper, which runs fixes that need root.\n"
        if root_helper is not None
        else ""
    )
    return (
        f"# helpline agent config for the controller {name!r}, written by `helpline package`.\n"
        "# url: where the agent dials; pin: SHA-256 of the controller's TLS certificate;\n"
        "# fix_key: the public key that signs the fix catalogue (docs/fixes.md).\n"
        f"{helper_note}{tomli_w.dumps(data)}{slot}"
    )
