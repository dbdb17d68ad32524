"""benchmarks.wer: one normalisation for every run (case, punctuation, numbers as words), Levenshtein over words."""

from __future__ import annotations

import random

import pytest

from benchmarks.wer import cardinal, differences, edit_distance, normalize, number_words, wer, word_errors


def _reference_distance(a: list[str], b: list[str]) -> int:
    """The textbook dynamic programme, to check the vectorised one against."""
    rows = [list(range(len(b) + 1))]
    for i, word in enumerate(a, start=1):
        row = [i]
        for j, other in enumerate(b, start=1):
            row.append(min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (word != other)))
        rows.append(row)
    return rows[-1][-1]


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (20, "twenty"),
        (42, "forty two"),
        (100, "one hundred"),
        (101, "one hundred one"),
        (999, "nine hundred ninety nine"),
        (1000, "one thousand"),
        (2024, "two thousand twenty four"),
        (9999, "nine thousand nine hundred ninety nine"),
    ],
)
def test_cardinals_up_to_9999_are_spelled_without_and(number, words):
    assert " ".join(cardinal(number)) == words


def test_a_cardinal_outside_0_to_9999_is_refused():
    with pytest.raises(ValueError, match="outside"):
        cardinal(10_000)


@pytest.mark.parametrize(
    ("text", "suffix", "words"),
    [
        ("1984", None, "nineteen eighty four"),
        ("1900", None, "nineteen hundred"),
        ("1905", None, "nineteen oh five"),
        ("2005", None, "two thousand five"),
        ("1500", None, "fifteen hundred"),
        ("1,500", None, "one thousand five hundred"),
        ("3.5", None, "three point five"),
        ("0.25", None, "zero point two five"),
        ("10", "%", "ten percent"),
        ("3", "rd", "third"),
        ("21", "st", "twenty first"),
        ("40", "th", "fortieth"),
        ("12", "th", "twelfth"),
        ("5551234", None, "five five five one two three four"),
        ("007", None, "zero zero seven"),
    ],
)
def test_numbers_are_spelled_as_they_are_said(text, suffix, words):
    assert " ".join(number_words(text, suffix)) == words


def test_case_punctuation_and_hyphens_are_ignored():
    assert normalize("Hello, World! It's a well-known FACT; isn't it?") == [
        "hello",
        "world",
        "its",
        "a",
        "well",
        "known",
        "fact",
        "isnt",
        "it",
    ]


def test_digits_and_spelled_numbers_match():
    assert normalize("We need 10 more chairs.") == normalize("We need ten more chairs")
    assert wer("We sold twenty-four units in 2024.", "we sold 24 units in two thousand and twenty four") == 0.0
    assert (
        wer("It costs $3.50, about 10% more.", "It costs three point five zero dollars about ten percent more") == 0.0
    )
    assert wer("On the 3rd of May", "on the third of may") == 0.0


def test_and_is_dropped_only_between_number_words():
    assert normalize("one hundred and five cats and dogs") == ["one", "hundred", "five", "cats", "and", "dogs"]
    assert normalize("and ten and") == ["and", "ten", "and"]


def test_an_exact_transcript_has_no_errors():
    assert wer("The quick brown fox.", "the quick brown fox") == 0.0


def test_substitutions_deletions_and_insertions_each_cost_one():
    reference = "the quick brown fox jumps"
    assert word_errors(reference, "the quick red fox jumps").errors == 1
    assert word_errors(reference, "the quick fox jumps").errors == 1
    assert word_errors(reference, "the very quick brown fox jumps").errors == 1
    assert wer(reference, "quick brown fox jumps over") == pytest.approx(2 / 5)


def test_a_skipped_repeated_sentence_counts_every_missing_word():
    sentence = "please send the report by friday. "
    errors = word_errors(sentence * 2 + "thank you", sentence + "thank you")
    assert (errors.reference_words, errors.hypothesis_words, errors.errors) == (14, 8, 6)
    assert errors.rate == pytest.approx(6 / 14)


def test_empty_sides():
    assert wer("", "") == 0.0
    assert wer("", "something") == 1.0
    assert wer("two words", "") == 1.0
    assert edit_distance([], ["a", "b"]) == 2


def test_the_vectorised_distance_matches_the_textbook_one():
    rng = random.Random(8)
    for _ in range(200):
        a = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcd") for _ in range(rng.randint(0, 12))]
        assert edit_distance(a, b) == _reference_distance(a, b), (a, b)


def test_long_transcripts_are_compared_quickly():
    # about a 60-minute recording's worth of words on each side: must not be quadratic in Python
    rng = random.Random(60)
    words = [rng.choice(["alpha", "beta", "gamma", "delta", "echo"]) for _ in range(9000)]
    changed = list(words)
    del changed[100:110]
    assert edit_distance(words, changed) == 10


def test_differences_name_what_was_dropped_and_changed():
    found = differences("one two three four five six", "one two four five sax")
    assert found == ["missing 'three'", "'six' -> 'sax'"]
