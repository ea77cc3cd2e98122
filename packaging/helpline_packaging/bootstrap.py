"""The single-file agent's ``__main__``: check the file, unpack it once, run the agent.

Python cannot import compiled extensions (``.so``/``.pyd``) from inside a zip file, and
cryptography, pydantic-core and psutil have them. So on first run this bootstrap unpacks
the bundle into a private per-user cache directory named after the bundle's digest
(``~/.cache/helpline-agent/bundle-<digest>``; ``HELPLINE_AGENT_CACHE`` moves it) and runs
the agent from there; later runs of the same file reuse it.

What it refuses, before any agent code runs (exit status 2, with what to do):

* a checksum file ``<this file>.sha256`` beside it that does not match the whole file;
* a manifest whose SHA-256 is not the one written into this bootstrap at build time;
* an entry whose content does not match the manifest's SHA-256 for it (a damaged
  download), or a zip that cannot be read at all;
* an interpreter, OS or CPU other than the one the bundle's extensions were built for;
* a cache directory that another user could write to.

A file cut short loses the zip directory at its end, and Python then fails with
"can't find '__main__' module" before this code can run: that refusal is Python's, not
ours. Checking ``sha256sum -c helpline-agent.pyz.sha256`` first catches it with a clear
verdict (README: installing the agent).

Standard library only, and syntax that older Pythons can parse, so a customer with the
wrong interpreter gets the message rather than a SyntaxError.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import zipfile
import zlib
from typing import Any, NoReturn

#: SHA-256 of the manifest entry; the builder writes the real value into the copy it ships.
MANIFEST_SHA256 = "@MANIFEST_SHA256@"
MANIFEST_NAME = "helpline-agent.manifest.json"
PAYLOAD_PREFIX = "lib/"
CACHE_ENV = "HELPLINE_AGENT_CACHE"
EXIT_REFUSED = 2
FORMAT = 1

_MACHINES = {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}


class Refusal(Exception):
    """This file must not run; the message says why and what to do."""


def main() -> None:
    """Entry point: verify, unpack if needed, then hand over to the agent's CLI."""
    archive = _archive_path()
    try:
        check_sidecar(archive)
        with zipfile.ZipFile(archive) as bundle:
            manifest = read_manifest(bundle, MANIFEST_SHA256)
            check_target(manifest["target"])
            tree = unpack(bundle, manifest, cache_root(), MANIFEST_SHA256)
    except Refusal as exc:
        _refuse(str(exc))
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError) as exc:
        _refuse(damaged(archive, f"{type(exc).__name__}: {exc}"))
    run(tree, archive, manifest)


def _archive_path() -> str:
    loader = globals().get("__loader__")
    archive = getattr(loader, "archive", None) or sys.argv[0]
    return os.path.abspath(str(archive))


def _refuse(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_REFUSED)


def damaged(archive: str, detail: str) -> str:
    """The message for a file that is not what was built."""
    name = os.path.basename(archive)
    return (
        f"{archive} is damaged or was modified ({detail}); refusing to run it.\n"
        f"Download it again from your technician and check it with: "
        f"sha256sum -c {name}.sha256"
    )


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sidecar(archive: str) -> None:
    """If ``<archive>.sha256`` sits beside the file, the whole file must match it."""
    sidecar = archive + ".sha256"
    try:
        with open(sidecar, encoding="ascii") as handle:
            text = handle.read(4096)
    except FileNotFoundError:
        return
    except (OSError, UnicodeDecodeError) as exc:
        raise Refusal(f"cannot read the checksum file {sidecar}: {exc}") from None
    fields = text.split()
    expected = fields[0].lower() if fields else ""
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise Refusal(f"{sidecar} is not a SHA-256 checksum file; download both files again")
    actual = sha256_file(archive)
    if actual != expected:
        raise Refusal(
            damaged(archive, f"SHA-256 {actual}, but {os.path.basename(sidecar)} says {expected}")
        )


def read_manifest(bundle: zipfile.ZipFile, expected: str) -> dict[str, Any]:
    """The manifest, once its digest matches the one built into this bootstrap."""
    data = bundle.read(MANIFEST_NAME)
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise Refusal(damaged(bundle.filename or "the agent", "its manifest does not match"))
    manifest: dict[str, Any] = json.loads(data.decode("utf-8"))
    if manifest.get("format") != FORMAT:
        raise Refusal(f"unknown bundle format {manifest.get('format')!r}; update the agent")
    return manifest


def check_target(target: dict[str, str]) -> None:
    """Refuse an interpreter the bundled compiled extensions cannot load into."""
    here = {
        "cache_tag": sys.implementation.cache_tag or "",
        "platform": sys.platform,
        "machine": _MACHINES.get(platform.machine().lower(), platform.machine().lower()),
    }
    if all(here[key] == target[key] for key in here):
        return
    raise Refusal(
        f"this agent was built for Python {target['python']} ({target['cache_tag']}) on "
        f"{target['platform']}/{target['machine']}, but it is running on "
        f"{platform.python_implementation()} {platform.python_version()} ({here['cache_tag']}) "
        f"on {here['platform']}/{here['machine']}.\n"
        f"Run it with python{target['python']}, or ask your technician for a build for this "
        f"system (or for the .deb)."
    )


def cache_root() -> str:
    """Where unpacked bundles live: $HELPLINE_AGENT_CACHE, else the per-user cache dir."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return os.path.abspath(os.path.expanduser(override))
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
        return os.path.join(base, "helpline-agent", "Cache")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/helpline-agent")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "helpline-agent")


def check_private(path: str) -> None:
    """Code we import from ``path`` must not be writable by anyone but us."""
    if os.name != "posix":
        return
    st = os.stat(path)
    if st.st_uid != os.geteuid():
        raise Refusal(
            f"the agent cache {path} belongs to another user (uid {st.st_uid}); "
            f"set {CACHE_ENV} to a directory of your own"
        )
    if st.st_mode & 0o022:
        raise Refusal(
            f"the agent cache {path} is writable by other users "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); fix it with: chmod go-w {path}"
        )


def unpack(bundle: zipfile.ZipFile, manifest: dict[str, Any], root: str, digest: str) -> str:
    """The unpacked tree for this bundle, made (every file checked) if it is not there yet."""
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise Refusal(
            f"cannot create the agent cache {root}: {exc}; set {CACHE_ENV} to a writable directory"
        ) from None
    check_private(root)
    tree = os.path.join(root, "bundle-" + digest[:24])
    if os.path.isdir(tree):
        check_private(tree)
        return tree
    try:
        scratch = tempfile.mkdtemp(prefix=".unpack-", dir=root)
    except OSError as exc:
        raise Refusal(f"cannot write to the agent cache {root}: {exc}") from None
    try:
        for name, expected in sorted(manifest["files"].items()):
            _extract(bundle, name, expected, scratch)
        try:
            os.rename(scratch, tree)
        except OSError:
            if not os.path.isdir(tree):  # not another run that won the race: a real error
                raise
    except OSError as exc:
        raise Refusal(
            f"cannot unpack the agent into {root}: {exc}; free some space or set "
            f"{CACHE_ENV} to another directory"
        ) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return tree


def _extract(bundle: zipfile.ZipFile, name: str, expected: str, scratch: str) -> None:
    parts: list[str] = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise Refusal(damaged(bundle.filename or "the agent", f"unsafe path {name!r}"))
    data = bundle.read(PAYLOAD_PREFIX + name)  # zipfile checks each entry's CRC-32 too
    if hashlib.sha256(data).hexdigest() != expected:
        raise Refusal(damaged(bundle.filename or "the agent", f"{name} does not match"))
    target = os.path.join(scratch, *parts)
    os.makedirs(os.path.dirname(target), mode=0o700, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def run(tree: str, archive: str, manifest: dict[str, Any]) -> None:
    """Import the agent from the unpacked tree (never from the zip) and run its CLI."""
    sys.path[:] = [tree] + [p for p in sys.path if os.path.abspath(p or ".") != archive]
    for key, value in manifest.get("environment", {}).items():
        os.environ[key] = value
    module_name, _, function = manifest["entry"].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        _refuse(
            f"cannot load the agent from {tree}: {exc}.\n"
            f"If that directory is on a filesystem mounted noexec, set {CACHE_ENV} to a "
            f"directory elsewhere; if it was tampered with, delete it and run again."
        )
    getattr(module, function)()


if __name__ == "__main__":
    main()
