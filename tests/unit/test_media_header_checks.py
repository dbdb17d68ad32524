"""What a header says before any decoding: a WAV no decoder reads is refused (check_decodable), and a WebM's
audio track declares its sample rate (probe_sample_rate), as every other container's header does."""

from __future__ import annotations

import io
import struct

import av
import pytest
from infery.domain.audio import AudioFormat, sniff_audio_format
from infery.domain.duration import check_decodable, probe_duration, probe_sample_rate
from infery.domain.errors import InvalidRequest

from tests.support.media_headers import WAV_ALAW, WAV_FLOAT, WAV_MP3, wav_with_header, webm_declaring, zero_bit_wav


def _pyav_has_a_codec_for(data: bytes) -> bool:
    """What the model server meets: PyAV opens the stream, with a codec or without one (None)."""
    with av.open(io.BytesIO(data)) as container:
        return container.streams.audio[0].codec_context is not None


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(zero_bit_wav(), "0 bits per sample", id="pcm-0-bits"),
        pytest.param(wav_with_header(format_tag=WAV_FLOAT, bits_per_sample=0), "0 bits per sample", id="float-0-bits"),
        pytest.param(wav_with_header(format_tag=WAV_FLOAT, bits_per_sample=16), "16 bits per sample", id="float-16"),
        pytest.param(wav_with_header(bits_per_sample=48), "48 bits per sample", id="pcm-48-bits"),
        pytest.param(wav_with_header(format_tag=0), "format tag is 0", id="unknown-format-tag"),
    ],
)
def test_a_wav_header_no_decoder_reads_is_refused_as_undecodable_audio(data, reason):
    assert not _pyav_has_a_codec_for(data)  # the model server could not decode it either
    assert sniff_audio_format(data) is AudioFormat.WAV
    with pytest.raises(InvalidRequest) as refused:
        check_decodable(data, AudioFormat.WAV)
    assert refused.value.status_code == 400
    assert refused.value.code == "undecodable_audio" and refused.value.param == "file"
    assert reason in refused.value.message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(wav_with_header(channels=0), "0 channels", id="no-channels"),
        pytest.param(wav_with_header(sample_rate=0), "0 Hz", id="0-hz"),
    ],
)
def test_a_wav_without_channels_or_a_sample_rate_is_refused(data, reason):
    with pytest.raises(av.FFmpegError):  # the model server's decoder refuses it too, once credits are held
        with av.open(io.BytesIO(data)) as container:
            next(container.decode(audio=0))
    with pytest.raises(InvalidRequest) as refused:
        check_decodable(data, AudioFormat.WAV)
    assert refused.value.code == "undecodable_audio" and reason in refused.value.message


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(wav_with_header(), id="pcm-16"),
        pytest.param(wav_with_header(bits_per_sample=8), id="pcm-8"),
        pytest.param(wav_with_header(bits_per_sample=12), id="pcm-12-read-as-16"),
        pytest.param(wav_with_header(bits_per_sample=24), id="pcm-24"),
        pytest.param(wav_with_header(format_tag=WAV_FLOAT, bits_per_sample=32), id="float-32"),
        # these tags name their own codec, and writers often leave the bits per sample at 0
        pytest.param(wav_with_header(format_tag=WAV_ALAW, bits_per_sample=0), id="a-law-0-bits"),
        pytest.param(wav_with_header(format_tag=WAV_MP3, bits_per_sample=0), id="mp3-in-wav-0-bits"),
    ],
)
def test_a_wav_header_a_decoder_reads_passes(data):
    assert _pyav_has_a_codec_for(data)
    check_decodable(data, AudioFormat.WAV)


def test_real_speech_in_every_format_passes(encoded_audio):
    for audio_format in AudioFormat:
        check_decodable(encoded_audio[audio_format.value].read_bytes(), audio_format)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"RIFF" + struct.pack("<I", 4000) + b"WAVE" + b"garbage, no chunks. " * 50, id="no-fmt-chunk"),
        pytest.param(zero_bit_wav()[:30], id="cut-inside-the-fmt-chunk"),
    ],
)
def test_a_wav_header_that_cannot_be_read_is_left_to_the_model(data):
    check_decodable(data, AudioFormat.WAV)  # it may not be refused here: the model says what is wrong


@pytest.mark.parametrize("rate", [1.0, 0.5, 4000.0, 7999.0])
def test_a_webm_audio_track_declaring_a_low_sample_rate_is_read(rate):
    data = webm_declaring(rate)
    assert sniff_audio_format(data) is AudioFormat.WEBM
    assert probe_duration(data, AudioFormat.WEBM) == pytest.approx(2.0)
    assert probe_sample_rate(data, AudioFormat.WEBM) == max(1, int(rate))


def test_the_rate_a_webm_declares_is_the_rate_pyav_opens_it_at():
    with av.open(io.BytesIO(webm_declaring(1.0))) as container:
        assert container.streams.audio[0].rate == 1


def test_a_real_webm_declares_its_encoders_rate(encoded_audio):
    data = encoded_audio["webm"].read_bytes()
    with av.open(io.BytesIO(data)) as container:
        expected = container.streams.audio[0].rate
    assert probe_sample_rate(data, AudioFormat.WEBM) == expected >= 8000


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(webm_declaring(float("nan")), id="nan"),
        pytest.param(webm_declaring(-1.0), id="negative"),
        pytest.param(webm_declaring(1.0)[:60], id="cut-before-the-tracks"),
    ],
)
def test_a_webm_that_declares_no_usable_rate_says_none(data):
    assert probe_sample_rate(data, AudioFormat.WEBM) is None
