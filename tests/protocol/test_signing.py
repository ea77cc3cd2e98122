"""Agent identity and challenge transcripts: what a signature binds, and what breaks it."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import signing
from protocol.errors import AuthError, ProtocolError
from tests.protocol.wire import (
    AGENT_KEY,
    AGENT_PUBLIC,
    CERT,
    CHALLENGE,
    MITM_CERT,
    OTHER_CHALLENGE,
    OTHER_KEY,
)

SIGNATURE = signing.sign_agent(AGENT_KEY, CHALLENGE, CERT)


def _flip_first_byte(signature: str) -> str:
    raw = bytearray(signing.b64d(signature))
    raw[0] ^= 0x01
    return signing.b64e(bytes(raw))


# -- the transcript ---------------------------------------------------------------------


def test_transcript_bytes_are_purpose_challenge_and_cert_joined_by_nul() -> None:
    assert signing.transcript(b"p", "chal", "ab12") == b"p\0chal\0ab12"
    assert signing.transcript(signing.API_PURPOSE, "c", "x") != signing.transcript(
        signing.AGENT_PURPOSE, "c", "x"
    )


def test_sign_and_verify_an_agent_transcript() -> None:
    assert len(signing.b64d(SIGNATURE)) == 64
    signing.verify_agent(AGENT_PUBLIC, SIGNATURE, CHALLENGE, CERT)  # no AuthError


def test_the_signature_is_over_the_agent_transcript() -> None:
    raw = signing.b64d(SIGNATURE)
    public = AGENT_KEY.public_key()
    public.verify(raw, signing.transcript(signing.AGENT_PURPOSE, CHALLENGE, CERT))


# -- what must not verify ---------------------------------------------------------------

FAILURES = {
    "another challenge (replay)": (AGENT_PUBLIC, SIGNATURE, OTHER_CHALLENGE, CERT),
    "another cert (man in the middle)": (AGENT_PUBLIC, SIGNATURE, CHALLENGE, MITM_CERT),
    "another key": (signing.public_key_text(OTHER_KEY), SIGNATURE, CHALLENGE, CERT),
    "corrupted signature": (AGENT_PUBLIC, _flip_first_byte(SIGNATURE), CHALLENGE, CERT),
    "truncated signature": (AGENT_PUBLIC, SIGNATURE[:-4], CHALLENGE, CERT),
    "empty signature": (AGENT_PUBLIC, "", CHALLENGE, CERT),
}


@pytest.mark.parametrize("args", FAILURES.values(), ids=FAILURES.keys())
def test_verification_fails(args: tuple[str, str, str, str]) -> None:
    with pytest.raises(AuthError, match="does not verify") as info:
        signing.verify_agent(*args)
    assert info.value.code == "auth_failed"


def test_a_signature_made_through_a_man_in_the_middle_fails_at_the_real_controller() -> None:
    # the agent signs what it saw: the MITM's certificate
    relayed = signing.sign_agent(AGENT_KEY, CHALLENGE, MITM_CERT)
    signing.verify_agent(AGENT_PUBLIC, relayed, CHALLENGE, MITM_CERT)  # fine at the MITM
    with pytest.raises(AuthError):
        signing.verify_agent(AGENT_PUBLIC, relayed, CHALLENGE, CERT)


def test_an_api_transcript_signature_is_no_agent_signature() -> None:
    api_sig = signing.b64e(AGENT_KEY.sign(signing.transcript(signing.API_PURPOSE, CHALLENGE, CERT)))
    with pytest.raises(AuthError):
        signing.verify_agent(AGENT_PUBLIC, api_sig, CHALLENGE, CERT)


@pytest.mark.parametrize(
    "public_key",
    [
        signing.b64e(signing.b64d(AGENT_PUBLIC)[:31]),
        signing.b64e(signing.b64d(AGENT_PUBLIC) + b"\0"),
        "",
    ],
    ids=["31 bytes", "33 bytes", "empty"],
)
def test_a_public_key_of_the_wrong_length_is_refused(public_key: str) -> None:
    with pytest.raises(AuthError, match="32 bytes"):
        signing.verify_agent(public_key, SIGNATURE, CHALLENGE, CERT)


@pytest.mark.parametrize("garbage", ["a", "é" * 43, "abcde"], ids=["1 char", "non-ascii", "5"])
def test_undecodable_base64_is_an_auth_error(garbage: str) -> None:
    with pytest.raises(AuthError, match="base64"):
        signing.b64d(garbage)
    with pytest.raises(AuthError):
        signing.verify_agent(garbage, SIGNATURE, CHALLENGE, CERT)
    with pytest.raises(AuthError):
        signing.verify_agent(AGENT_PUBLIC, garbage, CHALLENGE, CERT)


def test_auth_error_is_a_protocol_error_but_not_a_remote_one() -> None:
    assert issubclass(AuthError, ProtocolError)
    assert AuthError("x").code == "auth_failed"


# -- encodings, pins, identifiers -------------------------------------------------------


@settings(deadline=None)
@given(st.binary(max_size=100))
def test_b64_round_trip_is_unpadded_and_url_safe(data: bytes) -> None:
    text = signing.b64e(data)
    assert re.fullmatch(r"[A-Za-z0-9_-]*", text)
    assert signing.b64d(text) == data


def test_public_key_text_is_the_raw_key_in_base64url() -> None:
    raw = AGENT_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    assert len(AGENT_PUBLIC) == 43
    assert signing.b64d(AGENT_PUBLIC) == raw


def test_cert_fingerprint_is_lowercase_hex_sha256() -> None:
    der = b"\x30\x82\x01\x0a"
    assert signing.cert_fingerprint(der) == hashlib.sha256(der).hexdigest()
    assert re.fullmatch(r"[0-9a-f]{64}", signing.cert_fingerprint(der))


PIN = hashlib.sha256(b"cert").hexdigest()
COLONS = ":".join(PIN[i : i + 2] for i in range(0, 64, 2)).upper()


@pytest.mark.parametrize(
    "form",
    [PIN, PIN.upper(), COLONS, COLONS.lower(), f"sha256:{COLONS}", f"SHA256:{PIN}", f"  {PIN}\n"],
    ids=["plain", "upper", "colons", "colons lower", "sha256 colons", "SHA256 plain", "spaces"],
)
def test_normalise_pin_accepts_the_usual_forms(form: str) -> None:
    assert signing.normalise_pin(form) == PIN


@pytest.mark.parametrize(
    "bad",
    [
        "",
        PIN[:-1],
        PIN + "0",
        PIN[:-1] + "g",
        f"sha1:{PIN}",
        f"sha256:sha256:{PIN}",
        PIN[:32] + " " + PIN[32:],
        "0x" + PIN[2:],
        "da39a3ee5e6b4b0d3255bfef95601890afd80709",  # a SHA-1 digest
    ],
    ids=["empty", "63", "65", "non-hex", "sha1", "double prefix", "space", "0x", "sha1 digest"],
)
def test_normalise_pin_rejects_anything_else(bad: str) -> None:
    with pytest.raises(ValueError, match="64 hex digits"):
        signing.normalise_pin(bad)


def test_agent_id_is_stable_short_and_key_specific() -> None:
    first = signing.agent_id(AGENT_PUBLIC)
    assert first == signing.agent_id(signing.public_key_text(AGENT_KEY))
    assert re.fullmatch(r"A-[0-9a-f]{16}", first)
    assert first == "A-" + hashlib.sha256(signing.b64d(AGENT_PUBLIC)).hexdigest()[:16]
    assert first != signing.agent_id(signing.public_key_text(OTHER_KEY))
    fresh = Ed25519PrivateKey.generate()
    assert signing.agent_id(signing.public_key_text(fresh)) != first


def test_agent_id_of_garbage_is_an_auth_error() -> None:
    with pytest.raises(AuthError):
        signing.agent_id("a")
