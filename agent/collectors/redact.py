"""Mask secrets in text before it leaves the customer's machine.

Command lines and log lines carry secrets more often than anyone would like:
``--password=…``, ``token=…`` in a URL, ``Authorization: Bearer …`` in a logged request,
a private key pasted into a config. :func:`redact` masks the secret and keeps the name, so
a technician still sees *that* a process was started with a password, never the password.

Over-masking is the safe side: a value after ``token=`` that was not a secret costs a
technician a little detail; a secret that slips through cannot be taken back.
"""

from __future__ import annotations

import re
from typing import Any, Final

MASK: Final = "***"

# Names whose values are secrets: password, passwd, db_password, api-key, access_token,
# client_secret, MYSQL_PWD, x-auth-token, session_id, cookie…
_NAME: Final = (
    r"(?!(?:proxy-)?authorization\b)[\w.-]*?(?:pass(?:word|wd|phrase)?|(?<=[_.-])pwd|secret|token|api[_.-]?key|apikey|"
    r"access[_.-]?key|private[_.-]?key|credentials?|auth(?:[_.-]?key)?|session[_.-]?(?:id|key)|"
    r"cookie|signature)[\w.-]*"
)

_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    # PEM private keys, whole or cut off by clipping
    (
        re.compile(
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
            re.DOTALL,
        ),
        "-----BEGIN PRIVATE KEY----- " + MASK + " -----END PRIVATE KEY-----",
    ),
    # Authorization: Bearer abc / Proxy-Authorization: Basic abc=
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"((?:bearer|basic|digest|negotiate|token|ntlm)\s+)?[^\s,;\"']+"
        ),
        r"\1\2" + MASK,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]{6,}=*"), r"\1 " + MASK),
    # scheme://user:secret@host
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*):([^/\s@]+)@"), r"\1:" + MASK + "@"),
    # name=value, name: value, "name": "value"
    (
        re.compile(
            rf"(?i)(?<![\w-])(--?)?({_NAME})([\"']?\s*[:=]\s*)(\"[^\"]*\"|'[^']*'|[^\s&;,\"'<>]+)"
        ),
        r"\1\2\3" + MASK,
    ),
    # --password value, -token value, --secret 'two words'
    (
        re.compile(rf"(?i)(?<![\w-])(--?{_NAME})(\s+)(?!-)(?:\"[^\"]*\"|'[^']*'|\S+)"),
        r"\1\2" + MASK,
    ),
    # token shapes that need no name: AWS keys, GitHub, GitLab, Slack, JWTs, sk-…
    (
        re.compile(
            r"\b(?:(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{20,}|glpat-[\w-]{20,}|"
            r"xox[abprs]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9_-]{20,}|"
            r"eyJ[\w-]{8,}\.eyJ[\w-]{8,}\.[\w-]+)"
        ),
        MASK,
    ),
)

# One cheap search decides whether the rules above need to run at all.
_TRIGGER: Final = re.compile(
    r"(?i)pass|pwd|secret|token|key|auth|cred|session|cookie|signature|bearer|://|"
    r"AKIA|ASIA|gh[pousr]_|glpat-|xox|sk-|eyJ"
)


def redact(text: str) -> str:
    """``text`` with every secret it appears to hold replaced by ``***``."""
    if not _TRIGGER.search(text):
        return text
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


_FLAG: Final = re.compile(rf"(?i)^--?{_NAME}$")
_ASSIGNMENT: Final = re.compile(rf"(?is)^((?:--?)?{_NAME}[=:])(.+)$")


def redact_argv(argv: list[str]) -> str:
    """A command line as one redacted string, judged argument by argument first.

    Argument boundaries matter: after ``--password`` the *whole* next argument is the
    secret, spaces and all, and in ``api_key=two words`` everything after ``=`` is.
    """
    masked: list[str] = []
    secret_next = False
    for arg in argv:
        if secret_next:
            masked.append(MASK)
            secret_next = False
            continue
        secret_next = bool(_FLAG.match(arg))
        assignment = _ASSIGNMENT.match(arg)
        masked.append(assignment.group(1) + MASK if assignment else arg)
    # then the text rules, for what spans arguments (Authorization: Bearer …, URLs)
    return redact(" ".join(masked))


def redact_tree(value: Any) -> Any:
    """Redact every string in a JSON-like tree (dict keys included); other values as is."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(key)): redact_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_tree(item) for item in value]
    return value
