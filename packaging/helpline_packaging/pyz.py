"""The single-file agent: a zipapp that carries the bundle, its config and a manifest.

Layout of ``helpline-agent.pyz``::

    #!/usr/bin/env python3               shebang, so `./helpline-agent.pyz` works too
    __main__.py                          the bootstrap, with the manifest's SHA-256 in it
    helpline-agent.manifest.json         target, entry point, SHA-256 of every payload file
    lib/agent/… protocol/… transport/…  our code, plus lib/agent/bundled.toml (the config)
    lib/<dependency>/…                   the run-time dependencies (bundle.LEFT_OUT: not)

and beside it ``helpline-agent.pyz.sha256`` in ``sha256sum`` format. Entries are sorted and
dated 1980-01-01, so the same inputs give the same bytes and the same checksum.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from helpline_packaging.bundle import PLAIN_TYPER_ENV, Bundle

PYZ_NAME: Final = "helpline-agent.pyz"
ENTRY_POINT: Final = "agent.cli:run"
MANIFEST_NAME: Final = "helpline-agent.manifest.json"
PAYLOAD_PREFIX: Final = "lib/"
CONFIG_ENTRY: Final = "agent/bundled.toml"
SHEBANG: Final = b"#!/usr/bin/env python3\n"
_EPOCH: Final = (1980, 1, 1, 0, 0, 0)
_PLACEHOLDER: Final = '"@MANIFEST_SHA256@"'


@dataclass(frozen=True)
class Built:
    """An artefact and its checksum file."""

    path: Path
    checksum_path: Path
    sha256: str
    size: int


def build_pyz(bundle: Bundle, config_text: str, out_dir: Path) -> Built:
    """Write ``helpline-agent.pyz`` and its ``.sha256`` into ``out_dir``."""
    payload = [(name, source.read_bytes()) for name, source in bundle.files()]
    payload.append((CONFIG_ENTRY, config_text.encode()))
    payload.sort()
    manifest = manifest_bytes(bundle, payload)
    main = bootstrap_source(hashlib.sha256(manifest).hexdigest())

    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / PYZ_NAME
    partial = out_dir / f".{PYZ_NAME}.partial"
    with open(partial, "wb") as raw:
        raw.write(SHEBANG)
        with zipfile.ZipFile(raw, "w") as archive:
            _add(archive, "__main__.py", main.encode(), compress=False)
            _add(archive, MANIFEST_NAME, manifest, compress=False)
            for name, data in payload:
                _add(archive, PAYLOAD_PREFIX + name, data, compress=True)
    partial.chmod(0o755)
    os.replace(partial, target)
    return write_checksum(target)


def manifest_bytes(bundle: Bundle, payload: Iterable[tuple[str, bytes]]) -> bytes:
    """The manifest: what the bootstrap checks every payload file against."""
    document = {
        "format": 1,
        "name": "helpline-agent",
        "version": bundle.version,
        "target": {
            "python": bundle.target.python,
            "cache_tag": bundle.target.cache_tag,
            "platform": bundle.target.platform,
            "machine": bundle.target.machine,
        },
        "entry": ENTRY_POINT,
        "environment": dict([PLAIN_TYPER_ENV]),
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in payload},
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def bootstrap_source(manifest_sha256: str) -> str:
    """The bootstrap module's text with the manifest digest written into it."""
    source = resources.files("helpline_packaging").joinpath("bootstrap.py").read_text()
    if source.count(_PLACEHOLDER) != 1:
        raise RuntimeError("bootstrap.py must hold the manifest placeholder exactly once")
    return source.replace(_PLACEHOLDER, f'"{manifest_sha256}"')


def write_checksum(path: Path) -> Built:
    """Write ``<path>.sha256`` as ``sha256sum`` does (checkable with ``sha256sum -c``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    sha256 = digest.hexdigest()
    checksum = path.with_name(path.name + ".sha256")
    checksum.write_text(f"{sha256}  {path.name}\n")
    return Built(path, checksum, sha256, path.stat().st_size)


def _add(archive: zipfile.ZipFile, name: str, data: bytes, *, compress: bool) -> None:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    archive.writestr(info, data, compresslevel=9 if compress else None)
