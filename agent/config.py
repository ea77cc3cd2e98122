"""The agent config file (``agent.toml``): which controller to dial and its certificate pin."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from protocol.signing import normalise_pin


class ConfigError(Exception):
    """The agent config is missing or wrong; the message says what to fix."""


@dataclass(frozen=True)
class AgentConfig:
    url: str
    pin: str

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
        try:
            return cls(url=url.rstrip("/"), pin=normalise_pin(pin))
        except ValueError as exc:
            raise ConfigError(f"{path}: {exc}") from None
