"""The test audio: the unit tests' tone has the WAV header espeak-ng writes, so their streamed-WAV cases stay real."""

from __future__ import annotations

from tests.support.speech import ESPEAK_NG_STREAMED_HEADER, streamed_tone_wav, synthesize_wav


def test_espeak_ng_writes_the_header_the_unit_tests_tone_has():
    assert synthesize_wav()[:44] == ESPEAK_NG_STREAMED_HEADER == streamed_tone_wav()[:44]
