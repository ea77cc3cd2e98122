"""The fix catalogue, pure: manifests, signed bundles, parameter validation, argv building.

A **fix** is a manifest (id, customer-facing text, minimum support level, typed parameters,
the command as an argv list, timeout, …) and optionally one script. A **bundle** is every
fix of a catalogue, each with the SHA-256 of its canonical form, in one canonical JSON
payload signed with the catalogue's Ed25519 key. The agent pins that key: it runs a fix
only from a bundle whose signature verifies, only if the fix's hash matches, and only with
parameters that pass the fix's own schema.

Placeholders in ``command`` are whole arguments, ``{name}``; values never pass through a
shell and are never spliced into a larger string, so ``; rm -rf /`` is one literal
argument. Two placeholders are the agent's own: ``{python}`` (the agent's interpreter) and
``{script}`` (the fix's script, written from the signed bundle just before the run).

Filesystem checks (does a path resolve under an allowed root, does a pid exist) are the
agent's job; this module checks everything that needs no I/O.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Final, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from protocol.errors import ProtocolError
from protocol.signing import b64d, b64e
from protocol.vocabulary import STAFF_LEVELS, StaffLevel

BUNDLE_FORMAT: Final = 1
#: the name controller/fixes_api.py still reads; it goes when fix.run moves to the registry
LEVELS: Final = STAFF_LEVELS
AGENT_PLACEHOLDERS: Final = frozenset({"python", "script"})
_PLACEHOLDER = re.compile(r"^\{([a-z][a-z0-9_]{0,31})\}$")
_ID = r"^[a-z][a-z0-9_.-]{1,47}$"


class CatalogueError(ProtocolError):
    """A bundle, fix or parameter does not pass; ``code`` says which check failed."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Param(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    description: str = Field(default="", max_length=500)


class IntParam(_Param):
    type: Literal["int"]
    min: int
    max: int
    default: int | None = None


class EnumParam(_Param):
    type: Literal["enum"]
    choices: tuple[str, ...] = Field(min_length=1)
    default: str | None = None


class PathParam(_Param):
    """A path that must resolve (symlinks and ``..`` followed) under one of ``roots``."""

    type: Literal["path"]
    roots: tuple[str, ...] = Field(min_length=1)
    default: str | None = None


class StringParam(_Param):
    type: Literal["string"]
    pattern: str
    max_length: int = Field(default=200, le=4096)
    default: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        re.compile(value)
        return value


class PidParam(_Param):
    """A process id; the agent shows the customer what the process is."""

    type: Literal["pid"]
    default: None = None


Param = Annotated[
    IntParam | EnumParam | PathParam | StringParam | PidParam, Field(discriminator="type")
]


class Script(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    content: str = Field(max_length=256_000)


class Fix(BaseModel):
    """One fix as it stands in a bundle (``sha256`` covers everything else)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_ID)
    title: str = Field(min_length=1, max_length=120)
    description: str = Field(min_length=1, max_length=2000)
    platforms: tuple[Literal["linux", "darwin", "windows"], ...] = ("linux",)
    min_level: StaffLevel = "L1"
    params: dict[str, Param] = Field(default_factory=dict)
    command: tuple[str, ...] = Field(min_length=1, max_length=64)
    undo: tuple[str, ...] | None = None
    timeout: float = Field(default=60, gt=0, le=3600)
    needs_root: bool = False
    reversible: bool = False
    targets: str | None = Field(default=None, max_length=64)
    collectors: tuple[str, ...] = ()
    script: Script | None = None

    @model_validator(mode="after")
    def _placeholders_are_declared(self) -> Fix:
        for argv in (self.command, self.undo or ()):
            for arg in argv:
                if "{" not in arg and "}" not in arg:
                    continue
                match = _PLACEHOLDER.match(arg)
                if match is None:
                    raise ValueError(
                        f"{arg!r}: a placeholder must be a whole argument, like '{{days}}'"
                    )
                name = match.group(1)
                if name not in self.params and name not in AGENT_PLACEHOLDERS:
                    raise ValueError(f"{arg!r} names no declared parameter")
                if name == "script" and self.script is None:
                    raise ValueError("'{script}' is used but the fix has no script")
        for name in self.params:
            if name in AGENT_PLACEHOLDERS:
                raise ValueError(f"{name!r} is reserved for the agent")
        return self

    def content_hash(self) -> str:
        """SHA-256 of the canonical manifest (script included)."""
        return hashlib.sha256(canonical(self.model_dump(mode="json")).encode()).hexdigest()


class BundleEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    fix: Fix


class Bundle(BaseModel):
    """The signed payload: every fix of a catalogue and when it was signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal[1] = BUNDLE_FORMAT
    serial: int = Field(ge=1)
    signed_at: str
    fixes: tuple[BundleEntry, ...]

    def find(self, fix_id: str) -> Fix:
        for entry in self.fixes:
            if entry.fix.id == fix_id:
                if entry.fix.content_hash() != entry.sha256:
                    raise CatalogueError("fix_hash", f"fix {fix_id} does not match its signed hash")
                return entry.fix
        raise CatalogueError("unknown_fix", f"fix {fix_id!r} is not in the signed catalogue")


class SignedBundle(BaseModel):
    """What travels and what is stored: the payload text exactly as signed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payload: str = Field(max_length=4_000_000)
    signature: str = Field(max_length=128)
    key: str = Field(max_length=64)


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def key_text(key: Ed25519PublicKey) -> str:
    """A catalogue public key as configs carry it: raw 32 bytes, base64url."""
    return b64e(key.public_bytes_raw())


def public_key(text: str) -> Ed25519PublicKey:
    raw = b64d(text.strip())
    if len(raw) != 32:
        raise CatalogueError("bad_key", "a fix-signing public key is 32 bytes, base64url")
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_bundle(
    key: Ed25519PrivateKey, fixes: list[Fix], *, serial: int, signed_at: datetime
) -> SignedBundle:
    """Hash every fix and sign the whole catalogue."""
    bundle = Bundle(
        serial=serial,
        signed_at=signed_at.isoformat(timespec="seconds"),
        fixes=tuple(BundleEntry(sha256=f.content_hash(), fix=f) for f in fixes),
    )
    payload = canonical(bundle.model_dump(mode="json"))
    return SignedBundle(
        payload=payload,
        signature=b64e(key.sign(payload.encode())),
        key=key_text(key.public_key()),
    )


def open_bundle(signed: SignedBundle, pinned: Ed25519PublicKey) -> Bundle:
    """Verify the signature with the pinned key, then parse; any failure refuses."""
    try:
        pinned.verify(b64d(signed.signature), signed.payload.encode())
    except (InvalidSignature, ProtocolError):
        raise CatalogueError(
            "bundle_signature",
            "the fix catalogue's signature does not verify with the pinned key",
        ) from None
    try:
        return Bundle.model_validate_json(signed.payload)
    except ValidationError as exc:
        raise CatalogueError(
            "bundle_invalid", f"the signed catalogue is malformed: {exc}"
        ) from None


def level_allows(technician_level: str | None, fix: Fix) -> bool:
    """Whether a technician of this level may run ``fix`` (admins have no level: no)."""
    return technician_level in STAFF_LEVELS and STAFF_LEVELS.index(
        technician_level
    ) >= STAFF_LEVELS.index(fix.min_level)


def validate_params(fix: Fix, given: Mapping[str, Any]) -> dict[str, str]:
    """Check every value against the fix's schema; returns the values as argv strings.

    Paths are checked for form only here (absolute, no NUL); the agent resolves them on its
    filesystem and checks the roots.
    """
    unknown = set(given) - set(fix.params)
    if unknown:
        raise CatalogueError("bad_param", f"unknown parameter(s): {', '.join(sorted(unknown))}")
    values: dict[str, str] = {}
    for name, spec in fix.params.items():
        raw = given.get(name, spec.default)
        if raw is None:
            raise CatalogueError("bad_param", f"parameter {name} is required")
        values[name] = _check(name, spec, raw)
    return values


def _check(name: str, spec: Any, raw: Any) -> str:
    text = str(raw)
    if "\x00" in text:
        raise CatalogueError("bad_param", f"{name}: NUL bytes are not allowed")
    if isinstance(spec, IntParam | PidParam):
        try:
            number = int(text, 10)
        except ValueError:
            raise CatalogueError(
                "bad_param", f"{name} must be a whole number, not {text!r}"
            ) from None
        low, high = (spec.min, spec.max) if isinstance(spec, IntParam) else (2, 4_194_304)
        if not low <= number <= high:
            raise CatalogueError("bad_param", f"{name} must be from {low} to {high}, not {number}")
        return str(number)
    if isinstance(spec, EnumParam):
        if text not in spec.choices:
            raise CatalogueError("bad_param", f"{name} must be one of {', '.join(spec.choices)}")
        return text
    if isinstance(spec, PathParam):
        if not text.startswith("/"):
            raise CatalogueError("bad_param", f"{name} must be an absolute path")
        return text
    assert isinstance(spec, StringParam)
    if len(text) > spec.max_length or re.fullmatch(spec.pattern, text) is None:
        raise CatalogueError("bad_param", f"{name}: {text!r} does not match {spec.pattern!r}")
    return text


def build_argv(argv: tuple[str, ...], values: Mapping[str, str]) -> list[str]:
    """Replace whole-argument placeholders; every other argument stays as written."""
    out = []
    for arg in argv:
        match = _PLACEHOLDER.match(arg)
        out.append(values[match.group(1)] if match else arg)
    return out
