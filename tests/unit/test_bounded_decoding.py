"""The model server's decoding is bounded: it stops when nobody waits, at the ceiling a request may decode, and a
few long decodes run at once; the samples it returns are those PyAV decodes."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from audio_input import SAMPLE_RATE, AudioLimits, AudioRefused, DecodingCancelled, decode
from memory import DecodeGate

from tests.support.media_headers import zero_bit_wav
from tests.support.speech import mono_wav, one_hertz_wav, silent_wav


def hum_wav(seconds: float, sample_rate: int = 16_000) -> bytes:
    ramp = (np.arange(int(sample_rate * seconds)) % 200 - 100).astype(np.int16) * 50
    return mono_wav(ramp.tobytes(), sample_rate)


def test_decoding_stops_at_the_first_check_once_the_caller_is_gone() -> None:
    checks: list[int] = []

    def cancelled() -> bool:
        checks.append(1)
        return True

    with pytest.raises(DecodingCancelled):
        decode(hum_wav(200), AudioLimits(), cancelled)
    assert len(checks) == 1  # after the first 30 s block: the other 170 s were never decoded


def test_a_caller_still_waiting_is_asked_once_a_block_and_gets_every_sample() -> None:
    checks: list[int] = []
    audio = decode(hum_wav(95), AudioLimits(), lambda: bool(checks.append(1)))
    assert len(checks) == 3  # 95 s: three full 30 s blocks
    assert len(audio) == 95 * SAMPLE_RATE
    expected = (np.arange(95 * SAMPLE_RATE) % 200 - 100).astype(np.int16) * 50 / 32768
    assert np.array_equal(audio, expected.astype(np.float32))


def test_audio_past_a_synchronous_ceiling_is_refused_as_too_long_for_a_synchronous_call() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(silent_wav(8000, 61), AudioLimits().for_request(paid_seconds=60, sync_seconds=60))
    assert refused.value.code == "audio_too_long_for_sync"
    assert "/v1/audio/transcriptions/jobs" in refused.value.message


def test_audio_at_the_synchronous_ceiling_is_decoded() -> None:
    audio = decode(silent_wav(8000, 60), AudioLimits().for_request(paid_seconds=60, sync_seconds=60))
    assert len(audio) == 60 * SAMPLE_RATE


def test_audio_past_what_was_paid_under_the_ceiling_is_longer_than_declared() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(silent_wav(8000, 31), AudioLimits().for_request(paid_seconds=30, sync_seconds=60))
    assert refused.value.code == "audio_longer_than_declared"


def test_the_samples_a_request_may_decode_are_its_smallest_bound() -> None:
    assert AudioLimits(max_seconds=100).max_samples == 100 * SAMPLE_RATE
    assert AudioLimits(max_seconds=100).for_request(50, 80).max_samples == 50 * SAMPLE_RATE
    assert AudioLimits(max_seconds=100).for_request(None, 80).max_samples == 80 * SAMPLE_RATE


def test_a_wav_of_0_bits_per_sample_is_undecodable_not_a_model_failure() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(zero_bit_wav(), AudioLimits())
    assert refused.value.code == "undecodable_audio"


def test_short_decodes_pass_the_gate_while_long_ones_wait_for_a_slot() -> None:
    gate = DecodeGate(slots=1, long_seconds=600)
    inside = threading.Event()
    leave = threading.Event()
    second_in = threading.Event()

    def first_long() -> None:
        with gate.admit(3600, lambda: False):
            inside.set()
            leave.wait(10)

    def second_long() -> None:
        with gate.admit(3600, lambda: False, poll_seconds=0.01):
            second_in.set()

    threading.Thread(target=first_long).start()
    assert inside.wait(10)
    waiting = threading.Thread(target=second_long)
    waiting.start()
    with gate.admit(600, lambda: True):  # at the threshold: not a long decode, never waits nor asks
        pass
    assert not second_in.wait(0.2)
    leave.set()
    waiting.join(10)
    assert second_in.is_set()


def test_a_long_decode_waiting_for_a_slot_stops_when_its_caller_is_gone() -> None:
    gate = DecodeGate(slots=1, long_seconds=60)
    with gate.admit(61, lambda: False), pytest.raises(DecodingCancelled):
        with gate.admit(61, lambda: True, poll_seconds=0.01):
            pytest.fail("admitted past a full gate")
    with gate.admit(61, lambda: False):  # the slot was given back
        pass


def test_a_wav_that_says_1_hz_is_refused_before_decoding() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(one_hertz_wav(4000), AudioLimits())
    assert refused.value.code == "sample_rate_too_low"
    assert "8000 Hz" in refused.value.message


def test_audio_over_the_maximum_duration_is_refused() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(silent_wav(8000, 12), AudioLimits(max_seconds=10))
    assert refused.value.code == "audio_too_long"


def test_audio_at_the_limits_is_decoded_to_16_khz() -> None:
    samples = decode(silent_wav(8000, 10), AudioLimits(max_seconds=10))
    assert len(samples) == pytest.approx(10 * SAMPLE_RATE, abs=SAMPLE_RATE * 0.05)
    assert samples.dtype == np.float32


def test_bytes_that_are_not_audio_are_refused_without_pyavs_own_words() -> None:
    with pytest.raises(AudioRefused) as refused:
        decode(b"this is not audio at all " * 50, AudioLimits())
    assert refused.value.code == "undecodable_audio"
    assert "Errno" not in refused.value.message and "[" not in refused.value.message
