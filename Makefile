# Each target sets up .venv on first use and is quick once it exists.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
ARGS ?=

# Exact versions with hashes, for CPython 3.11 on Linux x86_64 (this machine and the image),
# both made by `make lock`. LOCK: the project with every extra, for make and CI.
# IMAGE_LOCK: what the image needs (no extra), at the same versions.
LOCK := requirements/all.txt
IMAGE_LOCK := requirements/image.txt
UV := uv==0.13.8

.PHONY: demo test test-compose bench lint lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The lock first, then the project itself on top of it, editable and with nothing more.
# --no-build-isolation: the build backend is the one the lock pins, not the newest one.
# pip check: a requirement that pyproject.toml gained without `make lock` stops here.
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m pip check
	touch $@

# The stamps' former names: one venv now serves running and testing alike.
$(VENV)/.installed-run $(VENV)/.installed-dev: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/ladder demo $(ARGS)

# The whole bench by default, Celery's peers included; ARGS replaces that (sweep, memory, ...).
bench: $(VENV)/.installed
	$(BIN)/ladder bench $(or $(ARGS),rungs --peers)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

# compose.yaml on a real Docker Engine, which the harness (tests/engine.py) sets up: root only.
test-compose: $(VENV)/.installed
	$(BIN)/python -m pytest -s -m engine tests/test_compose_engine.py $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy docker/setup.py
	$(BIN)/lint-imports

# uv, from a throwaway venv, resolves the newest versions pyproject.toml allows, for CPython
# 3.11 from 3.11.0 on (the image's may be older than this machine's) on Linux x86_64. Markers
# stay in, so each Python takes only what it needs. The build backend, from build-system.requires
# on standard input, is pinned too.
UV_COMPILE = $(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' | \
	"$$tmp/venv/bin/uv" pip compile --quiet --upgrade --generate-hashes --no-strip-markers \
	--python-version 3.11 --python-platform x86_64-unknown-linux-gnu --custom-compile-command 'make lock'

lock:
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet $(UV) && \
	$(UV_COMPILE) --all-extras -o $(LOCK) pyproject.toml - && \
	$(UV_COMPILE) -c $(LOCK) -o $(IMAGE_LOCK) pyproject.toml -

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
