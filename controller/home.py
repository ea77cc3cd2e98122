"""The controller's home directory: what ``helpline init`` writes and ``serve`` reads.

::

    HOME/
      controller.toml     url agents dial, listen address, name, database URL
      tls/cert.pem        self-signed certificate agents pin
      tls/key.pem         its private key (0600)
      pepper              HMAC key for session-code hashes (0600)
      audit_ed25519.pem   audit checkpoint signing key (0600), .pub beside it
      audit-head.json     the last signed audit checkpoint, kept outside the database
      admin_ed25519(.pub) the first admin's SSH key, unless --admin-key was given
      helpline.db         SQLite store (default)
      serve.lock          held (flock) by the one running ``helpline serve``; its pid inside
"""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import tomli_w

from controller.tls import make_self_signed, pin_of, write_secret


class HomeError(Exception):
    """The controller home is missing or broken; the message says what to do."""


class HomeInUse(HomeError):
    """Another ``helpline serve`` runs on this home (exit code 8, conflict)."""


@dataclass(frozen=True)
class ControllerConfig:
    url: str
    listen_host: str
    listen_port: int
    name: str
    database: str
    grant_seconds: int = 7200


def parse_ws_url(url: str) -> tuple[str, int]:
    """Host and port of a ``wss://HOST:PORT`` URL; anything else is a clear error."""
    parts = urlsplit(url)
    if parts.scheme != "wss":
        raise ValueError(f"the controller URL must start with wss:// (got {url!r})")
    if not parts.hostname:
        raise ValueError(f"the controller URL has no host: {url!r}")
    return parts.hostname, parts.port or 443


def parse_duration(text: str) -> int:
    """``90``, ``30s``, ``10m``, ``1h30m``, ``2d`` to seconds (:mod:`protocol.durations`)."""
    from protocol.durations import parse_seconds

    return parse_seconds(text)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` to a pair."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT (got {text!r})")
    return host.strip("[]") or "127.0.0.1", int(port)


class ControllerHome:
    """Paths and settings under one controller home directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def resolve(cls, option: Path | None) -> ControllerHome:
        """``--home``, else ``HELPLINE_HOME``, else the per-user data directory."""
        if option is not None:
            return cls(option)
        env = os.environ.get("HELPLINE_HOME")
        if env:
            return cls(Path(env))
        import platformdirs

        return cls(Path(platformdirs.user_data_dir("helpline")))

    @property
    def config_path(self) -> Path:
        return self.path / "controller.toml"

    @property
    def cert_path(self) -> Path:
        return self.path / "tls" / "cert.pem"

    @property
    def key_path(self) -> Path:
        return self.path / "tls" / "key.pem"

    @property
    def pepper_path(self) -> Path:
        return self.path / "pepper"

    @property
    def admin_key_path(self) -> Path:
        return self.path / "admin_ed25519"

    @property
    def audit_key_path(self) -> Path:
        return self.path / "audit_ed25519.pem"

    @property
    def audit_head_path(self) -> Path:
        return self.path / "audit-head.json"

    @property
    def exists(self) -> bool:
        return self.config_path.exists()

    def default_database(self) -> str:
        return f"sqlite+aiosqlite:///{self.path / 'helpline.db'}"

    def create(
        self, url: str, listen: str | None, name: str, grant_seconds: int = 7200
    ) -> ControllerConfig:
        """Write config, TLS identity and pepper; refuse to overwrite an existing home."""
        if self.exists:
            raise HomeError(f"{self.path} already holds a controller; use another --home")
        host, port = parse_ws_url(url)
        listen_host, listen_port = parse_listen(listen) if listen else (host, port)
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        make_self_signed(host, self.cert_path, self.key_path)
        write_secret(self.pepper_path, secrets.token_bytes(32))
        from controller.audit import create_key

        create_key(self.audit_key_path)
        config = ControllerConfig(
            url=url,
            listen_host=listen_host,
            listen_port=listen_port,
            name=name,
            database=os.environ.get("HELPLINE_DB") or self.default_database(),
            grant_seconds=grant_seconds,
        )
        data = {
            "url": config.url,
            "listen": f"{listen_host}:{listen_port}",
            "name": config.name,
            "database": config.database,
            "grant_seconds": grant_seconds,
        }
        self.config_path.write_text(tomli_w.dumps(data))
        return config

    def load(self) -> ControllerConfig:
        """Read ``controller.toml``; ``HELPLINE_DB`` overrides the database."""
        if not self.exists:
            raise HomeError(
                f"no controller at {self.path}: run `helpline init --url wss://HOST:PORT` "
                "first, or point --home / HELPLINE_HOME at one"
            )
        try:
            data = tomllib.loads(self.config_path.read_text())
            host, port = parse_listen(str(data["listen"]))
            return ControllerConfig(
                url=str(data["url"]),
                listen_host=host,
                listen_port=port,
                name=str(data.get("name", "helpline")),
                database=os.environ.get("HELPLINE_DB") or str(data["database"]),
                grant_seconds=int(data.get("grant_seconds", 7200)),
            )
        except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
            raise HomeError(f"{self.config_path} is not a valid controller config: {exc}") from None

    @property
    def lock_path(self) -> Path:
        return self.path / "serve.lock"

    def lock_for_serving(self) -> IO[str]:
        """Take the home for this process; keep the returned file open while serving.

        Two controllers on one home would split the agents between them and both sign
        the audit chain. The kernel drops the lock when the process ends, even on SIGKILL,
        so a crash never leaves a stale lock behind.
        """
        import fcntl

        handle = open(self.lock_path, "a+")  # noqa: SIM115 - held for the life of the process
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise HomeInUse(
                f"another `helpline serve` (pid {holder}) is already running on {self.path}; "
                "stop it first, or give this one its own --home"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        return handle

    def pin(self) -> str:
        return pin_of(self.cert_path)

    def pepper(self) -> bytes:
        return self.pepper_path.read_bytes()
