"""The model container has the layer's infery package but not the API's dependencies (endpoint/requirements.txt):
its server imports the domain's diarization labels without mutagen, which only the API's audio checks use."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BLOCKED = """
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "mutagen":
            raise ImportError("not in the model image: " + name)
sys.meta_path.insert(0, Blocked())
import whisper_server, diarization
"""


def test_the_model_server_imports_without_the_apis_dependencies() -> None:
    run = subprocess.run(
        [sys.executable, "-c", BLOCKED],
        cwd=ROOT / "endpoint",
        env={"PYTHONPATH": f"{ROOT / 'endpoint'}:{ROOT / 'layers' / 'common' / 'python'}"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-2000:]
