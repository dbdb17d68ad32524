"""The model container's settings, from its environment (as SageMaker passes them) or its flags."""

from __future__ import annotations

import pytest
from batcher import BatchingConfig
from decoding import DecodingConfig
from server_config import config_from_args


@pytest.mark.parametrize(
    ("environment", "expected"),
    [(None, False), ("true", True), ("1", True), ("ON", True), ("false", False), ("0", False), ("", False)],
)
def test_the_context_pass_is_chosen_by_whisper_context_pass(monkeypatch, environment, expected):
    if environment is None:
        monkeypatch.delenv("WHISPER_CONTEXT_PASS", raising=False)
    else:
        monkeypatch.setenv("WHISPER_CONTEXT_PASS", environment)
    assert config_from_args(["--model-dir", "/models"]).context_pass is expected


def test_a_flag_overrides_the_environment(monkeypatch):
    monkeypatch.setenv("WHISPER_CONTEXT_PASS", "true")
    assert config_from_args(["--model-dir", "/models", "--no-context-pass"]).context_pass is False
    monkeypatch.setenv("WHISPER_CONTEXT_PASS", "false")
    assert config_from_args(["--model-dir", "/models", "--context-pass"]).context_pass is True


def test_the_batcher_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("WHISPER_BATCH_SIZE", "4")
    monkeypatch.setenv("WHISPER_MAX_WAIT_MS", "25")
    config = config_from_args(["--model-dir", "/models"])
    assert (config.batch_size, config.max_wait_ms) == (4, 25.0)


@pytest.mark.parametrize("context_pass", [False, True])
def test_the_engine_is_built_with_the_configured_context_pass(monkeypatch, context_pass):
    import whisper_server

    monkeypatch.setattr(whisper_server, "WhisperModel", lambda *args, **kwargs: object())
    context_flag = "--context-pass" if context_pass else "--no-context-pass"
    config = config_from_args(["--model-dir", "/models", context_flag, "--diarization", "off"])
    transcriber = whisper_server.WhisperTranscriber(config)
    try:
        assert transcriber.engine.decoder.config.context_pass is context_pass
        assert transcriber.engine.batcher.max_wait == config.max_wait_ms / 1000
    finally:
        transcriber.engine.close(timeout=5)


def test_the_engine_settings_are_all_handed_to_the_engine(monkeypatch):
    monkeypatch.setenv("WHISPER_BATCH_SIZE", "4")
    monkeypatch.setenv("WHISPER_MAX_WAIT_MS", "25")
    monkeypatch.setenv("WHISPER_MAX_GATHER_MS", "300")
    monkeypatch.setenv("WHISPER_BEAM_SIZE", "3")
    monkeypatch.setenv("WHISPER_CONTEXT_PASS", "true")
    engine = config_from_args(["--model-dir", "/models"]).engine_config()
    assert engine.batching == BatchingConfig(batch_size=4, max_wait_ms=25.0, max_gather_ms=300.0)
    assert engine.decoding == DecodingConfig(beam_size=3, context_pass=True)


@pytest.mark.parametrize(("environment", "expected"), [(None, "auto"), ("on", "on"), ("OFF", "off")])
def test_diarization_is_chosen_by_whisper_diarization(monkeypatch, environment, expected):
    if environment is None:
        monkeypatch.delenv("WHISPER_DIARIZATION", raising=False)
    else:
        monkeypatch.setenv("WHISPER_DIARIZATION", environment)
    assert config_from_args(["--model-dir", "/models"]).diarization == expected


def test_a_diarization_switch_that_is_no_choice_is_refused(monkeypatch):
    monkeypatch.setenv("WHISPER_DIARIZATION", "maybe")
    with pytest.raises(SystemExit):
        config_from_args(["--model-dir", "/models"])
