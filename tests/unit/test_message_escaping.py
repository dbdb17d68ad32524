"""A client's value quoted in an error message never brings its control characters with it."""

from __future__ import annotations

import pytest
from infery.domain.errors import InvalidRequest, public_message


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("a\x00b", "a\\x00b"),
        ("line\nbreak\r", "line\\nbreak\\r"),
        ("\x1b[31mred", "\\x1b[31mred"),
        ("del\x7f and c1\x85", "del\\x7f and c1\\x85"),
        ("half \ud800 a character", "half \\ud800 a character"),
    ],
)
def test_control_characters_and_unpaired_surrogates_are_written_out(raw, shown):
    assert public_message(raw) == shown
    assert InvalidRequest(f"The model '{raw}' does not exist.").message == f"The model '{shown}' does not exist."


def test_text_a_person_reads_is_left_as_it_is():
    text = "Café, 日本語, emoji 😀, tab-free and quoted 'en'."
    assert public_message(text) == text
