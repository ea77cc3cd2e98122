"""Text from the other side, made safe to show on a terminal and to write to a log.

Anything a peer sends (a host name, a process name, fix output, a ticket title) may carry
bytes a terminal obeys: ``ESC ] 52`` writes the clipboard, ``ESC [ 2J`` clears the screen,
``ESC [ 8m`` hides what follows, a bare CR or a newline lets a line pretend to be another
one. ``visible`` turns every such character into printable text that says what it was,
so the reader sees the attempt instead of its effect:

- C0 controls (U+0000..U+001F) and DEL in caret notation: ESC ``^[``, NUL ``^@``,
  CR ``^M``, DEL ``^?``;
- C1 controls (U+0080..U+009F) as ``\\x9b`` (CSI), ``\\x9d`` (OSC) and so on;
- bidi controls (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), which reorder
  what is shown (``exe.txt`` reads as ``txt.exe``), the line and paragraph separators
  U+2028 and U+2029, and lone surrogates (which cannot even be printed) as ``<U+202E>``.

Newline and tab stay as they are in ``visible`` (log lines, fix output are multi-line),
and a CR directly before a newline is dropped, since a Windows line end is not an attack.
``one_line`` makes newline and tab visible too and bounds the length: for anything that
must stay on its own line (a consent screen, a log record).

``SafeLogFormatter`` applies this to logs once for every call site: a record's first line
is one line whatever its arguments hold, and every further line (a traceback) is indented,
so nothing a client sends can start a line that reads as a record of its own.

Other invisible characters (zero-width space and joiner, soft hyphen) are left alone:
they cannot move the cursor or reorder text, and the joiner is part of many emoji.
The mapping is per character (a CR LF split between two chunks shows its CR as ``^M``), so
a stream can be shown chunk by chunk, and applying it twice changes nothing.
"""

from __future__ import annotations

import logging
import re

__all__ = ["SafeLogFormatter", "one_line", "visible"]

_SPECIAL = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029\ud800-\udfff"
_UNSAFE = re.compile(f"\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f{_SPECIAL}]")
_UNSAFE_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_SPECIAL}]")
_ELLIPSIS = "…"


def _shown(match: re.Match[str]) -> str:
    char = match.group()
    if char == "\r\n":
        return "\n"
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    if code <= 0x9F:
        return f"\\x{code:02x}"
    return f"<U+{code:04X}>"


def visible(text: str, *, keep_newlines: bool = True) -> str:
    """``text`` with every control character shown as printable text (see the module)."""
    pattern = _UNSAFE if keep_newlines else _UNSAFE_ONE_LINE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_shown, text)


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on exactly one line, controls and newlines visible, at most ``limit`` long."""
    shown = visible(text, keep_newlines=False)
    if limit is not None and len(shown) > limit:
        shown = shown[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS
    return shown


class SafeLogFormatter(logging.Formatter):
    """A log formatter under which no logged value can forge a record.

    The formatted message (with its arguments, which quote the wire: a frame's ``type``,
    a ``reply_to``, a host name) goes through ``one_line``; tracebacks and stacks stay
    multi-line for people, but each of their lines is shown with ``one_line`` and indented
    by two spaces, so a record starts at column 0 and nothing else does.
    """

    def format(self, record: logging.LogRecord) -> str:
        """The record as its one-line head and its indented tail (traceback, stack)."""
        record.message = record.getMessage()
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        head = one_line(self.formatMessage(record))
        blocks: list[str] = []
        if record.exc_info:
            blocks.append(self.formatException(record.exc_info))
        elif record.exc_text:
            blocks.append(record.exc_text)
        if record.stack_info:
            blocks.append(self.formatStack(record.stack_info))
        tail = [f"  {one_line(line)}" for block in blocks for line in block.split("\n")]
        return "\n".join([head, *tail])
