"""The Whisper model server: SageMaker's container contract, running faster-whisper.

- ``GET /ping`` and ``POST /invocations``: what SageMaker calls inside the container.
- ``POST /endpoints/{name}/invocations``: what boto3's ``sagemaker-runtime`` calls, answered the way
  the SageMaker runtime front end answers it (model errors wrapped as ``ModelError``), so the local
  stack points ``AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME`` here and the Lambda code path stays the same.

The model is loaded once at start-up. Each request runs in its own thread: it decodes its audio once
(bounded: audio_input.py), and the batched engine (engine.py) decodes its 30-second windows together
with the windows of every other request in flight. Every sample is decoded: voice-activity detection
only places the cuts between windows. A request whose caller has gone stops being decoded, its audio
included. Long files are decoded a few at a time (each holds a core and its samples' memory while it
runs), and what a request's decoding freed is handed back to the system once it ends. Audio by reference is read
from S3 by ranges (s3_reader.py), never whole; a request for one part of a long job's audio decodes only that part,
between cuts its neighbours find at the same instants (parts.py), and answers on the file's timeline.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import select
import socket
import time
from collections.abc import Callable
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from audio_input import SAMPLE_RATE, AudioLimits, AudioRefused, DecodingCancelled, decode
from decoding import DecodeOptions, WindowResult
from diarization import SWITCH_HINT, DiarizationRefused, SpeakerDiarizer
from diarization import installed as diarization_installed
from engine import BatchedEngine, Cancelled
from faster_whisper import WhisperModel
from infery.domain.inference import InferenceRequest, InferenceResult, Segment, Task, TokenLogprob, Word
from memory import DecodeGate, keep_large_buffers_out_of_the_heap, release_free_memory
from parts import decode_part
from pydantic import ValidationError
from s3_reader import RangedObject, S3ReadFailed
from server_config import ServerConfig, config_from_args
from windows import CutRules

logger = logging.getLogger("whisper_server")
_RUNTIME_PATH = re.compile(r"^/endpoints/([^/]+)/invocations$")


class InferenceFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> bytes:
        return json.dumps({"error": self.message, "code": self.code}).encode()


class WhisperTranscriber:
    def __init__(self, config: ServerConfig) -> None:
        self.model = WhisperModel(
            config.model_dir,
            device=config.device,
            compute_type=config.compute_type,
            num_workers=config.num_workers,
            cpu_threads=config.cpu_threads,
            local_files_only=True,
        )
        self.engine = BatchedEngine(self.model, config.engine_config())
        self.limits = AudioLimits(max_seconds=config.max_audio_seconds)
        self.decodes = DecodeGate(config.max_long_decodes, config.long_decode_seconds)
        self.diarizer = _load_diarizer(config)

    @property
    def multilingual(self) -> bool:
        return bool(self.model.model.is_multilingual)

    def transcribe(
        self,
        request: InferenceRequest,
        *,
        cancelled: Callable[[], bool] = lambda: False,
        on_window: Callable[[WindowResult], None] | None = None,
    ) -> InferenceResult:
        """The whole transcript; ``on_window`` sees each window's segments as soon as they are final."""
        if request.language and request.language != "en" and not self.multilingual:
            raise InferenceFailure(
                400,
                "unsupported_language",
                f"This deployment's model is English-only; it cannot transcribe language '{request.language}'.",
            )
        diarize = request.diarize or bool(request.known_speakers)
        references = self._speaker_references(request) if diarize else {}
        limits = self.limits.for_request(request.max_audio_seconds, request.max_sync_audio_seconds)
        # a part's timestamps count from the file's start: its samples start at its first cut
        offset, end = 0.0, None
        try:
            with self.decodes.admit(limits.max_samples / SAMPLE_RATE, cancelled):
                source = _audio_source(request)
                if request.part is None:
                    audio = decode(source, limits, cancelled)
                else:
                    part = decode_part(source, request.part, limits, cancelled)
                    audio, offset, end = part.samples, part.start, part.end
        except AudioRefused as refused:
            raise InferenceFailure(400, refused.code, refused.message) from refused
        except DecodingCancelled as exc:
            raise InferenceFailure(499, "cancelled", "The caller stopped waiting; the audio was not decoded.") from exc
        except S3ReadFailed as failed:
            raise _storage_failure(request.audio_s3_uri or "", failed.cause) from failed
        if not len(audio):  # a part past the file's end: nothing to transcribe, not an error
            return InferenceResult(
                text="",
                language=request.language or "en",
                duration=0,
                audio_start=offset,
                segments=[],
                words=[] if request.word_timestamps or diarize else None,
                logprobs=[] if request.logprobs else None,
                speaker_turns=[] if diarize and self.diarizer is not None else None,
            )
        seek_offset = round(offset * self.model.frames_per_second)
        options = DecodeOptions(
            language=self._language(request, audio),
            task=request.task.value if self.multilingual else Task.TRANSCRIBE.value,
            initial_prompt=request.prompt or None,
            # 0 or unset: Whisper's schedule, temperature 0 with fallback to hotter ones
            temperature=request.temperature or None,
            # speakers are matched word by word (infery.domain.diarization)
            word_timestamps=request.word_timestamps or diarize,
        )
        segments: list[Segment] = []
        words: list[Word] = []
        logprobs: list[TokenLogprob] = []
        cuts = request.cuts
        rules = CutRules.from_milliseconds(**cuts.model_dump()) if cuts is not None else None
        try:
            for window in self.engine.stream(
                audio, options, cancelled=cancelled, cuts=rules, logprobs=request.logprobs
            ):
                for decoded in window.segments:
                    logprobs.extend(
                        TokenLogprob(token=token, logprob=logprob, bytes=raw, segment=len(segments))
                        for token, logprob, raw in decoded.logprobs
                    )
                    segments.append(
                        Segment(
                            id=len(segments),
                            seek=decoded.seek + seek_offset,
                            start=round(decoded.start + offset, 3),
                            end=round(decoded.end + offset, 3),
                            text=decoded.text,
                            tokens=decoded.tokens,
                            temperature=decoded.temperature,
                            avg_logprob=decoded.avg_logprob,
                            compression_ratio=decoded.compression_ratio,
                            no_speech_prob=decoded.no_speech_prob,
                        )
                    )
                    words.extend(
                        Word(
                            word=word["word"].strip(),
                            start=round(word["start"] + offset, 3),
                            end=round(word["end"] + offset, 3),
                        )
                        for word in decoded.words
                    )
                if on_window is not None:
                    on_window(window)
        except Cancelled as exc:
            raise InferenceFailure(499, "cancelled", "The caller stopped waiting; the rest was not decoded.") from exc
        speaker_turns = None
        if diarize and self.diarizer is not None:
            if cancelled():
                raise InferenceFailure(499, "cancelled", "The caller stopped waiting; speakers were not found.")
            speaker_turns = [
                turn.model_copy(update={"start": round(turn.start + offset, 3), "end": round(turn.end + offset, 3)})
                for turn in self.diarizer.diarize(audio, references)
            ]
        return InferenceResult(
            text="".join(segment.text for segment in segments).strip(),
            language=options.language,
            # a part's length is exactly from its first cut to its last, so the parts' durations add up
            duration=round(len(audio) / SAMPLE_RATE, 3) if end is None else end - offset,
            audio_start=offset,
            segments=segments,
            words=words if request.word_timestamps or diarize else None,
            logprobs=logprobs if request.logprobs else None,
            speaker_turns=speaker_turns,
        )

    def _speaker_references(self, request: InferenceRequest) -> dict[str, Any]:
        """Refuse a diarization this server cannot do, and embed the known speakers' samples (a bad one is refused
        before Whisper runs)."""
        if self.diarizer is None:
            raise InferenceFailure(
                400,
                "diarization_unavailable",
                f"Speaker diarization is not installed on this deployment; nothing was charged. To enable it, "
                f"{SWITCH_HINT}.",
            )
        try:
            return self.diarizer.references(request.known_speakers)
        except DiarizationRefused as refused:
            raise InferenceFailure(400, refused.code, refused.message) from refused

    def _language(self, request: InferenceRequest, audio: Any) -> str:
        if not self.multilingual:
            return "en"
        if request.language:
            return request.language
        language, _, _ = self.model.detect_language(audio=audio[: 30 * SAMPLE_RATE])
        return str(language)


def _load_diarizer(config: ServerConfig) -> SpeakerDiarizer | None:
    """The diarization model, loaded once at start-up: when installed ("auto"), required ("on"), or never ("off")."""
    if config.diarization == "off" or (config.diarization == "auto" and not diarization_installed()):
        logger.info("speaker diarization off (--diarization %s)", config.diarization)
        return None
    started = time.monotonic()
    diarizer = SpeakerDiarizer(config.device)
    logger.info("speaker diarization loaded in %.1f s", time.monotonic() - started)
    return diarizer


class ProgressReporter:
    """Writes a job's progress next to its output, at most every few seconds, for the API to show."""

    def __init__(self, uri: str, every_seconds: float = 2.0) -> None:
        self.uri = uri
        self.every_seconds = every_seconds
        self._last = 0.0

    def __call__(self, window: WindowResult) -> None:
        now = time.monotonic()
        last_window = window.window.index + 1 == window.windows_total
        if now - self._last < self.every_seconds or last_window:
            return
        self._last = now
        bucket, _, key = self.uri.removeprefix("s3://").partition("/")
        progress = {
            "windows_done": window.window.index + 1,
            "windows_total": window.windows_total,
            "seconds_done": round(window.window.end / SAMPLE_RATE, 3),
        }
        try:
            _s3_client().put_object(
                Bucket=bucket, Key=key, Body=json.dumps(progress).encode(), ContentType="application/json"
            )
        except Exception:  # progress is a courtesy: never fail a transcription over it
            logger.warning("progress not written", exc_info=True)


def _audio_source(request: InferenceRequest) -> bytes | RangedObject:
    """The request's audio: by reference, the pinned S3 object read by ranges (never whole in memory)."""
    if request.audio_s3_uri:
        bucket, _, key = request.audio_s3_uri.removeprefix("s3://").partition("/")
        try:
            return RangedObject(
                _s3_client(), bucket, key, etag=request.audio_s3_etag, version_id=request.audio_s3_version_id
            )
        except S3ReadFailed as failed:
            raise _storage_failure(request.audio_s3_uri, failed.cause) from failed
    try:
        return base64.b64decode(request.audio or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InferenceFailure(400, "invalid_request", "'audio' is not valid base64.") from exc


@lru_cache(maxsize=1)
def _s3_client() -> Any:
    import boto3  # only needed for audio sent by reference; AWS_ENDPOINT_URL_S3 points it at moto locally

    return boto3.client("s3")


def _storage_failure(uri: str, exc: Exception) -> InferenceFailure:
    """What a failed read of the audio object tells the caller: changed since it was checked (S3's 412, at the
    first read or any later one), unreadable, or storage failing."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        logger.warning("S3 cannot be reached: %s", exc)
        return InferenceFailure(503, "storage_unavailable", "Storage cannot be reached right now.")
    code = exc.response.get("Error", {}).get("Code", "")
    if code in ("PreconditionFailed", "412"):
        return InferenceFailure(
            400,
            "audio_changed",
            "The uploaded file changed after it was checked; nothing was charged. Upload it again with a new upload.",
        )
    if code in ("NoSuchKey", "404", "NoSuchBucket", "AccessDenied", "403", "NoSuchVersion"):
        logger.warning("audio object %s unreadable: %s", uri, code)
        return InferenceFailure(400, "invalid_request", "The audio object cannot be read; upload it again.")
    logger.warning("S3 failed while reading %s: %s", uri, code)
    return InferenceFailure(503, "storage_unavailable", "Storage failed while reading the audio.")


class InferenceHandler(BaseHTTPRequestHandler):
    server: WhisperHTTPServer
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: the headers and the body are two writes; on a kept-alive connection (SageMaker's front end, the
    # Lambda's boto3 pool) Nagle's algorithm holds the body until the caller's delayed ACK, up to 40 ms per answer
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        logger.info("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/ping":
            self._send(200, b'{"status": "ok"}')
        else:
            self._send(404, b'{"error": "not found", "code": "not_found"}')

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/invocations":
            status, payload = self._invoke(body)
            self._send(status, payload)
            return
        runtime_match = _RUNTIME_PATH.match(self.path)
        if runtime_match:
            self._invoke_as_sagemaker_runtime(runtime_match.group(1), body)
            return
        self._send(404, b'{"error": "not found", "code": "not_found"}')

    def _client_gone(self) -> bool:
        """True once the caller closed its connection (a timeout or a disconnect): nobody waits for the rest."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _invoke(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = InferenceRequest.model_validate_json(body)
            progress = ProgressReporter(request.progress_s3_uri) if request.progress_s3_uri else None
            result = self.server.transcriber.transcribe(request, cancelled=self._client_gone, on_window=progress)
            return 200, result.model_dump_json().encode()
        except ValidationError as exc:
            return 400, InferenceFailure(400, "invalid_request", f"Invalid inference request: {exc}").to_json()
        except InferenceFailure as exc:
            return exc.status, exc.to_json()
        except Exception:
            logger.exception("inference failed")
            return 500, InferenceFailure(500, "inference_failed", "The model failed on this request.").to_json()
        finally:
            release_free_memory()

    def _invoke_as_sagemaker_runtime(self, endpoint_name: str, body: bytes) -> None:
        expected = self.server.config.endpoint_name
        if expected and endpoint_name != expected:
            self._send(
                400,
                json.dumps({"message": f"Endpoint {endpoint_name} not found."}).encode(),
                {"x-amzn-ErrorType": "ValidationError"},
            )
            return
        status, payload = self._invoke(body)
        if status == 200:
            self._send(200, payload)
            return
        kind = "client" if status < 500 else "server"
        wrapped = {
            "ErrorCode": f"{kind.upper()}_ERROR_FROM_MODEL",
            "Message": f'Received {kind} error ({status}) from primary with message "{payload.decode()}".',
            "OriginalMessage": payload.decode(),
            "OriginalStatusCode": status,
            "LogStreamArn": f"arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/{endpoint_name}",
        }
        self._send(424, json.dumps(wrapped).encode(), {"x-amzn-ErrorType": "ModelError"})

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        try:
            self._write(status, payload, headers)
        except (BrokenPipeError, ConnectionResetError):
            logger.info("the caller left before its answer was sent")

    def _write(self, status: int, payload: bytes, headers: dict[str, str] | None) -> None:
        # 499 (the caller closed the connection) is nginx's, not in HTTPStatus: nobody reads it anyway
        self.send_response(status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class WhisperHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, config: ServerConfig, transcriber: WhisperTranscriber) -> None:
        self.config = config
        self.transcriber = transcriber
        super().__init__((config.host, config.port), InferenceHandler)


def serve(config: ServerConfig) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    keep_large_buffers_out_of_the_heap()
    transcriber = WhisperTranscriber(config)
    server = WhisperHTTPServer(config, transcriber)
    logger.info("Whisper model from %s ready on %s:%s", config.model_dir, config.host, server.server_port)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        logger.info("stopping")
    finally:
        server.server_close()
        transcriber.engine.close(timeout=10)  # let a decode in flight end before the model is freed


if __name__ == "__main__":
    serve(config_from_args())
