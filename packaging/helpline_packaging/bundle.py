"""What the agent carries: ``agent/``, ``protocol/``, ``transport/`` and their dependencies.

The dependency set is not a hand-kept list of files: it is the closure of the agent's
direct requirements over the metadata of the distributions installed next to the running
``helpline`` (``Requires-Dist`` with environment markers evaluated for this interpreter),
minus :data:`LEFT_OUT`. The files come from each distribution's ``RECORD``, so the bundle
holds exactly the versions the controller itself was tested with, and building needs no
network. The price: compiled extensions (cryptography, pydantic-core, psutil, cffi) are
those of this machine, so a bundle runs on the same CPython minor version, OS and CPU
architecture only; :class:`Target` records which, and the bootstrap refuses any other.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

#: The agent's own run-time requirements (pyproject lists the whole project's).
AGENT_REQUIREMENTS: Final = (
    "websockets",
    "cryptography",
    "pydantic",
    "psutil",
    "typer",
    "platformdirs",
    "tenacity",
)

#: Declared upstream but not carried, and why. Their own dependencies go with them.
LEFT_OUT: Final = {
    "rich": (
        "typer's pretty help and errors; the agent runs typer with TYPER_USE_RICH=0 "
        "(saves rich, pygments, markdown-it-py and mdurl, about 6 MB)"
    ),
}

#: Our packages, copied from where they are imported from.
AGENT_PACKAGES: Final = ("agent", "protocol", "transport")

#: Environment variable that makes typer run without rich; the launchers set it.
PLAIN_TYPER_ENV: Final = ("TYPER_USE_RICH", "0")

_SKIP_DIRS: Final = frozenset({"__pycache__"})
_SKIP_SUFFIXES: Final = (".pyc", ".pyo")
# Installer bookkeeping: meaningless (RECORD would even be wrong) once files are moved.
_SKIP_DIST_INFO: Final = frozenset({"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"})


class BundleError(Exception):
    """The bundle cannot be assembled from this environment; the message says why."""


@dataclass(frozen=True)
class Target:
    """Where a bundle runs: its compiled extensions tie it to these."""

    python: str  # "3.11"
    cache_tag: str  # "cpython-311": implementation and bytecode/extension ABI
    platform: str  # sys.platform: "linux", "darwin", "win32"
    machine: str  # normalised CPU architecture: "x86_64", "arm64"

    @classmethod
    def here(cls) -> Target:
        tag = sys.implementation.cache_tag
        if tag is None:
            raise BundleError("this Python has no bytecode cache tag; cannot describe the target")
        return cls(
            python=f"{sys.version_info.major}.{sys.version_info.minor}",
            cache_tag=tag,
            platform=sys.platform,
            machine=normalise_machine(platform.machine()),
        )

    def describe(self) -> str:
        return f"{self.cache_tag} on {self.platform}/{self.machine}"


def normalise_machine(machine: str) -> str:
    """One name per CPU architecture across OSes (AMD64/x86_64, aarch64/arm64)."""
    lowered = machine.lower()
    return {"amd64": "x86_64", "x64": "x86_64", "aarch64": "arm64"}.get(lowered, lowered)


@dataclass(frozen=True)
class Carried:
    """One distribution (or one of our packages) in the bundle."""

    name: str
    version: str
    files: tuple[tuple[str, Path], ...]  # (path inside the bundle tree, source file)

    @property
    def size(self) -> int:
        return sum(source.stat().st_size for _, source in self.files)


@dataclass(frozen=True)
class Bundle:
    """Everything the agent needs at run time, and where it can run."""

    ours: tuple[Carried, ...]
    dependencies: tuple[Carried, ...]
    target: Target
    version: str

    def files(self) -> Iterator[tuple[str, Path]]:
        """Every (path in the tree, source) pair, sorted by path."""
        pairs = [pair for item in (*self.ours, *self.dependencies) for pair in item.files]
        yield from sorted(pairs)

    @property
    def size(self) -> int:
        return sum(item.size for item in (*self.ours, *self.dependencies))

    def summary(self) -> dict[str, object]:
        """What the bundle carries, for the CLI's output and the README."""
        return {
            "target": self.target.describe(),
            "agent_version": self.version,
            "packages": [{"name": p.name, "size": p.size} for p in self.ours],
            "dependencies": [
                {"name": d.name, "version": d.version, "size": d.size} for d in self.dependencies
            ],
            "left_out": dict(LEFT_OUT),
            "unpacked_size": self.size,
        }


def collect() -> Bundle:
    """Assemble the bundle from the running environment."""
    from agent import __version__

    ours = tuple(_our_package(name) for name in AGENT_PACKAGES)
    dependencies = tuple(_carry(dist) for dist in agent_distributions())
    bundle = Bundle(ours, dependencies, Target.here(), __version__)
    _check_no_overlap(bundle)
    missing = unresolved_imports(bundle)
    if missing:
        raise BundleError(
            "the agent imports modules it would not carry: "
            + "; ".join(f"{source} imports {name!r}" for source, name in missing)
            + " (add their distribution to AGENT_REQUIREMENTS in helpline_packaging/bundle.py)"
        )
    return bundle


def unresolved_imports(bundle: Bundle) -> list[tuple[str, str]]:
    """(file, module) for every absolute import in our packages that neither the standard
    library nor the bundle provides: a run-time ImportError on a customer's machine."""
    provided = set(sys.stdlib_module_names)
    for name, _ in bundle.files():
        top = name.split("/")[0]
        if not top.endswith((".dist-info", ".data")):
            provided.add(top.split(".")[0])  # "typing_extensions.py", "_cffi_backend.cpython…"
    missing = []
    for item in bundle.ours:
        for name, source in item.files:
            if name.endswith(".py"):
                missing += [(name, m) for m in sorted(_imports(source)) if m not in provided]
    return missing


def _imports(source: Path) -> set[str]:
    tree = ast.parse(source.read_bytes(), filename=str(source))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found - {"__future__"}


def agent_distributions() -> list[metadata.Distribution]:
    """The installed distributions the agent needs: the closure of its requirements."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(AGENT_REQUIREMENTS)
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found or name in LEFT_OUT:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise BundleError(
                f"the agent needs {name!r}, which is not installed next to helpline "
                f"({sys.executable}); install helpline with pip first"
            ) from None
        found[name] = dist
        for text in dist.requires or ():
            try:
                requirement = Requirement(text)
            except InvalidRequirement as exc:
                raise BundleError(f"{name} declares a requirement we cannot read: {exc}") from exc
            # Extras are never requested, so any marker mentioning one is false here.
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return [found[name] for name in sorted(found)]


def _carry(dist: metadata.Distribution) -> Carried:
    name = canonicalize_name(dist.metadata["Name"])
    if dist.files is None:
        raise BundleError(
            f"{name} {dist.version} has no RECORD of its files (installed by a system "
            f"package manager?); install helpline and its dependencies with pip in a venv"
        )
    files: list[tuple[str, Path]] = []
    for path in dist.files:
        parts = PurePosixPath(str(path)).parts
        if not parts or parts[0] == ".." or _skipped(parts):
            continue  # ../../bin/…: console scripts live outside site-packages
        if parts[0].endswith(".dist-info") and parts[-1] in _SKIP_DIST_INFO:
            continue
        source = Path(str(dist.locate_file(path)))
        if not source.is_file():
            raise BundleError(f"{name}: {source} is listed in its RECORD but missing")
        files.append(("/".join(parts), source))
    return Carried(name, dist.version, tuple(sorted(files)))


def _our_package(name: str) -> Carried:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BundleError(f"cannot find the {name!r} package to bundle")
    root = Path(next(iter(spec.submodule_search_locations)))
    files: list[tuple[str, Path]] = []
    for directory, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in sorted(filenames):
            source = Path(directory, filename)
            relative = source.relative_to(root.parent).as_posix()
            if not _skipped(PurePosixPath(relative).parts) and source.name != "bundled.toml":
                files.append((relative, source))
    from agent import __version__

    return Carried(name, __version__, tuple(files))


def _skipped(parts: tuple[str, ...]) -> bool:
    return any(part in _SKIP_DIRS for part in parts) or parts[-1].endswith(_SKIP_SUFFIXES)


def _check_no_overlap(bundle: Bundle) -> None:
    owners: dict[str, str] = {}
    for item in (*bundle.ours, *bundle.dependencies):
        for path, _ in item.files:
            if path in owners:
                raise BundleError(f"{path} is shipped by both {owners[path]} and {item.name}")
            owners[path] = item.name
