from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.speech import write_all_formats


@pytest.fixture(scope="session")
def speech_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test script spoken by espeak-ng, in every supported audio format (keyed wav, mp3, mp4, ...)."""
    return write_all_formats(tmp_path_factory.mktemp("speech"))
