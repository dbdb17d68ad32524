"""pricing.Pricing: one credit per started block of audio, a per-request minimum, per-model prices, reservations."""

from __future__ import annotations

import pytest
from infery.domain.pricing import ModelPrice, Pricing
from pydantic import ValidationError


@pytest.mark.parametrize(
    ("audio_seconds", "expected"),
    [
        (12.5, 3),  # the public doc's example: 12.5 s at 5 s per credit
        (10.0, 2),
        (10.0000001, 2),  # float noise from a decoder is not a started third block
        (10.01, 3),
        (5.0, 1),
        (5.001, 2),
        (0.1, 1),
        (0.0, 1),  # nothing heard still costs the minimum
        (3600.0, 720),
    ],
)
def test_five_seconds_per_credit(audio_seconds, expected):
    assert Pricing(seconds_per_credit=5, min_credits_per_request=1).credits_for(audio_seconds) == expected


@pytest.mark.parametrize(
    ("seconds_per_credit", "audio_seconds", "expected"),
    [
        (1, 0.5, 1),
        (1, 59.0, 59),
        (2.5, 7.5, 3),
        (2.5, 7.6, 4),
        (30, 61.0, 3),
        (60, 60.0, 1),
        (60, 61.0, 2),
        (0.5, 1.2, 3),
    ],
)
def test_other_block_lengths(seconds_per_credit, audio_seconds, expected):
    pricing = Pricing(seconds_per_credit=seconds_per_credit, min_credits_per_request=1)
    assert pricing.credits_for(audio_seconds) == expected


@pytest.mark.parametrize(
    ("minimum", "audio_seconds", "expected"),
    [
        (0, 0.0, 0),  # a deployment may make silence free
        (0, 0.1, 1),
        (1, 0.0, 1),
        (2, 4.0, 2),
        (3, 12.5, 3),
        (3, 15.01, 4),  # the minimum is a floor, not an addition
        (10, 0.0, 10),
    ],
)
def test_the_minimum_per_request_is_a_floor(minimum, audio_seconds, expected):
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=minimum)
    assert pricing.credits_for(audio_seconds) == expected


def test_credits_are_whole_numbers():
    assert isinstance(Pricing(seconds_per_credit=5, min_credits_per_request=1).credits_for(12.5), int)


# per-model prices

LARGE = "whisper-large-v3"


def _priced(**model_prices: ModelPrice) -> Pricing:
    return Pricing(seconds_per_credit=5, min_credits_per_request=1, model_prices=model_prices)


@pytest.mark.parametrize(
    ("model", "audio_seconds", "expected"),
    [
        (LARGE, 10.0, 4),  # 2.5 s per credit
        (LARGE, 10.1, 5),
        (LARGE, 1.0, 2),  # its own minimum
        ("whisper-tiny.en", 10.0, 2),  # an unpriced model pays the default 5 s per credit
        ("whisper-tiny.en", 1.0, 1),  # and the default minimum
        (None, 10.0, 2),
        ("", 10.0, 2),
        ("Whisper-Large-V3", 10.0, 2),  # prices are by exact model name
    ],
)
def test_given_a_model_with_its_own_price_then_it_is_billed_at_that_price_and_others_at_the_default(
    model, audio_seconds, expected
):
    pricing = _priced(**{LARGE: ModelPrice(seconds_per_credit=2.5, min_credits_per_request=2)})
    assert pricing.credits_for(audio_seconds, model) == expected


def test_given_a_model_price_without_a_minimum_then_the_default_minimum_applies():
    pricing = Pricing(
        seconds_per_credit=5, min_credits_per_request=3, model_prices={LARGE: ModelPrice(seconds_per_credit=1)}
    )
    assert pricing.credits_for(0.5, LARGE) == 3  # 1 started second, but the default minimum is 3
    assert pricing.credits_for(7.2, LARGE) == 8  # 1 s per credit, not the default 5


def test_given_a_model_price_with_a_minimum_of_zero_then_zero_is_its_minimum_not_the_default():
    pricing = Pricing(
        seconds_per_credit=5,
        min_credits_per_request=3,
        model_prices={LARGE: ModelPrice(seconds_per_credit=5, min_credits_per_request=0)},
    )
    assert pricing.credits_for(0.0, LARGE) == 0
    assert pricing.credits_for(0.0, "other") == 3


def test_given_prices_as_the_deployment_writes_them_in_json_then_they_are_read():
    pricing = Pricing.model_validate(
        {
            "seconds_per_credit": 5,
            "min_credits_per_request": 1,
            "model_prices": {LARGE: {"seconds_per_credit": 2.5, "min_credits_per_request": 2}},
        }
    )
    assert pricing.model_prices[LARGE] == ModelPrice(seconds_per_credit=2.5, min_credits_per_request=2)
    assert pricing.credits_for(12.5, LARGE) == 5


@pytest.mark.parametrize(
    "price",
    [
        {"seconds_per_credit": 0},
        {"seconds_per_credit": -2.5},
        {"seconds_per_credit": 2.5, "min_credits_per_request": -1},
        {"min_credits_per_request": 1},
        {"seconds_per_credit": "fast"},
    ],
)
def test_given_a_nonsensical_model_price_then_it_is_refused(price):
    with pytest.raises(ValidationError):
        Pricing.model_validate({"seconds_per_credit": 5, "min_credits_per_request": 1, "model_prices": {LARGE: price}})


@pytest.mark.parametrize(
    "pricing",
    [
        {"seconds_per_credit": 0, "min_credits_per_request": 1},
        {"seconds_per_credit": 5, "min_credits_per_request": -1},
        {"seconds_per_credit": 5, "min_credits_per_request": 1, "min_bits_per_second_for_unknown_duration": 0},
    ],
)
def test_given_a_nonsensical_default_price_then_it_is_refused(pricing):
    with pytest.raises(ValidationError):
        Pricing.model_validate(pricing)


# reservations: an upper bound of the cost, taken before inference

PLENTY_OF_BYTES = 100_000_000  # at 16 kbit/s, 50 000 s: never the binding bound below


@pytest.mark.parametrize(
    ("declared_seconds", "expected"),
    [
        # the margin is x1.02 + 0.5 s; 5 s per credit
        (10.0, 3),  # 10.7 s: without the margin it would be 2
        (9.5, 3),  # 10.19 s
        (9.3, 2),  # 9.986 s
        (4.4, 1),  # 4.988 s
        (4.5, 2),  # 5.09 s
        (100.0, 21),  # 102.5 s
        (0.1, 1),
    ],
)
def test_given_a_declared_duration_then_the_reservation_covers_it_with_a_margin(declared_seconds, expected):
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1)
    assert pricing.reservation_for(PLENTY_OF_BYTES, declared_seconds) == expected


def test_given_any_declared_duration_then_the_reservation_covers_audio_2_percent_and_half_a_second_longer():
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1)
    for tenths in range(0, 6000, 7):
        declared = tenths / 10
        reserved = pricing.reservation_for(PLENTY_OF_BYTES, declared)
        assert reserved >= pricing.credits_for(declared), declared
        assert reserved >= pricing.credits_for(declared * 1.02 + 0.49), declared
        assert reserved <= pricing.credits_for(declared * 1.02 + 0.5) + 1, declared  # and no more than that


@pytest.mark.parametrize(
    ("audio_bytes", "declared_seconds", "expected"),
    [
        # 38 KB of FLAC holding 3 minutes of silence: a bound from the size (19 s) would reserve 4 and leave 21 unpaid
        (38_000, 180.0, 37),
        (100_000, 3600.0, 735),  # a header claiming an hour is reserved for an hour (and refunded if it lied)
        (100_000, 40.0, 9),
        (1_000, 3600.0, 735),
    ],
)
def test_given_a_declared_duration_the_reservation_pays_for_all_of_it_whatever_the_files_size(
    audio_bytes, declared_seconds, expected
):
    """Silence compresses far below any bitrate, so the size bounds nothing once the header declares a duration;
    the model is told the reservation's seconds and refuses audio longer than them."""
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1)
    assert pricing.reservation_for(audio_bytes, declared_seconds) == expected
    assert pricing.seconds_to_reserve(audio_bytes, declared_seconds) >= declared_seconds


@pytest.mark.parametrize(
    ("audio_bytes", "expected"),
    [
        (160_000, 16),  # 1 280 000 bits at 16 kbit/s: 80 s
        (160_001, 17),  # a byte more is a started block more
        (10_000, 1),  # 5 s
        (4_194_304, 420),  # the largest synchronous upload: 2097.152 s
    ],
)
def test_given_no_declared_duration_then_the_reservation_is_the_size_bound(audio_bytes, expected):
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1)
    assert pricing.reservation_for(audio_bytes, None) == expected


def test_given_a_higher_minimum_bitrate_then_the_size_bound_is_tighter():
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=1, min_bits_per_second_for_unknown_duration=32_000)
    assert pricing.reservation_for(160_000, None) == 8  # 40 s


@pytest.mark.parametrize(
    ("audio_bytes", "declared_seconds"),
    [
        (0, None),
        (0, 0.0),
        (1, None),
        (PLENTY_OF_BYTES, 0.0),
    ],
)
def test_given_nothing_to_bill_and_no_minimum_then_one_credit_is_still_reserved(audio_bytes, declared_seconds):
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=0)
    assert pricing.credits_for(0.0) == 0  # the price itself lets silence be free
    assert pricing.reservation_for(audio_bytes, declared_seconds) == 1


def test_given_a_minimum_above_the_audios_cost_then_the_reservation_is_the_minimum():
    pricing = Pricing(seconds_per_credit=5, min_credits_per_request=4)
    assert pricing.reservation_for(PLENTY_OF_BYTES, 1.0) == 4
    assert pricing.reservation_for(1_000, None) == 4


def test_given_a_model_with_its_own_price_then_its_reservation_uses_that_price():
    pricing = _priced(**{LARGE: ModelPrice(seconds_per_credit=2.5, min_credits_per_request=3)})
    assert pricing.reservation_for(PLENTY_OF_BYTES, 10.0, LARGE) == 5  # 10.7 s / 2.5
    assert pricing.reservation_for(PLENTY_OF_BYTES, 10.0, "other") == 3  # 10.7 s / 5
    assert pricing.reservation_for(PLENTY_OF_BYTES, 0.1, LARGE) == 3  # its minimum
    assert pricing.reservation_for(160_000, None, LARGE) == 32  # 80 s / 2.5
