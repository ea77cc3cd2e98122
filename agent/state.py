"""The agent's local state directory: identity key, session, outbox and pid file.

Everything here is private to the user running the agent: the directory is 0700, every
file 0600, and a key or directory that others can read is refused rather than used. Writes
that must survive a crash (session, outbox) go to a temporary file that is fsynced and then
renamed over the target, and the directory is fsynced after the rename, so a reader sees
either the old content or the new, never half of it.

Layout::

    <home>/agent.key            Ed25519 identity ("ed25519:" + base64url seed; a PEM
                                PKCS8 key is read too), never leaves the machine
    <home>/session.json         what the agent needs to resume without a new code
    <home>/agent.pid            the running agent, for ``helpline-agent leave``
    <home>/agent.lock           held (flock) by the running agent: one agent per state
    <home>/outbox/<id>.json     replies not yet acknowledged by the controller
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shlex
import stat
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

HOME_ENV: Final = "HELPLINE_AGENT_HOME"
KEY_FILE: Final = "agent.key"
KEY_PREFIX: Final = b"ed25519:"
SESSION_FILE: Final = "session.json"
PID_FILE: Final = "agent.pid"
LOCK_FILE: Final = "agent.lock"
OUTBOX_DIR: Final = "outbox"

_REQUEST_ID: Final = re.compile(r"[0-9a-zA-Z_-]{1,64}")
_POSIX: Final = os.name == "posix"
_TMP_SUFFIX: Final = ".tmp"


class StateError(Exception):
    """The state directory or a file in it cannot be used; the message says how to fix it."""


class AgentHome:
    """The agent's state directory; nothing touches the disk until a method is called."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @classmethod
    def default(cls) -> AgentHome:
        """$HELPLINE_AGENT_HOME if set, else the platform's per-user data directory."""
        override = os.environ.get(HOME_ENV)
        if override:
            return cls(Path(override).expanduser())
        import platformdirs

        return cls(Path(platformdirs.user_data_dir("helpline-agent", appauthor=False)))

    def __repr__(self) -> str:
        return f"AgentHome({str(self.path)!r})"

    # -- directory ---------------------------------------------------------------------

    def ensure(self) -> None:
        """Create the directory (0700) or check that an existing one is private."""
        try:
            self.path.mkdir(mode=0o700, parents=True)
        except FileExistsError:
            pass
        except OSError as exc:
            raise StateError(f"cannot create the agent directory {self.path}: {exc}") from exc
        try:
            st = self.path.stat()
        except OSError as exc:
            raise StateError(f"cannot read the agent directory {self.path}: {exc}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise StateError(
                f"{self.path} is not a directory; move it away or set {HOME_ENV} elsewhere"
            )
        if _POSIX and st.st_mode & 0o077:
            raise StateError(
                f"the agent directory {self.path} is accessible to other users "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); make it private with: "
                f"chmod 700 {shlex.quote(str(self.path))}"
            )
        if _POSIX and st.st_uid != os.geteuid():
            # Whoever owns the directory can swap the key or the session under us; and an
            # agent run as root in the service's directory would leave root-owned files.
            raise StateError(
                f"the agent directory {self.path} belongs to uid {st.st_uid}, not to the user "
                f"running the agent (uid {os.geteuid()}); run the agent as its owner, or take "
                f"it over with: chown -R {os.geteuid()} {shlex.quote(str(self.path))}"
            )

    # -- identity key ------------------------------------------------------------------

    @property
    def key_path(self) -> Path:
        return self.path / KEY_FILE

    def load_or_create_key(self) -> Ed25519PrivateKey:
        """Load the agent's Ed25519 identity, making one (0600) on first use."""
        self.ensure()
        while True:
            data = self._read_private(self.key_path)
            if data is not None:
                return self._parse_key(data)
            key = Ed25519PrivateKey.generate()
            text = KEY_PREFIX + base64.urlsafe_b64encode(key.private_bytes_raw()) + b"\n"
            if self._create_exclusive(self.key_path, text):
                return key
            # Another agent process made one between our read and our create: use theirs.

    def _parse_key(self, data: bytes) -> Ed25519PrivateKey:
        path = self.key_path
        if data.startswith(KEY_PREFIX):
            try:
                seed = base64.urlsafe_b64decode(data[len(KEY_PREFIX) :].strip())
                return Ed25519PrivateKey.from_private_bytes(seed)
            except ValueError as exc:
                raise StateError(
                    f"the agent key {path} is damaged ({exc}); move it aside and pair the "
                    "agent again with a new code"
                ) from None
        # a PEM key (as an operator might provide one): cryptography's full serialization
        # module costs ~3 MB of resident memory, so it is only loaded for this case
        from cryptography.hazmat.primitives import serialization

        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise StateError(
                f"the agent key {path} is not a readable unencrypted PEM private key ({exc}); "
                f"if it is damaged, move it aside and pair the agent again with a new code"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise StateError(
                f"the agent key {path} is a {type(key).__name__}, not an Ed25519 key; "
                f"move it aside and pair the agent again with a new code"
            )
        return key

    def _create_exclusive(self, path: Path, content: bytes) -> bool:
        """Create ``path`` with ``content`` only if it does not exist; False if it did.

        The content goes to a private temporary file first and is hard-linked into place,
        so a crash never leaves a half-written key behind.
        """
        tmp = self._write_tmp(path, content)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return True

    # -- session -----------------------------------------------------------------------

    @property
    def session_path(self) -> Path:
        return self.path / SESSION_FILE

    def save_session(self, data: dict[str, Any]) -> None:
        """Replace the saved session atomically (JSON, 0600)."""
        content = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
        self.ensure()
        self._replace(self.session_path, content)

    def load_session(self) -> dict[str, Any] | None:
        """The saved session, or None if there is none."""
        data = self._read_private(self.session_path)
        if data is None:
            return None
        try:
            session = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise StateError(
                f"the session file {self.session_path} is damaged ({exc}); "
                f"delete it and pair the agent again with a new code"
            ) from None
        if not isinstance(session, dict):
            raise StateError(
                f"the session file {self.session_path} does not hold a JSON object; "
                f"delete it and pair the agent again with a new code"
            )
        return session

    def clear_session(self) -> None:
        """Forget the session; a missing one is fine."""
        self._remove(self.session_path)

    # -- outbox ------------------------------------------------------------------------

    @property
    def outbox_path(self) -> Path:
        return self.path / OUTBOX_DIR

    def outbox_put(self, request_id: str, frame: str) -> None:
        """Store a reply durably until the controller acknowledges it."""
        target = self._outbox_file(request_id)
        self.ensure()
        self.outbox_path.mkdir(mode=0o700, exist_ok=True)
        self._replace(target, frame.encode())

    def outbox_pending(self) -> list[tuple[str, str]]:
        """Every stored reply as (request_id, frame), oldest first."""
        try:
            entries = list(os.scandir(self.outbox_path))
        except FileNotFoundError:
            return []
        found: list[tuple[int, str, str]] = []
        for entry in entries:
            request_id, dot, ext = entry.name.partition(".")
            if dot != "." or ext != "json" or not _REQUEST_ID.fullmatch(request_id):
                continue  # temporary files of an interrupted write, or foreign files
            try:
                mtime = entry.stat().st_mtime_ns
                frame = Path(entry.path).read_bytes().decode()
            except FileNotFoundError:
                continue  # removed while we listed: acknowledged meanwhile
            except UnicodeDecodeError as exc:
                raise StateError(
                    f"the outbox file {entry.path} is not UTF-8 text ({exc}); "
                    f"move it out of {self.outbox_path} to continue"
                ) from None
            found.append((mtime, request_id, frame))
        found.sort(key=lambda item: (item[0], item[1]))
        return [(request_id, frame) for _, request_id, frame in found]

    def outbox_remove(self, request_id: str) -> None:
        """Drop an acknowledged reply; a missing one is fine."""
        self._remove(self._outbox_file(request_id))

    def _outbox_file(self, request_id: str) -> Path:
        if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id):
            raise ValueError(
                f"invalid request id {request_id!r}: expected 1-64 characters of "
                f"A-Z, a-z, 0-9, '_' or '-'"
            )
        return self.outbox_path / f"{request_id}.json"

    # -- one agent per state directory ------------------------------------------------

    def lock(self) -> bool:
        """Take the state directory's lock for the rest of this process's life.

        False if another agent holds it. The kernel drops the lock when the process
        ends, however it ends, so there is nothing stale to clean up. Where there is no
        ``flock`` (Windows) the pid file is the only guard.
        """
        if self._lock_fd is not None:
            return True
        try:
            import fcntl
        except ImportError:
            return True
        self.ensure()
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path / LOCK_FILE, flags, 0o600)
        except OSError as exc:
            raise StateError(f"cannot open {self.path / LOCK_FILE}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    # -- pid file ----------------------------------------------------------------------

    @property
    def pid_path(self) -> Path:
        return self.path / PID_FILE

    def write_pid(self) -> None:
        """Record this process as the running agent."""
        self.ensure()
        self._replace(self.pid_path, f"{os.getpid()}\n".encode())

    def read_pid(self) -> int | None:
        """The pid of the running agent, or None if none is recorded or it has exited."""
        pid = self._recorded_pid()
        if pid is None:
            return None
        import psutil

        return pid if psutil.pid_exists(pid) else None

    def clear_pid(self) -> None:
        """Remove the pid file if it names this process or no running process."""
        pid = self._recorded_pid()
        if pid is not None and pid != os.getpid() and self.read_pid() is not None:
            return  # another agent is running and owns the file
        self._remove(self.pid_path)

    def _recorded_pid(self) -> int | None:
        try:
            text = self.pid_path.read_text(encoding="ascii").strip()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() and 0 < int(text) < 1 << 31 else None

    # -- file primitives ---------------------------------------------------------------

    def _read_private(self, path: Path) -> bytes | None:
        """Read a secret file, refusing one that group or others can access."""
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(
                f"cannot open {path}: {exc}; it must be a regular file owned by you"
            ) from exc
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StateError(f"{path} is not a regular file; move it aside")
            if _POSIX and st.st_mode & 0o077:
                raise StateError(
                    f"{path} is accessible to other users "
                    f"(mode {stat.S_IMODE(st.st_mode):04o}); make it private with: "
                    f"chmod 600 {shlex.quote(str(path))}"
                )
            return handle.read()

    def _write_tmp(self, path: Path, content: bytes) -> Path:
        """Write ``content`` to a new private, fsynced file next to ``path``."""
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{_TMP_SUFFIX}")
        flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp, flags, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _replace(self, path: Path, content: bytes) -> None:
        """Atomically and durably replace ``path`` with ``content``."""
        tmp = self._write_tmp(path, content)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable (POSIX; Windows cannot open dirs)."""
    if not _POSIX:
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
