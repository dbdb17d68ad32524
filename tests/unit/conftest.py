"""The unit tests need no system package: their audio is a tone PyAV encodes (pip packages only), not espeak-ng."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.speech import streamed_tone_wav, write_all_formats


@pytest.fixture(scope="session")
def encoded_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """11.7 s of a tone in every supported audio format (keyed wav, mp3, mp4, ...), from real encoders; the WAV has
    the streamed header espeak-ng writes (its data size a placeholder far past the bytes that follow)."""
    return write_all_formats(tmp_path_factory.mktemp("audio"), streamed_tone_wav())
