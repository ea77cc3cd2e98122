"""Fix catalogue tooling: read a directory of manifests, make keys, sign, publish.

A catalogue directory holds one sub-directory per fix, each with ``fix.toml`` and at most
one script file the manifest names (``script = "clean.py"``). Signing reads every fix,
hashes it and signs the whole set with the catalogue key, which is kept apart from the
controller's TLS and audit keys and can live on an offline machine. The controller keeps
the published bundle and the catalogue public key in its home (``catalogue/``); agents
pin that key through ``helpline agent-config``.
"""

from __future__ import annotations

import os
import tomllib
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from controller.tls import write_secret
from protocol import catalogue
from protocol.catalogue import Bundle, Fix, SignedBundle


class FixCatalogueError(Exception):
    """A manifest, key or bundle is wrong; the message names the file and the problem."""


def builtin_dir() -> Path:
    """The catalogue that ships with helpline."""
    return Path(str(resources.files("controller") / "fixes_catalogue"))


def load_dir(directory: Path) -> list[Fix]:
    """Every fix under ``directory``, checked; sorted by id."""
    if not directory.is_dir():
        raise FixCatalogueError(f"{directory} is not a directory of fixes")
    fixes: list[Fix] = []
    for manifest in sorted(directory.glob("*/fix.toml")):
        try:
            data: dict[str, Any] = tomllib.loads(manifest.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise FixCatalogueError(f"{manifest}: not valid TOML: {exc}") from None
        script_name = data.pop("script", None)
        if script_name is not None:
            script_path = manifest.parent / str(script_name)
            if script_path.parent != manifest.parent or not script_path.is_file():
                raise FixCatalogueError(f"{manifest}: script {script_name!r} is not beside it")
            data["script"] = {"name": script_name, "content": script_path.read_text()}
        try:
            fixes.append(Fix.model_validate(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            )
            raise FixCatalogueError(f"{manifest}: {problems}") from None
    ids = [fix.id for fix in fixes]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise FixCatalogueError(f"fix ids used twice: {', '.join(sorted(duplicates))}")
    if not fixes:
        raise FixCatalogueError(f"{directory} holds no */fix.toml")
    return sorted(fixes, key=lambda fix: fix.id)


def keygen(path: Path) -> str:
    """Write a catalogue signing key (0600) and ``PATH.pub``; returns the public key text."""
    if path.exists():
        raise FixCatalogueError(f"{path} exists; refusing to overwrite a signing key")
    key = Ed25519PrivateKey.generate()
    write_secret(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    public = catalogue.key_text(key.public_key())
    Path(str(path) + ".pub").write_text(public + "\n")
    return public


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise FixCatalogueError(f"cannot load signing key {path}: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise FixCatalogueError(f"{path} is not an Ed25519 key")
    return key


def sign_dir(directory: Path, key_path: Path, serial: int | None = None) -> SignedBundle:
    """Sign every fix in ``directory``; the serial defaults to the current Unix time."""
    now = datetime.now(UTC)
    return catalogue.sign_bundle(
        load_key(key_path),
        load_dir(directory),
        serial=serial or int(now.timestamp()),
        signed_at=now,
    )


class PublishedCatalogue:
    """The bundle the controller serves and the key it was pinned to, in its home."""

    def __init__(self, home: Path) -> None:
        self.dir = home / "catalogue"
        self.bundle_path = self.dir / "bundle.json"
        self.key_path = self.dir / "key.pub"

    def key(self) -> str | None:
        try:
            return self.key_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def load(self) -> tuple[SignedBundle, Bundle] | None:
        """The published bundle, verified again with the pinned key; None if none."""
        key = self.key()
        if key is None or not self.bundle_path.exists():
            return None
        signed = SignedBundle.model_validate_json(self.bundle_path.read_text())
        return signed, catalogue.open_bundle(signed, catalogue.public_key(key))

    def publish(self, signed: SignedBundle, *, replace_key: bool = False) -> tuple[Bundle, bool]:
        """Verify and store ``signed``; the first publish pins its key. Returns the bundle
        and whether the key was newly pinned."""
        pinned = self.key()
        if pinned is not None and pinned != signed.key and not replace_key:
            raise catalogue.CatalogueError(
                "key_changed",
                "this bundle is signed with another key than the pinned one; agents would "
                "refuse it (publish with --replace-key after re-issuing agent configs)",
            )
        bundle = catalogue.open_bundle(signed, catalogue.public_key(signed.key))
        current = self.load() if pinned == signed.key else None
        if current is not None and bundle.serial < current[1].serial:
            raise catalogue.CatalogueError(
                "bundle_rollback",
                f"serial {bundle.serial} is older than the published {current[1].serial}",
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.bundle_path.with_suffix(".tmp")
        tmp.write_text(signed.model_dump_json())
        os.replace(tmp, self.bundle_path)
        newly = pinned != signed.key
        if newly:
            self.key_path.write_text(signed.key + "\n")
        return bundle, newly
