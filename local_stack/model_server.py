"""The Whisper model server (endpoint/whisper_server.py) as the local stack runs it: quiet unless --verbose.

The server logs every request and every decoded file at INFO; `make serve` shows only its warnings and
errors, so the API's own request lines stay readable. `python -m local_stack --verbose` passes
INFERY_LOCAL_VERBOSE=1 and everything is logged again. Otherwise this is the container's server, unchanged.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

ENDPOINT_DIR = Path(__file__).resolve().parents[1] / "endpoint"
# whisper_server's own format: its basicConfig (INFO) does nothing once the root logger has a handler
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def main() -> None:
    sys.path.insert(0, str(ENDPOINT_DIR))  # as when whisper_server.py is run as a script: its siblings import
    import whisper_server

    if os.environ.get("INFERY_LOCAL_VERBOSE") != "1":
        # the server, its engine, faster-whisper and botocore log every request and file at INFO
        logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    whisper_server.serve(whisper_server.config_from_args())


if __name__ == "__main__":
    main()
