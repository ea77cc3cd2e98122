"""Pure functions for the agent's Ed25519 identity, the challenge transcripts and the pin.

A signature proves possession of a key *for this controller*: the signed transcript binds
the purpose, the controller's random challenge and the SHA-256 of the TLS certificate the
signer actually saw. A signature made through a man in the middle (another certificate)
does not verify at the real controller.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocol.errors import AuthError

AGENT_PURPOSE: Final = b"helpline agent auth v1"
API_PURPOSE: Final = b"helpline api auth v1"


def b64e(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(text: str) -> bytes:
    """Inverse of :func:`b64e`; raises :class:`AuthError` on garbage."""
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (ValueError, TypeError) as exc:
        raise AuthError(f"not valid base64: {exc}") from None


def cert_fingerprint(der: bytes) -> str:
    """The pin format: lowercase hex SHA-256 of the DER certificate."""
    return hashlib.sha256(der).hexdigest()


class PinMismatch(Exception):
    """The controller presented a certificate other than the pinned one."""

    #: what the customer at an agent can do about it (the default message)
    AGENT_ADVICE: Final = (
        "If the controller was re-installed, ask its admin for a new agent config; "
        "otherwise someone may be intercepting the connection."
    )

    def __init__(self, expected: str, actual: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(self.explain(self.AGENT_ADVICE))

    def explain(self, advice: str) -> str:
        """The mismatch, both fingerprints, and ``advice`` fitted to whoever reads it."""
        return (
            "the controller's TLS certificate does not match the pinned fingerprint\n"
            f"  pinned:    sha256:{self.expected}\n"
            f"  presented: sha256:{self.actual}\n"
            f"Refusing to talk to it. {advice}"
        )


def check_pin(der: bytes | None, pin: str) -> str:
    """The fingerprint of the peer's certificate ``der``; :class:`PinMismatch` unless ``pin``."""
    actual = cert_fingerprint(der) if der else "(no certificate)"
    if actual != pin:
        raise PinMismatch(pin, actual)
    return actual


def normalise_pin(pin: str) -> str:
    """Accept ``sha256:AB:CD…``, ``AB:CD…`` or plain hex; return plain lowercase hex."""
    text = pin.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:") :]
    text = text.replace(":", "")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise ValueError("a certificate pin is 64 hex digits (SHA-256), optionally colon-separated")
    return text


def transcript(purpose: bytes, challenge: str, cert_sha256: str) -> bytes:
    """The exact bytes a peer signs to answer ``challenge`` on a given certificate."""
    return b"\0".join((purpose, challenge.encode("ascii"), cert_sha256.encode("ascii")))


def public_key_text(key: Ed25519PrivateKey) -> str:
    """The agent's public key as it travels: raw 32 bytes, base64url."""
    raw = key.public_key().public_bytes_raw()
    return b64e(raw)


def agent_id(public_key: str) -> str:
    """A stable, short agent identifier derived from its public key."""
    return "A-" + hashlib.sha256(b64d(public_key)).hexdigest()[:16]


def sign_agent(key: Ed25519PrivateKey, challenge: str, cert_sha256: str) -> str:
    """Sign the agent transcript for ``challenge`` on the certificate we pinned."""
    return b64e(key.sign(transcript(AGENT_PURPOSE, challenge, cert_sha256)))


def verify_agent(public_key: str, signature: str, challenge: str, cert_sha256: str) -> None:
    """Raise :class:`AuthError` unless ``signature`` answers ``challenge`` with ``public_key``."""
    raw = b64d(public_key)
    if len(raw) != 32:
        raise AuthError("agent public key must be 32 bytes of Ed25519")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(
            b64d(signature), transcript(AGENT_PURPOSE, challenge, cert_sha256)
        )
    except InvalidSignature:
        raise AuthError("agent signature does not verify") from None
