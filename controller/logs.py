"""What ``helpline serve`` logs, and how: one event a line, ``key=value`` for people or
JSON for log shippers (``--log-format json``).

:func:`event` logs a named event with fields; the formatters here render the fields of
such records and leave every other record's message as it is. Two rules hold for every
line: no secrets (fields named like keys, signatures or secrets are dropped, URLs lose
their user and password; session codes never reach a log at all, they are not passed),
and nothing that came from the wire can forge a line (control characters, newlines and
quotes in a value are escaped; JSON escapes them by itself).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from protocol.text import SafeLogFormatter

FORMATS: Final = ("text", "json")
#: never logged, whatever event carries them: key material, shared secrets, and a fix's
#: parameters (anything a technician typed); key fingerprints and parameters are in the
#: audit log, which is where an investigation starts
SECRET_FIELDS: Final = frozenset(
    {"key", "public_key", "signature", "secret", "pepper", "token", "password", "params"}
)
_TEXT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def event(
    logger: logging.Logger, name: str, fields: dict[str, Any], level: int = logging.INFO
) -> None:
    """Log one event: ``name`` and its fields (None values left out)."""
    if logger.isEnabledFor(level):
        clean = {k: v for k, v in fields.items() if v is not None}
        logger.log(level, name, extra={"fields": clean})


def public(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields that may be logged: secrets dropped, credentials cut out of URLs."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if name in SECRET_FIELDS:
            continue
        if name == "url" and isinstance(value, str):
            value = _without_credentials(value)
        out[name] = value
    return out


def _without_credentials(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def escape(text: str) -> str:
    """``text`` with everything that could break a line or a terminal made visible."""
    out = []
    for char in text:
        if char == "\\" or char == '"':
            out.append("\\" + char)
        elif char.isprintable():
            out.append(char)
        elif char in "\n\r\t":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}[char])
        elif ord(char) <= 0xFF:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return "".join(out)


def _value(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
    safe = escape(text)
    # quoted when a reader could not tell where it ends
    if not safe or safe != text or any(c in text for c in ' ="'):
        return f'"{safe}"'
    return safe


class TextFormatter(SafeLogFormatter):
    """``2026-… INFO helpline.audit: consent.refused ticket=T-1 reason=timed_out``."""

    def __init__(self) -> None:
        super().__init__(_TEXT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)  # the format ends with the message
        fields = getattr(record, "fields", None)
        if not fields:
            return line
        pairs = " ".join(f"{k}={_value(v)}" for k, v in public(fields).items())
        return f"{line} {pairs}" if pairs else line


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts``, ``level``, ``logger``, ``event`` or ``message``,
    then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None)
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if fields is not None:
            line["event"] = record.getMessage()
            line.update({k: v for k, v in public(fields).items() if k not in line})
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        # ensure_ascii: every control character and line separator arrives escaped
        return json.dumps(line, default=str)


def configure(log_format: str, *, debug: bool = False) -> None:
    """Route the root logger to stderr in ``log_format`` (text or json)."""
    if log_format not in FORMATS:
        raise ValueError(f"--log-format is {' or '.join(FORMATS)}, not {log_format!r}")
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO)
    formatter = TextFormatter() if log_format == "text" else JsonFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
