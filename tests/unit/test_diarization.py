"""Speaker turns laid over a transcript (infery.domain.diarization) and the formats that show them."""

from __future__ import annotations

import base64

import pytest
from infery.domain.diarization import (
    ClusterTurn,
    DiarizedSegment,
    check_known_speakers,
    cosine_similarity,
    diarized_segments,
    label_turns,
    letter_label,
    name_clusters,
    segment_speakers,
    speaker_at,
)
from infery.domain.errors import InvalidRequest
from infery.domain.formats import render_transcript, to_diarized_srt, to_diarized_vtt
from infery.domain.inference import InferenceResult, SpeakerTurn, Task, Word
from infery.domain.transcription import ResponseFormat, TranscriptionOptions

from tests.support.builders import segment
from tests.support.speech import silent_wav


def _turns(*spans: tuple[str, float, float]) -> list[SpeakerTurn]:
    return [SpeakerTurn(speaker=speaker, start=start, end=end) for speaker, start, end in spans]


def _words(*spans: tuple[str, float, float]) -> list[Word]:
    return [Word(word=word, start=start, end=end) for word, start, end in spans]


def _result(segments: list, words: list[Word] | None, turns: list[SpeakerTurn] | None) -> InferenceResult:
    text = "".join(piece.text for piece in segments)
    return InferenceResult(text=text, language="en", duration=10.0, segments=segments, words=words, speaker_turns=turns)


# --- labels ------------------------------------------------------------------------------------------------------


def test_letters_follow_first_appearance_not_the_models_cluster_names() -> None:
    turns = [ClusterTurn("SPEAKER_02", 0.0, 2.0), ClusterTurn("SPEAKER_01", 2.0, 4.0), ClusterTurn("SPEAKER_02", 4, 5)]
    assert [(turn.speaker, turn.start) for turn in label_turns(turns)] == [("A", 0.0), ("B", 2.0), ("A", 4.0)]


def test_turns_are_labelled_in_time_order_whatever_order_they_come_in() -> None:
    turns = [ClusterTurn("x", 3.0, 4.0), ClusterTurn("y", 0.0, 1.0)]
    assert [turn.speaker for turn in label_turns(turns)] == ["A", "B"]
    assert [turn.start for turn in label_turns(turns)] == [0.0, 3.0]


def test_a_known_speakers_name_replaces_the_letter_and_its_letter_is_not_reused() -> None:
    turns = [ClusterTurn("c1", 0, 1), ClusterTurn("c2", 1, 2), ClusterTurn("c3", 2, 3)]
    labelled = label_turns(turns, {"c2": "agent", "c3": "A"})
    assert [turn.speaker for turn in labelled] == ["B", "agent", "A"]


def test_empty_turns_are_dropped() -> None:
    assert label_turns([ClusterTurn("c", 1.0, 1.0), ClusterTurn("c", 2.0, 1.5)]) == []


def test_letters_go_on_past_z() -> None:
    assert [letter_label(index) for index in (0, 25, 26, 27, 51, 52)] == ["A", "Z", "AA", "AB", "AZ", "BA"]


# --- naming by voice ---------------------------------------------------------------------------------------------


def test_cosine_similarity() -> None:
    assert cosine_similarity([1, 0], [1, 0]) == pytest.approx(1.0)
    assert cosine_similarity([1, 0], [0, 1]) == pytest.approx(0.0)
    assert cosine_similarity([0, 0], [1, 0]) == 0.0
    with pytest.raises(ValueError):
        cosine_similarity([1, 0], [1, 0, 0])


def test_each_sample_names_the_voice_it_matches() -> None:
    centroids = {"c1": [1.0, 0.0, 0.0], "c2": [0.0, 1.0, 0.0]}
    references = {"alice": [0.1, 0.99, 0.0], "bob": [0.98, 0.12, 0.0]}
    assert name_clusters(centroids, references) == {"c1": "bob", "c2": "alice"}


def test_a_sample_like_no_voice_names_nobody() -> None:
    # 0.78 is what a wrong speaker's sample scored against a centroid: below the threshold
    centroids = {"c1": [1.0, 0.0]}
    assert name_clusters(centroids, {"carol": [0.78, 0.6258]}) == {}
    assert name_clusters(centroids, {"carol": [0.82, 0.5724]}) == {"c1": "carol"}


def test_a_sample_about_as_close_to_two_voices_names_neither() -> None:
    centroids = {"c1": [1.0, 0.0], "c2": [0.0, 1.0]}
    assert name_clusters(centroids, {"dan": [1.0, 0.9]}) == {}  # 0.74 and 0.67: below the threshold anyway
    close = {"c1": [1.0, 0.0, 0.0], "c2": [0.95, 0.3122, 0.0]}
    assert name_clusters(close, {"dan": [1.0, 0.05, 0.0]}) == {}  # 0.999 against 0.96


def test_two_samples_of_one_voice_name_it_once_the_closer_wins() -> None:
    centroids = {"c1": [1.0, 0.0], "c2": [0.0, 1.0]}
    named = name_clusters(centroids, {"near": [1.0, 0.05], "nearish": [1.0, 0.3]})
    assert named == {"c1": "near"}


# --- who speaks when ---------------------------------------------------------------------------------------------


def test_speaker_at_takes_the_longest_overlap_and_the_nearest_turn_in_a_pause() -> None:
    turns = _turns(("A", 0.0, 2.0), ("B", 2.0, 5.0), ("A", 6.0, 8.0))
    assert speaker_at(turns, 1.5, 2.2) == "A"
    assert speaker_at(turns, 1.9, 2.6) == "B"
    assert speaker_at(turns, 5.1, 5.3) == "B"  # in the pause, nearer B's end
    assert speaker_at(turns, 5.8, 5.9) == "A"
    assert speaker_at(turns, 9.0, 9.0) == "A"  # an instant after the last turn
    assert speaker_at([], 0.0, 1.0) is None


def test_overlapping_speech_goes_to_who_holds_more_of_the_span_tie_to_the_first() -> None:
    turns = _turns(("A", 0.0, 3.0), ("B", 2.0, 4.0))
    assert speaker_at(turns, 2.0, 2.8) in ("A", "B")
    assert speaker_at(turns, 2.0, 2.8) == "A"  # both hold 0.8 s: the first to speak
    assert speaker_at(turns, 2.5, 4.0) == "B"


def test_a_segment_spanning_a_change_of_speaker_is_split_at_the_words() -> None:
    segments = [segment(0, 0.0, 4.0, " Hello there. Hi, how are you?")]
    words = _words(
        ("Hello", 0.0, 0.5), ("there.", 0.5, 1.0), ("Hi,", 1.6, 1.9), ("how", 2.0, 2.2), ("are", 2.2, 2.4),
        ("you?", 2.4, 3.6),
    )  # fmt: skip
    result = _result(segments, words, _turns(("A", 0.0, 1.2), ("B", 1.5, 4.0)))
    pieces = diarized_segments(result)
    assert [(piece.speaker, piece.start, piece.end, piece.text) for piece in pieces] == [
        ("A", 0.0, 1.0, "Hello there."),
        ("B", 1.6, 4.0, "Hi, how are you?"),
    ]


def test_a_word_straddling_the_change_goes_to_who_speaks_most_of_it() -> None:
    segments = [segment(0, 0.0, 3.0, " one two three")]
    words = _words(("one", 0.0, 0.8), ("two", 0.9, 1.6), ("three", 1.7, 3.0))
    # "two" is 0.9-1.6: A until 1.1 (0.2 s), B after (0.5 s)
    pieces = diarized_segments(_result(segments, words, _turns(("A", 0.0, 1.1), ("B", 1.1, 3.0))))
    assert [(piece.speaker, piece.text) for piece in pieces] == [("A", "one"), ("B", "two three")]


@pytest.mark.parametrize(
    ("text", "words", "first", "second"),
    [
        # Chinese and Japanese have no spaces between words: none is invented where the segment is cut
        (" 你好，我是小明。你好吗？", ("你好，", "我是", "小明。", "你好", "吗？"), "你好，我是小明。", "你好吗？"),
        ("こんにちは。田中です。元気ですか", ("こんにちは。", "田中", "です。", "元気", "ですか"),
         "こんにちは。田中です。", "元気ですか"),
        # Thai puts spaces between phrases only
        (" สวัสดีครับ ผม สบายดีไหม", ("สวัสดี", "ครับ", "ผม", "สบาย", "ดี", "ไหม"), "สวัสดีครับ ผม", "สบายดีไหม"),
        # what the words leave out (an opening quote, a dash) stays in its piece, spaces as written
        (' "Well,  yes,  sure." - No!', ("Well,", "yes,", 'sure."', "No!"), '"Well,  yes,  sure."', "- No!"),
    ],
)  # fmt: skip
def test_a_split_segments_pieces_keep_its_texts_spacing(text: str, words: tuple, first: str, second: str) -> None:
    # the first three words are A's, the others B's
    spans = [(word, index * 1.0, index * 1.0 + 0.9) for index, word in enumerate(words)]
    result = _result([segment(0, 0.0, len(words), text)], _words(*spans), _turns(("A", 0.0, 2.95), ("B", 2.95, 9)))
    assert [(piece.speaker, piece.text) for piece in diarized_segments(result)] == [("A", first), ("B", second)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" one two three", ["one two", "four"]), ("一二三", ["一二", "四"])],
)
def test_words_not_found_in_the_segments_text_are_joined_as_the_text_joins_words(text, expected) -> None:
    heard = ("one", "two", "four") if " " in text else ("一", "二", "四")  # the last word is not in the text
    spans = [(word, index * 1.0, index * 1.0 + 0.9) for index, word in enumerate(heard)]
    result = _result([segment(0, 0.0, 3.0, text)], _words(*spans), _turns(("A", 0.0, 1.95), ("B", 1.95, 9)))
    assert [piece.text for piece in diarized_segments(result)] == expected


def test_one_speaker_keeps_whisper_segments_and_their_text_whole() -> None:
    segments = [segment(0, 0.0, 2.0, " Good morning,"), segment(1, 2.0, 4.0, " everyone.")]
    words = _words(("Good", 0.0, 0.5), ("morning,", 0.5, 1.5), ("everyone.", 2.1, 3.5))
    pieces = diarized_segments(_result(segments, words, _turns(("A", 0.1, 3.9))))
    assert [(piece.speaker, piece.start, piece.end, piece.text) for piece in pieces] == [
        ("A", 0.0, 2.0, "Good morning,"),
        ("A", 2.0, 4.0, "everyone."),
    ]


def test_without_words_a_segment_takes_who_speaks_most_of_it() -> None:
    segments = [segment(0, 0.0, 3.0, " first"), segment(1, 3.0, 6.0, " second")]
    pieces = diarized_segments(_result(segments, None, _turns(("A", 0.0, 3.5), ("B", 3.5, 6.0))))
    assert [(piece.speaker, piece.text) for piece in pieces] == [("A", "first"), ("B", "second")]


def test_no_speech_found_everything_is_one_speaker_and_nothing_is_lost() -> None:
    segments = [segment(0, 0.0, 1.0, " hm")]
    pieces = diarized_segments(_result(segments, _words(("hm", 0.1, 0.4)), []))
    assert [(piece.speaker, piece.text) for piece in pieces] == [("A", "hm")]
    assert diarized_segments(_result([], None, [])) == []


def test_every_word_lands_in_exactly_one_piece() -> None:
    segments = [segment(0, 0.0, 2.0, " a b"), segment(1, 2.0, 4.0, " c d e")]
    words = _words(("a", 0.0, 0.5), ("b", 1.0, 2.2), ("c", 2.3, 2.6), ("d", 2.7, 3.0), ("e", 3.5, 4.4))
    turns = _turns(("A", 0.0, 0.9), ("B", 0.9, 2.65), ("A", 2.65, 5.0))
    pieces = diarized_segments(_result(segments, words, turns))
    assert " ".join(piece.text for piece in pieces).split() == ["a", "b", "c", "d", "e"]
    assert [piece.speaker for piece in pieces] == ["A", "B", "B", "A"]
    assert all(piece.start <= piece.end for piece in pieces)


def test_verbose_json_segments_each_get_who_speaks_most_of_them() -> None:
    segments = [segment(0, 0.0, 3.0, " x"), segment(1, 3.0, 6.0, " y")]
    result = _result(segments, None, _turns(("A", 0.0, 2.0), ("B", 2.0, 6.0)))
    assert segment_speakers(result) == ["A", "B"]


# --- formats -----------------------------------------------------------------------------------------------------


def _two_voices() -> InferenceResult:
    segments = [segment(0, 0.0, 4.0, " Hello there. Hi.")]
    words = _words(("Hello", 0.0, 0.5), ("there.", 0.5, 1.0), ("Hi.", 2.0, 2.5))
    return _result(segments, words, _turns(("A", 0.0, 1.2), ("agent", 1.8, 4.0)))


def test_diarized_json_is_openais_shape() -> None:
    body = render_transcript(
        _two_voices(), ResponseFormat.DIARIZED_JSON, task=Task.TRANSCRIBE, credits_used=3, include_words=False
    ).body
    assert body == {
        "task": "transcribe",
        "duration": 10.0,
        "text": "Hello there. Hi.",
        "segments": [
            {"type": "transcript.text.segment", "id": "seg_0", "speaker": "A", "start": 0.0, "end": 1.0,
             "text": "Hello there."},
            {"type": "transcript.text.segment", "id": "seg_1", "speaker": "agent", "start": 2.0, "end": 4.0,
             "text": "Hi."},
        ],
        "usage": {"type": "duration", "seconds": 10.0},
        "credits_used": 3,
    }  # fmt: skip


def test_srt_and_vtt_name_the_speaker_of_each_cue_when_diarized() -> None:
    result = _two_voices()
    srt = render_transcript(result, ResponseFormat.SRT, task=Task.TRANSCRIBE, credits_used=1, include_words=False)
    vtt = render_transcript(result, ResponseFormat.VTT, task=Task.TRANSCRIBE, credits_used=1, include_words=False)
    assert srt.body == (
        "1\n00:00:00,000 --> 00:00:01,000\n[A] Hello there.\n\n2\n00:00:02,000 --> 00:00:04,000\n[agent] Hi.\n\n"
    )
    assert (
        vtt.body == "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\n<v A>Hello there.\n\n"
        "00:00:02.000 --> 00:00:04.000\n<v agent>Hi.\n\n"
    )
    plain = result.model_copy(update={"speaker_turns": None})
    assert "[A]" not in str(
        render_transcript(plain, ResponseFormat.SRT, task=Task.TRANSCRIBE, credits_used=1, include_words=False).body
    )


def test_verbose_json_carries_speakers_only_when_diarized() -> None:
    result = _two_voices()
    body = render_transcript(
        result, ResponseFormat.VERBOSE_JSON, task=Task.TRANSCRIBE, credits_used=1, include_words=False
    ).body
    assert isinstance(body, dict) and [segment["speaker"] for segment in body["segments"]] == ["agent"]
    plain = render_transcript(
        result.model_copy(update={"speaker_turns": None}),
        ResponseFormat.VERBOSE_JSON,
        task=Task.TRANSCRIBE,
        credits_used=1,
        include_words=False,
    ).body
    assert isinstance(plain, dict) and "speaker" not in plain["segments"][0]


@pytest.mark.parametrize(
    ("model", "response_format", "diarize"),
    [
        ("whisper-1", "diarized_json", True),
        ("gpt-4o-transcribe-diarize", "diarized_json", True),
        ("gpt-4o-transcribe-diarize", "verbose_json", True),
        ("gpt-4o-transcribe-diarize", "srt", True),
        ("gpt-4o-transcribe-diarize", "vtt", True),
        ("gpt-4o-transcribe-diarize", "json", False),  # nothing in it would show a speaker
        ("gpt-4o-transcribe-diarize", "text", False),
        ("whisper-1", "verbose_json", False),
    ],
)
def test_which_requests_diarize(model: str, response_format: str, diarize: bool) -> None:
    options = TranscriptionOptions(task=Task.TRANSCRIBE, model=model, response_format=ResponseFormat(response_format))
    assert options.diarize is diarize


# --- known speakers' samples -------------------------------------------------------------------------------------


def _data_url(audio: bytes, media_type: str = "audio/wav") -> str:
    return f"data:{media_type};base64,{base64.b64encode(audio).decode()}"


def test_good_samples_are_decoded_with_their_names() -> None:
    sample = silent_wav(16_000, 3.0)
    clips = check_known_speakers(["agent", "customer"], [_data_url(sample), _data_url(sample, "audio/x-wav")])
    assert [(clip.name, clip.audio) for clip in clips] == [("agent", sample), ("customer", sample)]
    assert check_known_speakers([], []) == []


@pytest.mark.parametrize(
    ("names", "references", "code", "words"),
    [
        (["a"], [], "invalid_known_speakers", "1 names"),
        ([], ["x"], "invalid_known_speakers", "0 names"),
        (["a", "b", "c", "d", "e"], ["s"] * 5, "invalid_known_speakers", "At most 4"),
        ([""], ["s"], "invalid_known_speakers", "1 to 64"),
        (["   "], ["s"], "invalid_known_speakers", "1 to 64"),
        (["x" * 65], ["s"], "invalid_known_speakers", "1 to 64"),
        (["a\nb"], ["s"], "invalid_known_speakers", "control"),
        ([3], ["s"], "invalid_known_speakers", "1 to 64"),
        (["a", "a"], ["GOOD", "GOOD"], "invalid_known_speakers", "named twice"),
        (["a"], ["not a data url"], "invalid_speaker_reference", "data URL"),
        (["a"], [None], "invalid_speaker_reference", "data URL"),
        (["a"], ["https://example.com/voice.wav"], "invalid_speaker_reference", "data URL"),
        (["a"], ["data:audio/wav;base64,@@@"], "invalid_speaker_reference", "base64"),
        (["a"], ["data:audio/wav;base64,"], "invalid_speaker_reference", "empty"),
        (["a"], [_data_url(b"%PDF-1.4 not audio at all")], "invalid_speaker_reference", "format"),
        (["a"], [_data_url(silent_wav(16_000, 1.0))], "invalid_speaker_reference", "1.0 s"),
        (["a"], [_data_url(silent_wav(16_000, 11.0))], "invalid_speaker_reference", "11.0 s"),
        (["a"], ["data:audio/wav;base64," + "A" * 3_000_000], "invalid_speaker_reference", "larger than 2 MiB"),
    ],
)
def test_bad_known_speakers_are_refused(names: list, references: list, code: str, words: str) -> None:
    good = _data_url(silent_wav(16_000, 2.5))
    references = [good if reference == "GOOD" else reference for reference in references]
    with pytest.raises(InvalidRequest) as refused:
        check_known_speakers(names, references)
    assert refused.value.code == code
    assert words in refused.value.message


def test_a_transcript_without_speakers_is_not_shown_as_diarized_json() -> None:
    plain = _two_voices().model_copy(update={"speaker_turns": None})
    with pytest.raises(InvalidRequest) as refused:
        render_transcript(
            plain, ResponseFormat.DIARIZED_JSON, task=Task.TRANSCRIBE, credits_used=1, include_words=False
        )
    assert refused.value.param == "response_format" and "without speakers" in refused.value.message


def test_a_speakers_name_never_puts_a_cue_arrow_into_srt_or_vtt_text():
    pieces = [DiarizedSegment(speaker="A --> B", start=0.0, end=1.5, text=" Hello there.")]
    for rendered in (to_diarized_srt(pieces), to_diarized_vtt(pieces)):
        cue_text_lines = [line for line in rendered.splitlines() if "Hello" in line]
        assert cue_text_lines and all("-->" not in line for line in cue_text_lines), rendered


@pytest.mark.parametrize(
    ("name", "voice_tag"),
    [
        ("Tom & Jerry", "<v Tom &amp; Jerry>"),
        ("<b>Ann</b>", "<v &lt;b&gt;Ann&lt;/b&gt;>"),
        ("A > B", "<v A &gt; B>"),
        ("&amp;", "<v &amp;amp;>"),  # shown as typed, not as "&"
        ("Zoë 李", "<v Zoë 李>"),
    ],
)
def test_a_speakers_name_is_escaped_in_the_vtt_voice_tag_whatever_it_holds(name, voice_tag):
    pieces = [DiarizedSegment(speaker=name, start=0.0, end=1.5, text=" Q&A <now>")]
    cue = to_diarized_vtt(pieces).splitlines()[3]
    assert cue == f"{voice_tag}Q&amp;A &lt;now&gt;"
    # WebVTT: a voice tag's name has no raw ">" or "&", and no raw "<" or "&" follows the tag in the cue text
    annotation, _, text = cue.removeprefix("<v ").partition(">")
    for piece in (annotation, text):
        assert "<" not in piece and ">" not in piece
        assert all(part.startswith(("amp;", "lt;", "gt;")) for part in piece.split("&")[1:]), piece
