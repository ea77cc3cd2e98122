"""The technician side of ``/api``: pinned TLS, SSH-key login, calls with progress.

The CLI never opens the database: everything it shows came through this client.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import tomli_w
from pydantic import ValidationError

from protocol import codec, signing
from protocol.api import (
    ApiClient,
    Authenticated,
    ChallengeReceived,
    ProgressReceived,
    ReplyReceived,
)
from protocol.calls import Call, explain
from protocol.errors import ErrorCode, ProtocolError
from protocol.machine import Refused
from protocol.messages import AuthOk
from transport.tls import pinned_client_context, pinned_connection

R = TypeVar("R")


class ClientError(Exception):
    """A call failed; ``code`` is the API's error code (or a transport one)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ClientSettings:
    url: str
    pin: str
    key: str  # path to a private key, or to a .pub whose private half is in ssh-agent


def default_client_config() -> Path:
    env = os.environ.get("HELPLINE_CLIENT_CONFIG")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir("helpline")) / "client.toml"


def save_client_settings(settings: ClientSettings, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps({"url": settings.url, "pin": settings.pin, "key": settings.key}))


def load_client_settings(home: Path | None) -> ClientSettings:
    """From a local controller home if given, else from what ``helpline login`` stored."""
    if home is not None:
        from controller.home import ControllerHome, HomeError

        controller_home = ControllerHome(home)
        try:
            config = controller_home.load()
        except HomeError as exc:
            raise ClientError("not_configured", str(exc)) from None
        host = config.listen_host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - mapping a wildcard bind to loopback
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return ClientSettings(
            url=f"wss://{host}:{config.listen_port}",
            pin=controller_home.pin(),
            key=str(controller_home.admin_key_path),
        )
    path = default_client_config()
    if not path.exists():
        import platformdirs

        local = Path(platformdirs.user_data_dir("helpline"))
        if (local / "controller.toml").exists():
            return load_client_settings(local)
        raise ClientError(
            "not_configured",
            "no controller configured: run `helpline login --url wss://HOST:PORT --pin PIN "
            "--key ~/.ssh/id_ed25519`, or set HELPLINE_HOME to a controller home",
        )
    try:
        data = tomllib.loads(path.read_text())
        return ClientSettings(
            url=data["url"], pin=signing.normalise_pin(data["pin"]), key=data["key"]
        )
    except (tomllib.TOMLDecodeError, KeyError, ValueError) as exc:
        raise ClientError("not_configured", f"{path} is not a valid client config: {exc}") from None


class Signer:
    """An SSH key that can sign: a private key file, or a key held by ssh-agent."""

    def __init__(self, key_path: str) -> None:
        self.key_path = os.path.expanduser(key_path)

    async def public_and_sign(self, data: bytes) -> tuple[str, str]:
        import asyncssh

        path = self.key_path
        try:
            if path.endswith(".pub"):
                return await self._via_agent(asyncssh, path, data)
            keypair = asyncssh.load_keypairs([path])[0]
        except (OSError, asyncssh.KeyImportError, ValueError, IndexError) as exc:
            raise ClientError("auth_failed", f"cannot load SSH key {path}: {exc}") from None
        if keypair.algorithm == b"ssh-rsa":
            keypair.set_sig_algorithm(b"rsa-sha2-256")
        signature = keypair.sign(data)
        public = (
            asyncssh.public_key.decode_ssh_public_key(keypair.public_data)
            .export_public_key()
            .decode()
        )
        return public, signing.b64e(signature)

    async def _via_agent(self, asyncssh: Any, path: str, data: bytes) -> tuple[str, str]:
        wanted = asyncssh.read_public_key(path)
        if not os.environ.get("SSH_AUTH_SOCK"):
            raise ClientError("auth_failed", f"{path} is a public key but no ssh-agent is running")
        async with asyncssh.connect_agent() as agent:
            for keypair in await agent.get_keys():
                if keypair.public_data == wanted.public_data:
                    if keypair.algorithm == b"ssh-rsa":
                        keypair.set_sig_algorithm(b"rsa-sha2-256")
                    signature = await keypair.sign_async(data)
                    return wanted.export_public_key().decode(), signing.b64e(signature)
        raise ClientError("auth_failed", f"ssh-agent does not hold the private key for {path}")


class Connection:
    """One authenticated API connection; calls run one after another."""

    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.machine = ApiClient()
        self.me: AuthOk | None = None
        self._ws: Any = None

    async def __aenter__(self) -> Connection:
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidHandshake

        try:
            self._ws = await connect(
                self.settings.url.rstrip("/") + "/api",
                ssl=pinned_client_context(),
                max_size=codec.API_MAX_FRAME,
                open_timeout=10,
                ping_interval=None,
                compression=None,
                # PinMismatch from here, before the HTTP upgrade is sent
                create_connection=pinned_connection(self.settings.pin),
            )
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise ClientError(
                "unreachable", f"cannot reach the controller at {self.settings.url}: {exc}"
            ) from None
        cert = self.settings.pin  # checked by pinned_connection
        signer = Signer(self.settings.key)
        while self.me is None:
            for event in await self._receive():
                if isinstance(event, ChallengeReceived):
                    public, signature = await signer.public_and_sign(
                        signing.transcript(signing.API_PURPOSE, event.hello.challenge, cert)
                    )
                    self.machine.authenticate(public, signature)
                    await self._flush()
                elif isinstance(event, Authenticated):
                    self.me = event.ok
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._ws is not None:
            await self._ws.close()

    async def _flush(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for message in self.machine.data_to_send():
                await self._ws.send(codec.encode(message))
        except ConnectionClosed as exc:
            raise ClientError(
                "unreachable", f"the controller closed the connection: {exc}"
            ) from None

    async def _receive(self) -> list[object]:
        from websockets.exceptions import ConnectionClosed

        try:
            frame = await self._ws.recv()
            events = self.machine.receive(codec.decode(frame, codec.API_MAX_FRAME))
        except ConnectionClosed as exc:
            raise ClientError(
                "unreachable", f"the controller closed the connection: {exc}"
            ) from None
        except ProtocolError as exc:
            raise ClientError("protocol", exc.reason) from None
        for event in events:
            if isinstance(event, Refused):
                raise ClientError(event.code, event.message)
        return events

    async def request(
        self,
        call: Call[R],
        on_progress: Callable[[str], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
    ) -> R:
        """Make ``call`` and return its result as the call's result type."""
        data = await self.call(call.method, call.params(), on_progress, on_output)
        try:
            return call.load_result(data)
        except ValidationError as exc:
            # a controller of another version, or a bug: say which field, not a traceback
            raise ClientError(
                ErrorCode.PROTOCOL,
                f"the controller's answer to {call.method} is not valid: {explain(exc)}",
            ) from None

    async def call(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        on_progress: Callable[[str], None] | None = None,
        on_output: Callable[[str, str], None] | None = None,
    ) -> Any:
        """Make one call and return its result; raise :class:`ClientError` on refusal."""
        call_id = self.machine.call(method, params or {})
        await self._flush()
        while True:
            for event in await self._receive():
                if isinstance(event, ProgressReceived):
                    progress = event.progress
                    if progress.data is not None and progress.stream and on_output is not None:
                        on_output(progress.stream, progress.data)
                    elif on_progress is not None:
                        on_progress(progress.stage)
                elif isinstance(event, ReplyReceived) and event.reply.reply_to == call_id:
                    if event.reply.ok:
                        return event.reply.result
                    raise ClientError(event.reply.error_code or "error", event.reply.error or "")
