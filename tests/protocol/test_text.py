"""Remote text made safe to show: no control character survives, everything else does."""

from __future__ import annotations

import unicodedata

from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.text import one_line, visible

BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def _unsafe(char: str, allowed: str) -> bool:
    code = ord(char)
    if char in allowed:
        return False
    return (
        unicodedata.category(char) in ("Cc", "Cs", "Zl", "Zp")
        or code in BIDI
        or 0x80 <= code <= 0x9F
    )


# every code point, surrogates included: a JSON string may carry a lone one
hostile = st.text(
    alphabet=st.one_of(
        st.characters(codec=None, categories=None),
        st.sampled_from(["\x1b", "\x9b", "\r", "\n", "\t", "\u202e", "\u2066", "\ud800"]),
    )
)


@settings(max_examples=500, deadline=None)
@given(hostile)
def test_visible_leaves_no_control_but_newline_and_tab(text: str) -> None:
    shown = visible(text)
    assert not [c for c in shown if _unsafe(c, "\n\t")]
    shown.encode("utf-8")  # printable: a lone surrogate would raise here
    assert visible(shown) == shown


@settings(max_examples=500, deadline=None)
@given(hostile, st.integers(min_value=1, max_value=200))
def test_one_line_is_one_bounded_line(text: str, limit: int) -> None:
    shown = one_line(text, limit)
    assert not [c for c in shown if _unsafe(c, "")]
    assert len(shown) <= limit
    assert len(shown.splitlines()) <= 1


@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S", "Zs"])))
def test_ordinary_text_is_untouched(text: str) -> None:
    assert visible(text) == text
    assert one_line(text) == text


def test_the_attacks_from_the_report_become_readable() -> None:
    host = "pc\x1b]52;c;ZXZpbA==\x07\x1b[2J"
    assert visible(host) == "pc^[]52;c;ZXZpbA==^G^[[2J"
    assert visible("\x9b31m") == "\\x9b31m"
    assert visible("\x7f") == "^?"
    assert visible("invoice\u202egpj.exe") == "invoice<U+202E>gpj.exe"
    assert visible("a\r\nb\rc\n\td") == "a\nb^Mc\n\td"  # a Windows line end is not an attack
    title = "Printer\n  may:        read the printer queue only\x1b[8m"
    assert one_line(title) == "Printer^J  may:        read the printer queue only^[[8m"
    assert one_line("x" * 10, 5) == "xxxx…"
