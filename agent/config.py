"""The agent config file (``agent.toml``): which controller to dial and its certificate pin."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from protocol.signing import normalise_pin

#: A config baked into a packaged agent sits next to this module (`helpline package agent`).
BUNDLED_CONFIG = "bundled.toml"
#: Where the config is looked for when ``--config`` is not given.
CONFIG_ENV = "HELPLINE_AGENT_CONFIG"


class ConfigError(Exception):
    """The agent config is missing or wrong; the message says what to fix."""


def default_config_path() -> Path:
    """The config baked into this agent, if it was packaged with one; else ./agent.toml."""
    bundled = Path(__file__).with_name(BUNDLED_CONFIG)
    return bundled if bundled.is_file() else Path("agent.toml")


@dataclass(frozen=True)
class AgentConfig:
    url: str
    pin: str
    #: the fix catalogue's public key (base64url); without it the agent runs no fixes
    fix_key: str | None = None
    #: fixes a managed fleet runs without asking: explicit here, audited at every join
    unattended: tuple[str, ...] = ()
    #: the root helper's socket (agent.rootfix), for fixes that need root; the .deb sets it
    root_helper: str | None = None

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read agent config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path} is not valid TOML: {exc}") from None
        url = data.get("url")
        pin = data.get("pin")
        if not isinstance(url, str) or urlsplit(url).scheme != "wss" or not urlsplit(url).hostname:
            raise ConfigError(f"{path}: url must be wss://HOST:PORT (got {url!r})")
        if not isinstance(pin, str):
            raise ConfigError(f"{path}: pin (the controller certificate's SHA-256) is missing")
        fix_key = data.get("fix_key")
        unattended = data.get("unattended", [])
        if fix_key is not None and (not isinstance(fix_key, str) or len(fix_key) != 43):
            raise ConfigError(f"{path}: fix_key must be the catalogue's public key (43 chars)")
        if not isinstance(unattended, list) or not all(isinstance(x, str) for x in unattended):
            raise ConfigError(f"{path}: unattended must be a list of fix ids")
        root_helper = data.get("root_helper")
        if root_helper is not None and (
            not isinstance(root_helper, str) or not root_helper.startswith("/")
        ):
            raise ConfigError(f"{path}: root_helper must be the absolute path of its socket")
        try:
            return cls(
                url=url.rstrip("/"),
                pin=normalise_pin(pin),
                fix_key=fix_key,
                unattended=tuple(unattended),
                root_helper=root_helper,
            )
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
