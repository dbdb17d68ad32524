"""ranged_audio.RangedAudio: a stored job file read as its head and tail only. Every probe the worker runs before
reserving (sniffing, check_decodable, sample rate, duration) gives what it gives on the whole file, for every format,
with the middle of the file really absent (a read there raises), and the view reads nothing else unless a probe
needs it, within its budget."""

from __future__ import annotations

import io
from pathlib import Path

import av
import pytest
from hypothesis import given
from hypothesis import strategies as st
from infery.domain.audio import AudioFormat, sniff_audio_format
from infery.domain.duration import check_decodable, probe_duration, probe_sample_rate
from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.ranged_audio import AbsentRange, RangedAudio
from infery.domain.transcription import LoadedAudio

from tests.support.builders import id3_tag
from tests.support.speech import ENCODINGS, encode, streamed_tone_wav

# what the views below hold of each end: far less than the files, so their middles are absent (mutagen looks for an
# Ogg stream's last page in its last 64 KiB)
END_BYTES = 64 * 1024
MINUTES = 2.0


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Two minutes of a tone in every format, from real encoders (an MP4 and an M4A write their moov last)."""
    wav = streamed_tone_wav(seconds=MINUTES * 60, sample_rate=16_000)
    return {name: wav if name == "wav" else encode(wav, name) for name in ENCODINGS}


def ends_only(data: bytes, end_bytes: int = END_BYTES) -> RangedAudio:
    """The file as its head and tail, nothing else: a read anywhere else raises AbsentRange."""
    return RangedAudio(len(data), [(0, data[:end_bytes]), (len(data) - end_bytes, data[-end_bytes:])])


def probes(audio: bytes | RangedAudio) -> tuple[AudioFormat, float | None, int | None]:
    audio_format = sniff_audio_format(audio)
    check_decodable(audio, audio_format)
    return audio_format, probe_duration(audio, audio_format), probe_sample_rate(audio, audio_format)


def faststart_mp4(wav: bytes, path: Path) -> bytes:
    """AAC in an MP4 whose moov is written first (``movflags=faststart``, as streaming services serve it; the
    muxer rewrites a named file for it)."""
    with (
        av.open(io.BytesIO(wav)) as source,
        av.open(str(path), "w", format="mp4", options={"movflags": "faststart"}) as target,
    ):
        stream = target.add_stream("aac", rate=16_000)
        assert isinstance(stream, av.AudioStream)
        stream.layout = "mono"
        for frame in source.decode(audio=0):
            frame.pts = None
            target.mux(stream.encode(frame))
        target.mux(stream.encode(None))
    return path.read_bytes()


@pytest.mark.parametrize("name", list(ENCODINGS))
def test_each_format_probed_from_its_head_and_tail_alone_is_probed_as_the_whole_file(long_audio, name):
    data = long_audio[name]
    assert len(data) > 4 * END_BYTES  # the middle (most of the file) is really absent from the view
    view = ends_only(data)

    assert probes(view) == probes(data)
    assert probes(data)[1] == pytest.approx(MINUTES * 60, abs=0.15)
    assert view.bytes_held == 2 * END_BYTES
    with pytest.raises(AbsentRange):
        view[len(data) // 2]  # the middle is not there to be read


def test_an_mp3_without_a_xing_header_is_estimated_from_the_true_size_as_the_whole_file_is(long_audio):
    data = long_audio["mp3"]
    for tag in (b"Xing", b"Info"):
        data = data.replace(tag, b"\0\0\0\0", 1)
    view = ends_only(data)

    assert probes(view) == probes(data)
    # the estimate is the size's: a view that lied about the size would say otherwise
    smaller = RangedAudio(len(data) // 2, [(0, data[:END_BYTES])])
    assert probe_duration(smaller, AudioFormat.MP3) != probe_duration(data, AudioFormat.MP3)


def test_an_mp3_with_an_id3v1_tag_at_its_end_and_an_id3v2_tag_longer_than_the_head(long_audio):
    # an ID3v2 tag (cover art) past the head: what follows it is read by range, once, within the budget
    data = id3_tag(3 * END_BYTES) + long_audio["mp3"] + b"TAG" + b"\0" * 125
    reads: list[tuple[int, int]] = []

    def read_range(start: int, stop: int) -> bytes:
        reads.append((start, stop))
        return data[start:stop]

    view = RangedAudio(
        len(data),
        [(0, data[:END_BYTES]), (len(data) - END_BYTES, data[-END_BYTES:])],
        read_range=read_range,
        max_extra_bytes=1 << 20,
    )

    assert probes(view) == probes(data) and probes(data)[0] is AudioFormat.MP3
    assert reads and view.extra_bytes_read <= 4 * 64 * 1024


def test_an_mp4_with_its_moov_first_is_probed_from_its_head(long_audio, tmp_path):
    data = faststart_mp4(long_audio["wav"], tmp_path / "faststart.mp4")
    assert data[4:8] == b"ftyp" and data.find(b"moov") < END_BYTES  # written first
    assert probes(ends_only(data)) == probes(data)


def test_a_damaged_wav_header_is_refused_from_the_view_as_from_the_whole_file(long_audio):
    data = bytearray(long_audio["wav"])
    data[34:36] = (0).to_bytes(2, "little")  # 0 bits per sample
    with pytest.raises(InvalidRequest) as whole:
        check_decodable(bytes(data), AudioFormat.WAV)
    with pytest.raises(InvalidRequest) as ranged:
        check_decodable(ends_only(bytes(data)), AudioFormat.WAV)
    assert ranged.value.code == whole.value.code == "undecodable_audio"


def test_what_is_not_audio_is_refused_from_the_view_as_from_the_whole_file():
    data = b"<html>" + b"x" * (10 * END_BYTES)
    with pytest.raises(InferyError) as whole:
        sniff_audio_format(data)
    with pytest.raises(InferyError) as ranged:
        sniff_audio_format(ends_only(data))
    assert ranged.value.code == whole.value.code


def test_loaded_audio_from_a_view_has_the_true_size_and_no_whole_bytes(long_audio):
    data = long_audio["ogg"]
    audio = LoadedAudio.stored(ends_only(data), "s3://bucket/uploads/key_1/upl_1", "etag", "version")
    assert (audio.format, audio.size, audio.s3_version_id) == (AudioFormat.OGG, len(data), "version")
    with pytest.raises(TypeError):
        audio.whole  # noqa: B018 - a view is never sent as if it were the file


# --- the view itself -----------------------------------------------------------------------------------------------


@given(data=st.binary(min_size=1, max_size=300), start=st.integers(-400, 400), stop=st.integers(-400, 400))
def test_a_slice_of_a_view_that_holds_everything_is_the_slice_of_the_bytes(data, start, stop):
    cut = len(data) // 3
    view = RangedAudio(len(data), [(0, data[:cut]), (cut, data[cut:])])
    assert view[start:stop] == data[start:stop]
    assert len(view) == len(data)
    if -len(data) <= start < len(data):
        assert view[start] == data[start]


def test_a_read_outside_the_pieces_is_fetched_in_blocks_until_the_budget_is_spent():
    data = bytes(range(256)) * 4096  # 1 MiB
    fetched: list[tuple[int, int]] = []

    def read_range(start: int, stop: int) -> bytes:
        fetched.append((start, stop))
        return data[start:stop]

    view = RangedAudio(len(data), [(0, data[:1024])], read_range=read_range, max_extra_bytes=128 * 1024)
    assert view[500_000:500_010] == data[500_000:500_010]
    assert view[500_005:500_020] == data[500_005:500_020]  # held now: not fetched again
    assert fetched == [(500_000, 500_000 + 64 * 1024)]
    assert view[700_000:700_004] == data[700_000:700_004]
    with pytest.raises(AbsentRange):  # a third block is past the budget
        view[900_000:900_004]
    assert view.extra_bytes_read == 128 * 1024


def test_a_range_read_short_is_refused_not_taken_as_the_file():
    view = RangedAudio(1000, [(0, b"x" * 10)], read_range=lambda start, stop: b"short", max_extra_bytes=1000)
    with pytest.raises(AbsentRange):
        view[500]


def test_pieces_that_overlap_or_pass_the_end_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        RangedAudio(100, [(0, b"x" * 20), (10, b"y" * 20)])
    with pytest.raises(ValueError, match="past the file"):
        RangedAudio(100, [(90, b"x" * 20)])


def test_the_file_view_seeks_from_the_end_to_the_true_size(tmp_path: Path):
    view = RangedAudio(1_000_000, [(0, b"head"), (999_996, b"tail")])
    file = view.open()
    assert file.seek(-4, io.SEEK_END) == 999_996
    assert file.read() == b"tail"
    file.seek(0)
    assert file.read(4) == b"head"
    with pytest.raises(AbsentRange):
        file.read(10)
