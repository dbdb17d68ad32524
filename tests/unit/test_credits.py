"""credits.Pricing: one credit per started block of audio, with a per-request minimum."""

from __future__ import annotations

import pytest
from infery.credits import Pricing


@pytest.mark.parametrize(("audio_seconds", "expected"), [
    (12.5, 3),  # the public doc's example: 12.5 s at 5 s per credit
    (10.0, 2),
    (10.0000001, 2),  # float noise from a decoder is not a started third block
    (10.01, 3),
    (5.0, 1),
    (5.001, 2),
    (0.1, 1),
    (0.0, 1),  # nothing heard still costs the minimum
    (3600.0, 720),
])
def test_five_seconds_per_credit(audio_seconds, expected):
    assert Pricing(seconds_per_credit=5, min_credits_per_request=1).credits_for(audio_seconds) == expected


@pytest.mark.parametrize(("seconds_per_credit", "audio_seconds", "expected"), [
    (1, 0.5, 1),
    (1, 59.0, 59),
    (2.5, 7.5, 3),
    (2.5, 7.6, 4),
    (30, 61.0, 3),
    (60, 60.0, 1),
    (60, 61.0, 2),
    (0.5, 1.2, 3),
])
def test_other_block_lengths(seconds_per_credit, audio_seconds, expected):
    pricing = Pricing(seconds_per_credit=seconds_per_credit, min_credits_per_request=1)
    assert pricing.credits_for(audio_seconds) == expected


@pytest.mark.parametrize(("minimum", "audio_seconds", "expected"), [
    (0, 0.0, 0),  # a deployment may make silence free
    (0, 0.1, 1),
    (1, 0.0, 1),
    (2, 4.0, 2),
    (3, 12.5, 3),
    (3, 15.01, 4),  # the minimum is a floor, not an addition
    (10, 0.0, 10),
])
def test_the_minimum_per_request_is_a_floor(minimum, audio_seconds, expected):
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=minimum)
    assert pricing.credits_for(audio_seconds) == expected


def test_credits_are_whole_numbers():
    assert isinstance(Pricing(seconds_per_credit=5, min_credits_per_request=1).credits_for(12.5), int)
