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

.PHONY: serve test lint unit integration e2e system-deps clean help

help:
	@echo "make serve   run the local stack on http://127.0.0.1:$${INFERY_PORT:-3000}/v1"
	@echo "make test    lint (ruff, cfn-lint, sam validate --lint) and run every test"
	@echo "make unit | integration | e2e   one test layer"

$(DEPS_STAMP): requirements-dev.txt pyproject.toml functions/*/requirements.txt endpoint/requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
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
	@missing=""; for tool in espeak-ng chromium chromedriver; do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng chromium chromium-driver >/dev/null; \
	  else echo "needed for the tests:$$missing: sudo apt-get install espeak-ng chromium chromium-driver (or brew install espeak-ng chromium chromedriver)"; exit 1; fi; fi

serve: $(DEPS_STAMP)
	$(PY) -m local_stack

lint: $(DEPS_STAMP) $(SAM_STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=$${AWS_DEFAULT_REGION:-us-east-1} $(SAM_VENV)/bin/sam validate --lint

test: lint system-deps
	$(PY) -m pytest

unit: $(DEPS_STAMP)
	$(PY) -m pytest tests/unit

integration: $(DEPS_STAMP)
	$(PY) -m pytest tests/integration

e2e: $(DEPS_STAMP) system-deps
	$(PY) -m pytest tests/e2e

clean:
	rm -rf $(VENV) $(SAM_VENV) .pytest_cache .ruff_cache .aws-sam
