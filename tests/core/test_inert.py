"""inert.visible: every character that controls, reorders, hides or breaks a line is written as an escape."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from prefect_cancel_doctor.core.inert import MAX_CHARS, TRUNCATED, visible

#: What a terminal, an editor or a Markdown viewer acts on instead of showing.
HOSTILE = {
    "ESC (a CSI sequence)": "\x1b[2J",
    "OSC 52 (write the clipboard)": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "C1 CSI": "\x9b31m",
    "C1 OSC": "\x9d0;title\x9c",
    "NEL": "\x85",
    "DEL": "\x7f",
    "LRE/RLE/PDF/LRO/RLO": "\u202a\u202b\u202c\u202d\u202e",
    "LRI/RLI/FSI/PDI": "\u2066\u2067\u2068\u2069",
    "LRM/RLM/ALM": "\u200e\u200f\u061c",
    "line and paragraph separators": "\u2028\u2029",
    "BOM / zero-width no-break space": "\ufeff",
    "zero-width space, word joiner": "\u200b\u2060",
    "soft hyphen": "\xad",
    "tag characters": "\U000e0041\U000e007f",
    "lone surrogate": "\udc80",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_each_hostile_character_is_written_as_an_escape(name: str) -> None:
    text = f"etl{HOSTILE[name]}run"
    shown = visible(text)
    assert shown.isprintable(), (name, shown)
    assert shown.startswith("etl") and shown.endswith("run")
    assert "\\" in shown


def test_escapes_name_the_code_point_unambiguously() -> None:
    assert visible("a\u202eb") == "a\\u202eb"
    assert visible("a\u200eb\u2028c\ufeff") == "a\\u200eb\\u2028c\\ufeff"
    assert visible("\x1b]52;c;aGk=\x07") == "\\x1b]52;c;aGk=\\x07"
    assert visible("\x9b") == "\\x9b"
    # A code point past the BMP takes eight digits: `\ue0041` would read as U+E004 then "1".
    assert visible("\U000e0041") == "\\U000e0041"


def test_real_names_keep_their_letters() -> None:
    for name in (
        "nightly-etl",
        "tab\there",
        "Ünïcödé naïve café",
        "日本語のフロー",
        "עברית",  # right-to-left script, no override
        "می‌خواهم",  # Persian with a zero-width non-joiner
        "👩‍💻 dev",  # an emoji ZWJ sequence
        "non\xa0breaking",
    ):
        assert visible(name) == name


def test_long_text_is_cut_with_a_marker_and_made_inert() -> None:
    shown = visible("\u202e" * (MAX_CHARS + 10))
    assert shown.endswith(TRUNCATED)
    assert "\u202e" not in shown


def test_every_control_format_and_separator_character_is_escaped() -> None:
    # Every Cc, Cf, Cs, Zl and Zp code point of this Python's Unicode tables, but tab and the
    # two joiners real names use; and nothing else is (but code points unassigned here).
    kept = {"\t", "\u200c", "\u200d"}
    for code in range(sys.maxunicode + 1):
        char = chr(code)
        category = unicodedata.category(char)
        escaped = visible(char) != char
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp") and char not in kept:
            assert escaped, f"U+{code:04X} ({category}) is printed raw"
        elif category != "Cn":
            assert not escaped, f"U+{code:04X} ({category}) is escaped"
