"""duration.probe_duration: how long audio plays, read from its container; None when it does not say."""

from __future__ import annotations

import io
import random
import struct
from fractions import Fraction
from pathlib import Path

import av
import pytest
from infery.domain.audio import AudioFormat
from infery.domain.duration import probe_duration

from tests.support.builders import ebml_header
from tests.support.speech import ESPEAK_NG_STREAMED_HEADER

# A container's duration differs from the PCM's by encoder delay and padding (MP3 frames, AAC priming, Opus pre-skip):
# a few tens of milliseconds, far below this.
TOLERANCE_SECONDS = 0.15


def decoded_seconds(wav: bytes) -> float:
    """The true length of a WAV: its samples, counted by decoding it (PyAV, not the code under test)."""
    with av.open(io.BytesIO(wav)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.rate


@pytest.fixture(scope="module")
def true_seconds(encoded_audio: dict[str, Path]) -> float:
    seconds = decoded_seconds(encoded_audio["wav"].read_bytes())
    assert 5 < seconds < 30  # the test script spoken: a plausible length, so the checks below mean something
    return seconds


# every format, from a real encoder


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_given_real_speech_in_each_format_then_the_probed_duration_is_the_wavs_true_length(
    encoded_audio, true_seconds, audio_format
):
    audio = encoded_audio[audio_format.value].read_bytes()
    seconds = probe_duration(audio, audio_format)
    assert isinstance(seconds, float)
    assert seconds == pytest.approx(true_seconds, abs=TOLERANCE_SECONDS)


# streamed WAV: the data size in the header is a placeholder, the bytes present are the truth


def _data_size_field(wav: bytes) -> int:
    position = wav.index(b"data")
    return struct.unpack("<I", wav[position + 4 : position + 8])[0]


def _byte_rate(wav: bytes) -> int:
    position = wav.index(b"fmt ")
    return struct.unpack("<I", wav[position + 16 : position + 20])[0]


def test_given_a_streamed_wav_as_espeak_ng_writes_it_then_the_duration_is_what_its_bytes_hold_not_its_header(
    encoded_audio, true_seconds
):
    wav = encoded_audio["wav"].read_bytes()
    # Given a WAV as espeak-ng writes it to stdout: its header claims far more data than follows
    assert _data_size_field(wav) > 100 * len(wav)
    assert _data_size_field(wav) / _byte_rate(wav) > 3600  # an hour and more, taken at its word
    # Then the length is the samples present
    assert probe_duration(wav, AudioFormat.WAV) == pytest.approx(true_seconds, abs=0.01)


def test_given_a_wav_whose_riff_and_data_sizes_are_0xffffffff_then_the_duration_is_what_its_bytes_hold(
    encoded_audio, true_seconds
):
    wav = encoded_audio["wav"].read_bytes()
    data = wav.index(b"data")
    streamed = b"RIFF" + b"\xff\xff\xff\xff" + wav[8 : data + 4] + b"\xff\xff\xff\xff" + wav[data + 8 :]
    assert len(streamed) == len(wav) and _data_size_field(streamed) == 0xFFFFFFFF
    assert probe_duration(streamed, AudioFormat.WAV) == pytest.approx(true_seconds, abs=0.01)


def test_given_a_streamed_wav_cut_in_half_then_the_duration_is_the_half_present(encoded_audio, true_seconds):
    wav = encoded_audio["wav"].read_bytes()
    half = wav[: len(wav) // 2]
    assert probe_duration(half, AudioFormat.WAV) == pytest.approx(len(wav) // 2 / _byte_rate(wav), abs=0.01)
    assert probe_duration(half, AudioFormat.WAV) < true_seconds / 2 + 0.01


def test_given_a_wav_with_a_true_data_size_and_a_chunk_after_it_then_the_declared_size_counts(true_seconds):
    # Given a WAV written to a seekable file (a real data size), followed by a LIST chunk of metadata
    pcm = bytes(32_000)  # one second of 16 kHz 16-bit mono silence
    fmt = struct.pack("<HHIIHH", 1, 1, 16_000, 32_000, 2, 16)
    wav = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(pcm)) + pcm
    trailer = b"LIST" + struct.pack("<I", 64_000) + bytes(64_000)  # two seconds' worth of bytes, not audio
    wav = b"RIFF" + struct.pack("<I", len(wav) + len(trailer)) + wav + trailer
    # Then the trailing bytes are not counted as audio
    assert probe_duration(wav, AudioFormat.WAV) == pytest.approx(1.0, abs=0.001)


# WebM: the duration is the Segment Info's, when it has one


def _encode_live_webm(wav: bytes) -> bytes:
    """WebM as a live recorder (a browser's MediaRecorder) writes it: unknown Segment size, no Duration."""
    output = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(output, "w", format="webm", options={"live": "1"}) as target:
        stream = target.add_stream("libopus", rate=48_000)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16", layout="mono", rate=48_000)
        for frame in source.decode(audio=0):
            frame.pts = None
            for resampled in resampler.resample(frame):
                resampled.time_base = Fraction(1, 48_000)
                target.mux(stream.encode(resampled))
        target.mux(stream.encode(None))
    return output.getvalue()


def test_given_a_live_webm_without_a_duration_then_none(encoded_audio):
    webm = _encode_live_webm(encoded_audio["wav"].read_bytes())
    assert webm[:4] == b"\x1a\x45\xdf\xa3" and b"\x44\x89" not in webm[:1000]  # no Duration element up front
    assert probe_duration(webm, AudioFormat.WEBM) is None


def _duration_element(webm: bytes) -> tuple[int, int]:
    """(offset, total length) of the Segment Info's Duration element in a file PyAV wrote."""
    position = webm.index(b"\x44\x89")
    size = webm[position + 2] & 0x7F  # a one-byte size: 0x84 or 0x88
    assert webm[position + 2] & 0x80 and size in (4, 8)
    return position, 3 + size


def test_given_a_webm_whose_duration_is_overwritten_with_a_void_element_then_none(encoded_audio):
    webm = encoded_audio["webm"].read_bytes()
    position, length = _duration_element(webm)
    void = b"\xec" + bytes([0x80 | (length - 2)]) + bytes(length - 2)  # EBML Void, same length
    without_duration = webm[:position] + void + webm[position + length :]
    assert len(without_duration) == len(webm)
    assert probe_duration(without_duration, AudioFormat.WEBM) is None


def test_given_a_webm_with_a_coarser_timecode_scale_then_its_duration_scales_with_it(encoded_audio, true_seconds):
    webm = encoded_audio["webm"].read_bytes()
    # TimecodeScale (2A D7 B1), one byte of size, 1 000 000 ns in three bytes (0F 42 40)
    scale = b"\x2a\xd7\xb1\x83\x0f\x42\x40"
    assert webm.count(scale) == 1
    doubled = webm.replace(scale, b"\x2a\xd7\xb1\x83" + (2_000_000).to_bytes(3, "big"))
    assert probe_duration(doubled, AudioFormat.WEBM) == pytest.approx(2 * true_seconds, abs=2 * TOLERANCE_SECONDS)


def _element(element_id: bytes, payload: bytes) -> bytes:
    assert len(payload) < 0x4000
    size = bytes([0x80 | len(payload)]) if len(payload) < 0x7F else (0x4000 | len(payload)).to_bytes(2, "big")
    return element_id + size + payload


SEGMENT, INFO, CLUSTER, TRACKS = b"\x18\x53\x80\x67", b"\x15\x49\xa9\x66", b"\x1f\x43\xb6\x75", b"\x16\x54\xae\x6b"
TIMECODE_SCALE, DURATION, MUXING_APP = b"\x2a\xd7\xb1", b"\x44\x89", b"\x4d\x80"


def _webm(*segment_children: bytes) -> bytes:
    return ebml_header(b"webm") + _element(SEGMENT, b"".join(segment_children))


def _info(*fields: bytes) -> bytes:
    return _element(INFO, b"".join(fields))


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        (
            _info(
                _element(TIMECODE_SCALE, (1_000_000).to_bytes(3, "big")), _element(DURATION, struct.pack(">d", 2500.0))
            ),
            2.5,
        ),
        (_info(_element(DURATION, struct.pack(">f", 2500.0))), 2.5),  # a 4-byte float; the default scale is 1 ms
        (_info(_element(MUXING_APP, b"test"), _element(DURATION, struct.pack(">d", 1234.5))), 1.2345),
        (_info(_element(TIMECODE_SCALE, (1_000).to_bytes(2, "big")), _element(DURATION, struct.pack(">d", 3e6))), 3.0),
    ],
)
def test_given_a_hand_built_webm_with_a_duration_then_it_is_read(info, expected):
    assert probe_duration(_webm(_element(TRACKS, b""), info), AudioFormat.WEBM) == pytest.approx(expected)


@pytest.mark.parametrize(
    "segment_children",
    [
        (_info(_element(TIMECODE_SCALE, (1_000_000).to_bytes(3, "big"))),),  # Info without Duration
        (_element(CLUSTER, b"\xe7\x81\x00"), _info(_element(DURATION, struct.pack(">d", 2500.0)))),  # media before Info
        (_element(TRACKS, b""),),  # no Info at all
        (_info(_element(DURATION, struct.pack(">d", 0.0))),),
        (_info(_element(DURATION, struct.pack(">d", -2500.0))),),
        (_info(_element(DURATION, struct.pack(">d", float("nan")))),),
        (_info(_element(DURATION, b"\x00\x00\x00")),),  # neither a 4- nor an 8-byte float
        (_info(_element(DURATION, b"")),),
        (_info(_element(TIMECODE_SCALE, b""), _element(DURATION, struct.pack(">d", 2500.0))),),  # a scale of 0
    ],
    ids=[
        "info-without-duration",
        "cluster-before-info",
        "no-info",
        "zero",
        "negative",
        "nan",
        "three-byte-float",
        "empty-duration",
        "empty-timecode-scale",
    ],
)
def test_given_a_webm_that_declares_no_usable_duration_then_none(segment_children):
    assert probe_duration(_webm(*segment_children), AudioFormat.WEBM) is None


def test_given_a_webm_that_declares_an_infinite_duration_then_none():
    webm = _webm(_info(_element(DURATION, struct.pack(">d", float("inf")))))
    assert probe_duration(webm, AudioFormat.WEBM) is None


@pytest.mark.parametrize(
    "data",
    [
        ebml_header(b"webm") + b"\x00\x81\x00",  # an element id that is no EBML variable-length integer
        ebml_header(b"webm") + SEGMENT + b"\x00",  # a size that is none either
        ebml_header(b"webm") + SEGMENT + b"\x01\xff\xff\xff\xff\xff\xff\xff" + INFO + b"\x88" + DURATION,  # cut short
        ebml_header(b"webm") + SEGMENT + b"\x81",  # a segment and nothing in it
    ],
)
def test_given_a_broken_webm_structure_then_none(data):
    assert probe_duration(data, AudioFormat.WEBM) is None


# bad input: never an exception, and no length made up


def _garbage(seed: int) -> bytes:
    rng = random.Random(seed)
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4096)))


@pytest.mark.parametrize("audio_format", list(AudioFormat))
@pytest.mark.parametrize(
    "data",
    [b"", b"\x00", bytes(4096), b"hello, this is not audio" * 50, *(_garbage(seed) for seed in range(5))],
    ids=["empty", "one-zero", "zeros", "text", *(f"random-{seed}" for seed in range(5))],
)
def test_given_bytes_that_are_not_audio_then_none(audio_format, data):
    assert probe_duration(data, audio_format) is None


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_given_a_file_cut_inside_its_header_then_none(encoded_audio, audio_format):
    audio = encoded_audio[audio_format.value].read_bytes()
    for length in (1, 4, 8, 12, 16, 24, 32, 40):  # every container's first header is longer than 40 bytes
        assert probe_duration(audio[:length], audio_format) is None, length


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_given_a_file_cut_anywhere_then_probing_never_raises_and_never_claims_more_than_the_whole(
    encoded_audio, true_seconds, audio_format
):
    audio = encoded_audio[audio_format.value].read_bytes()
    for length in sorted({*range(0, 2048, 61), len(audio) // 3, len(audio) // 2, len(audio) - 1}):
        seconds = probe_duration(audio[:length], audio_format)
        assert seconds is None or 0 < seconds <= true_seconds + TOLERANCE_SECONDS, (length, seconds)


@pytest.mark.parametrize("audio_format", list(AudioFormat))
def test_given_a_file_with_corrupted_bytes_then_probing_never_raises(encoded_audio, audio_format):
    audio = encoded_audio[audio_format.value].read_bytes()[:6000]
    rng = random.Random(audio_format.value)
    for _ in range(150):
        corrupted = bytearray(audio)
        for _ in range(rng.randrange(1, 12)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        seconds = probe_duration(bytes(corrupted), audio_format)
        assert seconds is None or (isinstance(seconds, float) and seconds > 0)


@pytest.mark.parametrize(
    ("actual", "claimed"),
    [
        ("wav", AudioFormat.FLAC),
        ("flac", AudioFormat.MP4),
        ("webm", AudioFormat.OGG),
        ("ogg", AudioFormat.WEBM),
        ("mp4", AudioFormat.WAV),
        ("m4a", AudioFormat.FLAC),
    ],
)
def test_given_a_file_probed_as_another_format_then_none(encoded_audio, actual, claimed):
    assert probe_duration(encoded_audio[actual].read_bytes(), claimed) is None


def test_the_fixture_wav_has_espeak_ngs_streamed_header(encoded_audio):
    # the streamed-WAV tests above are about the header espeak-ng really writes
    assert encoded_audio["wav"].read_bytes()[:44] == ESPEAK_NG_STREAMED_HEADER
