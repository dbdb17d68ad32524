"""Word error rate after one normalisation for every run: lower case, no punctuation, numbers as words.

Greedy decoding tends to write "10" where beam search writes "ten", and a script may say either; both
sides go through :func:`normalize`, so only the words themselves are compared. The distance is Levenshtein
over words (substitutions, deletions and insertions all cost 1), computed a row at a time with numpy so a
60-minute transcript (about 9,000 words a side) takes a second, not minutes.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np

ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
NUMBER_WORDS = frozenset(ONES + TENS[2:] + ("hundred", "thousand"))
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}

# $3.50, 1,500, 2.5, 3rd, 10%: a number with what may stick to it
_NUMBER = re.compile(r"(?P<dollar>\$)?(?P<number>\d+(?:,\d{3})*(?:\.\d+)?)(?P<suffix>st|nd|rd|th|%)?(?![\w])")
_NOT_A_WORD = re.compile(r"[^a-z0-9 ]+")


def _under_hundred(number: int) -> list[str]:
    if number < 20:
        return [ONES[number]]
    tens, ones = divmod(number, 10)
    return [TENS[tens]] + ([ONES[ones]] if ones else [])


def _under_thousand(number: int) -> list[str]:
    hundreds, rest = divmod(number, 100)
    words = [ONES[hundreds], "hundred"] if hundreds else []
    return words + (_under_hundred(rest) if rest or not hundreds else [])


def cardinal(number: int) -> list[str]:
    """0..9999 as words, without "and": 2024 -> two thousand twenty four."""
    if not 0 <= number <= 9999:
        raise ValueError(f"{number} is outside 0..9999")
    thousands, rest = divmod(number, 1000)
    words = [ONES[thousands], "thousand"] if thousands else []
    return words + (_under_thousand(rest) if rest or not thousands else [])


def year(number: int) -> list[str]:
    """A year as it is said: 1984 -> nineteen eighty four, 1900 -> nineteen hundred, 1905 -> nineteen oh five."""
    century, rest = divmod(number, 100)
    if rest == 0:
        return _under_hundred(century) + ["hundred"]
    return _under_hundred(century) + (["oh", ONES[rest]] if rest < 10 else _under_hundred(rest))


def ordinal(number: int) -> list[str]:
    words = cardinal(number)
    last = words[-1]
    if last in _IRREGULAR_ORDINALS:
        words[-1] = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def number_words(text: str, suffix: str | None = None) -> list[str]:
    """Digits as words: 0..9999 as a cardinal (1100..1999 as a year, but 1,500 with its comma is a cardinal),
    longer runs digit by digit, decimals with "point"; ``suffix`` "st"/"nd"/"rd"/"th" makes an ordinal, "%"
    adds "percent"."""
    grouped = "," in text  # 1,500 is a quantity, 1500 may be a year
    whole, _, fraction = text.replace(",", "").partition(".")
    value = int(whole)
    if suffix in ("st", "nd", "rd", "th") and value <= 9999 and not fraction:
        return ordinal(value)
    if len(whole) > 4 or (len(whole) > 1 and whole.startswith("0")):
        words = [ONES[int(digit)] for digit in whole]  # a code, a phone number: said digit by digit
    elif 1100 <= value <= 1999 and not fraction and not grouped:
        words = year(value)
    else:
        words = cardinal(value)
    if fraction:
        words += ["point"] + [ONES[int(digit)] for digit in fraction]
    if suffix == "%":
        words.append("percent")
    return words


def _spell_number(match: re.Match[str]) -> str:
    words = number_words(match["number"], match["suffix"])
    if match["dollar"]:
        words.append("dollars")
    return " " + " ".join(words) + " "


def normalize(text: str) -> list[str]:
    """The words of ``text``, lower case, without punctuation, numbers spelled out; "and" between two number
    words is dropped (two thousand and twenty four = 2024), hyphens split words (twenty-four = twenty four)."""
    text = text.lower().replace("%", "% ").replace("-", " ")
    text = _NUMBER.sub(_spell_number, text)
    text = text.replace("'", "").replace("\u2019", "")  # don't = dont, on both sides
    words = _NOT_A_WORD.sub(" ", text).split()
    return [
        word
        for position, word in enumerate(words)
        if not (
            word == "and"
            and 0 < position < len(words) - 1
            and words[position - 1] in NUMBER_WORDS
            and words[position + 1] in NUMBER_WORDS
        )
    ]


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance between two word lists."""
    if not reference or not hypothesis:
        return len(reference) + len(hypothesis)
    vocabulary: dict[str, int] = {}
    ref = np.array([vocabulary.setdefault(word, len(vocabulary)) for word in reference], dtype=np.int64)
    hyp = np.array([vocabulary.setdefault(word, len(vocabulary)) for word in hypothesis], dtype=np.int64)
    columns = np.arange(len(hyp) + 1, dtype=np.int64)
    previous = columns.copy()  # distances from the empty reference prefix
    for row, word in enumerate(ref, start=1):
        current = np.empty_like(previous)
        current[0] = row
        # a deletion (from above) or a substitution/match (diagonal), then insertions along the row, which
        # is a running minimum: current[j] = min over k <= j of (best[k] - k) + j
        best = np.minimum(previous[1:] + 1, previous[:-1] + (hyp != word))
        current[1:] = best
        current = np.minimum.accumulate(current - columns) + columns
        previous = current
    return int(previous[-1])


@dataclass(frozen=True)
class WordErrors:
    reference_words: int
    hypothesis_words: int
    errors: int

    @property
    def rate(self) -> float:
        if self.reference_words == 0:
            return 0.0 if self.hypothesis_words == 0 else 1.0
        return self.errors / self.reference_words


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    ref, hyp = normalize(reference), normalize(hypothesis)
    return WordErrors(len(ref), len(hyp), edit_distance(ref, hyp))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``: edits over the reference's word count."""
    return word_errors(reference, hypothesis).rate


def differences(reference: str, hypothesis: str, limit: int = 5) -> list[str]:
    """The first ``limit`` places where the normalised words differ, for a human reading a bad run."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    matcher = difflib.SequenceMatcher(a=ref, b=hyp, autojunk=False)
    found = []
    for tag, ref_start, ref_end, hyp_start, hyp_end in matcher.get_opcodes():
        if tag == "equal":
            continue
        said, heard = " ".join(ref[ref_start:ref_end]), " ".join(hyp[hyp_start:hyp_end])
        found.append(
            {"replace": f"{said!r} -> {heard!r}", "delete": f"missing {said!r}", "insert": f"extra {heard!r}"}[tag]
        )
        if len(found) == limit:
            break
    return found
