"""A part of a long job's audio: two neighbouring parts find their shared cut from the same short decode, so they
meet at the same instant, in a pause, and together hold every sample of the file once.

The audio is speech-like bursts (a voiced buzz in a syllable envelope) with known pauses between them, encoded by
PyAV's real encoders; the speech probabilities are the bursts' loudness, so where a pause lies is known exactly.
tests/integration/test_model_parts.py does the same with espeak-ng's speech, Silero VAD and the tiny.en model.
"""

from __future__ import annotations

import io

import av
import numpy as np
import pytest
from audio_input import SAMPLE_RATE, AudioLimits, AudioRefused, DecodingCancelled, decode, decode_stretch
from infery.domain.inference import AudioPart
from parts import decode_part, find_cut
from pydantic import ValidationError
from windows import VAD_FRAME

from tests.support.speech import encode, mono_wav

SEARCH = 6.0
# the sample-accurate formats: a seek lands where the timestamps say, so a part decoded after a seek is exactly the
# whole decode's samples (mp3 here is a constant bitrate one: every frame's place is known)
EXACT = ("wav", "flac", "ogg", "webm", "mp3")


def _bursts(seconds: float, seed: int = 7, rate: int = SAMPLE_RATE) -> tuple[bytes, list[tuple[float, float]]]:
    """A WAV (16 kHz unless ``rate``) of syllable-like bursts 0.15-0.4 s long with 40-90 ms gaps inside 'sentences'
    of 2-5 s, and 0.5-1.1 s pauses between the sentences; and those pauses, (start, end) in seconds."""
    rng = np.random.default_rng(seed)
    audio = np.zeros(int(seconds * rate), dtype=np.float32)
    pauses: list[tuple[float, float]] = []
    position = 0.3
    while position < seconds:
        sentence_end = min(seconds, position + rng.uniform(2, 5))
        while position < sentence_end:
            length = rng.uniform(0.15, 0.4)
            first, last = int(position * rate), min(len(audio), int((position + length) * rate))
            t = np.arange(last - first) / rate
            pitch = rng.uniform(110, 220)
            voiced = sum(np.sin(2 * np.pi * pitch * k * t) / k for k in range(1, 6))
            audio[first:last] = 0.3 * np.sin(np.pi * t / length) * voiced
            position += length + rng.uniform(0.04, 0.09)
        pause = rng.uniform(0.5, 1.1)
        pauses.append((position, position + pause))
        position += pause
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return mono_wav(pcm, rate), pauses


def loudness(samples: np.ndarray) -> np.ndarray:
    """A VAD stand-in: each 32 ms frame's speech probability is its loudness (1 for the bursts, ~0 between them)."""
    frames = np.pad(samples, (0, -len(samples) % VAD_FRAME)).reshape(-1, VAD_FRAME)
    return np.clip(np.sqrt(np.mean(frames**2, axis=1)) / 0.02, 0, 1)


@pytest.fixture(scope="module")
def recording() -> tuple[bytes, list[tuple[float, float]]]:
    return _bursts(75)


@pytest.fixture(scope="module")
def encoded(recording: tuple[bytes, list[tuple[float, float]]]) -> dict[str, bytes]:
    wav, _ = recording
    return {"wav": wav, **{name: encode(wav, name) for name in ("flac", "ogg", "webm", "m4a", "mp3")}}


def _in_a_pause(cut: float, pauses: list[tuple[float, float]]) -> bool:
    return any(start <= cut <= end for start, end in pauses)


@pytest.mark.parametrize("audio_format", ["wav", "flac", "ogg", "webm", "m4a", "mp3"])
def test_the_part_before_an_edge_and_the_part_after_it_cut_it_at_the_same_instant_in_a_pause(
    audio_format, encoded, recording
):
    data = encoded[audio_format]
    before = decode_part(data, AudioPart(end=37, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    after = decode_part(data, AudioPart(start=37, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    assert before.start == 0
    assert before.end == after.start  # bit for bit, though one decoded 37 s up to it and the other started there
    assert 37 - SEARCH <= after.start <= 37 + SEARCH
    assert _in_a_pause(after.start, recording[1])


@pytest.mark.parametrize("audio_format", EXACT)
def test_two_neighbouring_parts_hold_exactly_the_whole_decodes_samples(audio_format, encoded):
    data = encoded[audio_format]
    whole = decode(data, AudioLimits())
    parts = [
        decode_part(data, AudioPart(end=25, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness),
        decode_part(
            data, AudioPart(start=25, end=50, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness
        ),
        decode_part(data, AudioPart(start=50, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness),
    ]
    assert parts[0].end == parts[1].start and parts[1].end == parts[2].start
    # no sample lost, none doubled, none changed: each part is the whole decode's samples between its cuts
    assert np.array_equal(np.concatenate([part.samples for part in parts]), whole)
    for part in parts:
        assert len(part.samples) == round(part.end * SAMPLE_RATE) - round(part.start * SAMPLE_RATE)


def _encoded_at(wav: bytes, container: str, codec: str, rate: int) -> bytes:
    output = io.BytesIO()
    with av.open(io.BytesIO(wav)) as source, av.open(output, "w", format=container) as target:
        stream = target.add_stream(codec, rate=rate)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=stream.codec_context.format or "s16", layout="mono", rate=rate)
        for frame in [*source.decode(audio=0), None]:
            if frame is not None:
                frame.pts = None
            for resampled in resampler.resample(frame):
                target.mux(stream.encode(resampled))
        target.mux(stream.encode(None))
    return output.getvalue()


@pytest.mark.parametrize(
    ("container", "codec", "rate"), [("wav", None, 22_050), ("flac", "flac", 44_100), ("mp3", "libmp3lame", 44_100)]
)
def test_a_part_of_a_source_at_another_rate_is_the_whole_decodes_samples_too(container, codec, rate):
    # a seek lands on the source's samples, which meet the 16 kHz output's only every 10 or 20 ms: the part's decode
    # starts at such an instant, or every sample after its cut would be the whole decode's shifted by a fraction
    wav, _ = _bursts(60, seed=3, rate=rate)
    data = wav if codec is None else _encoded_at(wav, container, codec, rate)
    whole = decode(data, AudioLimits())
    first = decode_part(data, AudioPart(end=30, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    second = decode_part(data, AudioPart(start=30, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    assert first.end == second.start
    assert np.array_equal(np.concatenate([first.samples, second.samples]), whole)


def test_an_aac_part_after_a_seek_has_the_whole_decodes_sample_count_and_nearly_all_its_samples(encoded):
    data = encoded["m4a"]
    whole = decode(data, AudioLimits())
    first = decode_part(data, AudioPart(end=37, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    second = decode_part(data, AudioPart(start=37, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    joined = np.concatenate([first.samples, second.samples])
    assert len(joined) == len(whole)
    assert np.array_equal(first.samples, whole[: len(first.samples)])
    # AAC's decoder carries state from frame to frame that a seek does not rebuild exactly (its noise substitution
    # draws from a generator seeded at the start): a few samples differ slightly, none is lost or doubled
    differing = np.abs(joined - whole) > 1e-3
    assert differing.mean() < 0.01
    assert np.abs(joined - whole).max() < 0.05


def test_the_silero_vad_finds_the_same_cut_from_both_sides(encoded):
    data = encoded["ogg"]
    before = decode_part(data, AudioPart(end=37, search_seconds=SEARCH), AudioLimits())
    after = decode_part(data, AudioPart(start=37, search_seconds=SEARCH), AudioLimits())
    assert before.end == after.start


def test_a_cut_depends_only_on_the_stretch_around_its_edge(encoded):
    data = encoded["ogg"]
    cuts = {find_cut(data, 37, SEARCH, AudioLimits(), speech_probabilities=loudness) for _ in range(3)}
    assert len(cuts) == 1
    (cut,) = cuts
    # the part before decodes 37 s continuously, yet ends there: it found its cut from the same stretch
    assert (
        decode_part(data, AudioPart(end=37, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness).end
        == cut.at
    )


def test_a_stretch_after_a_seek_is_the_whole_decodes_samples_at_its_timestamps(encoded):
    data = encoded["flac"]
    whole = decode(data, AudioLimits())
    stretch = decode_stretch(data, AudioLimits(), 40.0, 45.5)
    assert stretch.start == 40.0 and not stretch.reached_end
    assert np.array_equal(stretch.samples, whole[40 * SAMPLE_RATE : int(45.5 * SAMPLE_RATE)])


def test_a_part_whose_end_is_past_the_files_end_reads_to_the_end(encoded):
    data = encoded["wav"]
    whole = decode(data, AudioLimits())
    last = decode_part(
        data, AudioPart(start=50, end=200, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness
    )
    assert last.end == pytest.approx(len(whole) / SAMPLE_RATE)
    assert np.array_equal(last.samples, whole[round(last.start * SAMPLE_RATE) :])


def test_an_edge_within_its_search_of_the_files_end_is_the_end_for_both_neighbours(encoded):
    data = encoded["ogg"]
    whole = decode(data, AudioLimits())
    before = decode_part(data, AudioPart(end=72, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    after = decode_part(data, AudioPart(start=72, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness)
    assert np.array_equal(before.samples, whole)  # the part before reads to the end
    assert len(after.samples) == 0 and after.start == after.end  # and the part after is empty
    assert after.start == pytest.approx(len(whole) / SAMPLE_RATE)


def test_a_part_that_starts_past_the_files_end_is_empty_not_an_error(encoded):
    data = encoded["ogg"]
    empty = decode_part(
        data, AudioPart(start=300, end=400, search_seconds=SEARCH), AudioLimits(), speech_probabilities=loudness
    )
    assert len(empty.samples) == 0 and empty.start == empty.end


@pytest.mark.parametrize(
    "fields",
    [
        {"start": 100, "end": 100},
        {"start": 100, "end": 40},
        {"start": 100, "end": 159, "search_seconds": 30},  # no room between its two searches
        {"start": 0},
        {"start": -5},
        {"end": 0},
        {"search_seconds": 0},
        {"search_seconds": 301},
        {"start": 10, "seconds": 5},
    ],
)
def test_the_contract_refuses_a_part_that_is_not_one(fields):
    with pytest.raises(ValidationError):
        AudioPart(**fields)


def test_a_part_of_undecodable_bytes_is_undecodable_audio():
    with pytest.raises(AudioRefused) as refused:
        decode_part(b"\x00garbage" * 5000, AudioPart(start=20, end=100), AudioLimits(), speech_probabilities=loudness)
    assert refused.value.code == "undecodable_audio"


def test_the_first_part_of_a_file_without_samples_is_undecodable(encoded):
    header_only = encoded["wav"][:44]
    with pytest.raises(AudioRefused) as refused:
        decode_part(header_only, AudioPart(end=100), AudioLimits(), speech_probabilities=loudness)
    assert refused.value.code == "undecodable_audio"


def test_a_part_longer_than_it_paid_for_is_longer_than_declared(encoded):
    with pytest.raises(AudioRefused) as refused:
        decode_part(
            encoded["ogg"],
            AudioPart(start=25, end=50, search_seconds=SEARCH),
            AudioLimits().for_request(paid_seconds=20),
            speech_probabilities=loudness,
        )
    assert refused.value.code == "audio_longer_than_declared"


def test_a_part_is_held_to_its_own_length_not_the_files(encoded):
    # the file (75 s) is longer than this server decodes per request (40 s): its 25 s parts are not
    limits = AudioLimits(max_seconds=40).for_request(paid_seconds=40)
    with pytest.raises(AudioRefused):
        decode(encoded["ogg"], limits)
    part = decode_part(
        encoded["ogg"], AudioPart(start=25, end=50, search_seconds=SEARCH), limits, speech_probabilities=loudness
    )
    assert 25 - 2 * SEARCH < len(part.samples) / SAMPLE_RATE < 25 + 2 * SEARCH


def test_a_part_stops_decoding_once_its_caller_is_gone(encoded):
    with pytest.raises(DecodingCancelled):
        decode_part(
            encoded["wav"],
            AudioPart(end=70, search_seconds=SEARCH),
            AudioLimits(),
            cancelled=lambda: True,
            speech_probabilities=loudness,
        )
