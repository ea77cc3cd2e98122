"""The .deb: the bundle under /usr/lib/helpline-agent, a system user, a hardened unit.

Built with ``dpkg-deb --root-owner-group`` from a staging tree, so no fakeroot is needed
and every file is root:root. What the package installs::

    /usr/lib/helpline-agent/helpline-agent      the launcher (helpline_packaging.launcher)
    /usr/lib/helpline-agent/helpline-agent-root the root helper (root_launcher, agent.rootfix)
    /usr/lib/helpline-agent/lib/                the bundle, compiled to bytecode
    /usr/bin/helpline-agent                     -> ../lib/helpline-agent/helpline-agent
    /etc/helpline-agent/agent.toml              controller URL and pin (a conffile)
    /lib/systemd/system/helpline-agent.service  the hardened unit
    /lib/systemd/system/helpline-agent-root.socket, helpline-agent-root@.service
                                                the root helper, one per connection
    /usr/share/doc/helpline-agent/              copyright, README.Debian

and what its maintainer scripts (``debian/``) make: the ``helpline-agent`` system user and
``/var/lib/helpline-agent`` (0700, the agent's keys 0600 inside), both gone on purge.
"""

from __future__ import annotations

import compileall
import hashlib
import py_compile
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from helpline_packaging.bundle import Bundle, BundleError
from helpline_packaging.pyz import Built, write_checksum

PACKAGE: Final = "helpline-agent"
LIB_DIR: Final = "usr/lib/helpline-agent"
CONFIG_FILE: Final = "etc/helpline-agent/agent.toml"
UNIT_DIR: Final = "lib/systemd/system"
UNIT_FILE: Final = f"{UNIT_DIR}/helpline-agent.service"
ROOT_UNITS: Final = ("helpline-agent-root.socket", "helpline-agent-root@.service")
ROOT_HELPER: Final = "helpline-agent-root"
#: where the root helper's socket unit listens; the packaged config points the agent there
ROOT_SOCKET: Final = "/run/helpline-agent-root.sock"
DOC_DIR: Final = "usr/share/doc/helpline-agent"
MAINTAINER_SCRIPTS: Final = ("preinst", "postinst", "prerm", "postrm")
_DEB_ARCH: Final = {"x86_64": "amd64", "arm64": "arm64", "i686": "i386", "armv7l": "armhf"}

COPYRIGHT: Final = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: helpline
Comment: The agent bundles third-party Python libraries under
 /usr/lib/helpline-agent/lib; each one's licence is in its *.dist-info directory.

Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
"""

README: Final = """\
helpline-agent for Debian
=========================

Join a support session (you are asked to consent on this terminal):

    sudo helpline-agent join CODE

The agent runs as the system user helpline-agent, with its key and session in
/var/lib/helpline-agent and the controller's address and pin in
/etc/helpline-agent/agent.toml. While a session you approved lasts,
helpline-agent.service keeps it connected across reboots and upgrades.
End it at any time with:

    sudo helpline-agent leave

Fixes that need root (restarting a service, flushing DNS…) run, after you
say yes, through a root helper: helpline-agent-root.socket, which only the
agent's user may open, and which runs nothing but fixes signed into the
catalogue whose key is in /etc/helpline-agent/agent.toml. Its log:

    journalctl -u 'helpline-agent-root@*'

To allow no root fixes at all: sudo systemctl disable --now helpline-agent-root.socket

Removing the package keeps the agent's identity; purging removes everything.
"""


@dataclass(frozen=True)
class DebInfo:
    """What goes into DEBIAN/control."""

    version: str
    architecture: str
    depends: str


def build_deb(bundle: Bundle, config_text: str, out_dir: Path, *, revision: int = 1) -> Built:
    """Build ``helpline-agent_<version>-<revision>_<arch>.deb`` and its ``.sha256``."""
    dpkg_deb = shutil.which("dpkg-deb")
    if dpkg_deb is None:
        raise BundleError("dpkg-deb is not installed: build the .deb on Debian or Ubuntu")
    info = deb_info(bundle, revision)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="helpline-deb-") as scratch:
        root = Path(scratch) / "root"
        stage(bundle, config_text, root)
        write_control(root, info, installed_kib(root))
        target = out_dir / f"{PACKAGE}_{info.version}_{info.architecture}.deb"
        result = subprocess.run(
            [dpkg_deb, "--root-owner-group", "-Zxz", "--build", str(root), str(target)],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise BundleError(f"dpkg-deb failed: {result.stderr.strip() or result.stdout}")
    return write_checksum(target)


def deb_info(bundle: Bundle, revision: int) -> DebInfo:
    """Version, architecture and dependencies for this bundle."""
    if bundle.target.platform != "linux":
        raise BundleError(f"a .deb needs a Linux build machine, not {bundle.target.platform}")
    architecture = _DEB_ARCH.get(bundle.target.machine)
    if architecture is None:
        raise BundleError(f"no Debian architecture name known for {bundle.target.machine}")
    major, minor = (int(part) for part in bundle.target.python.split("."))
    # The compiled extensions and bytecode fit exactly this Python minor version.
    depends = (
        f"python3 (>= {major}.{minor}~), python3 (<< {major}.{minor + 1}), "
        "passwd, init-system-helpers (>= 1.54~)"
    )
    return DebInfo(f"{bundle.version}-{revision}", architecture, depends)


def stage(bundle: Bundle, config_text: str, root: Path) -> None:
    """Lay out the package's files under ``root`` with their final modes."""
    lib = root / LIB_DIR / "lib"
    for name, source in bundle.files():
        target = lib / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    # Shipped compiled: the service's /usr is read-only, and the launcher writes none (-B).
    compileall.compile_dir(
        lib,
        quiet=2,
        workers=0,
        invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
    )
    data = resources.files("helpline_packaging")
    _write(root / LIB_DIR / PACKAGE, data.joinpath("launcher.py").read_bytes(), 0o755)
    _write(root / LIB_DIR / ROOT_HELPER, data.joinpath("root_launcher.py").read_bytes(), 0o755)
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/bin" / PACKAGE).symlink_to(f"../lib/{PACKAGE}/{PACKAGE}")
    _write(root / CONFIG_FILE, config_text.encode(), 0o644)
    _write(root / UNIT_FILE, data.joinpath("debian", f"{PACKAGE}.service").read_bytes(), 0o644)
    for unit in ROOT_UNITS:
        _write(root / UNIT_DIR / unit, data.joinpath("debian", unit).read_bytes(), 0o644)
    _write(root / DOC_DIR / "copyright", COPYRIGHT.encode(), 0o644)
    _write(root / DOC_DIR / "README.Debian", README.encode(), 0o644)
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        if path.is_dir():
            path.chmod(0o755)
        elif path.parent != root / LIB_DIR:
            path.chmod(0o644)
    for script in MAINTAINER_SCRIPTS:
        _write(root / "DEBIAN" / script, data.joinpath("debian", script).read_bytes(), 0o755)
    _write(root / "DEBIAN" / "conffiles", f"/{CONFIG_FILE}\n".encode(), 0o644)


def installed_kib(root: Path) -> int:
    """Installed-Size: KiB of everything outside DEBIAN/, as dpkg-gencontrol counts it."""
    total = 0
    for path in root.rglob("*"):
        if path.relative_to(root).parts[0] == "DEBIAN":
            continue
        total += 1 if path.is_symlink() or path.is_dir() else -(-path.stat().st_size // 1024)
    return total


def write_control(root: Path, info: DebInfo, installed: int) -> None:
    """DEBIAN/control and DEBIAN/md5sums."""
    control = (
        f"Package: {PACKAGE}\n"
        f"Version: {info.version}\n"
        f"Architecture: {info.architecture}\n"
        "Maintainer: helpline <helpline@localhost>\n"
        f"Installed-Size: {installed}\n"
        f"Depends: {info.depends}\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Description: helpline remote-support agent\n"
        " The customer side of helpline: dials out over pinned TLS 1.3 to one\n"
        " technician's controller, asks before anything is read, and runs as an\n"
        " unprivileged system user under a hardened systemd unit.\n"
    )
    _write(root / "DEBIAN" / "control", control.encode(), 0o644)
    sums = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if relative.parts[0] == "DEBIAN" or path.is_symlink() or not path.is_file():
            continue
        sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {relative.as_posix()}\n")  # noqa: S324 - dpkg's format
    _write(root / "DEBIAN" / "md5sums", "".join(sums).encode(), 0o644)


def _write(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)
