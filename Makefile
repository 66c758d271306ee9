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
PIP_TOOLS := pip-tools==7.6.2

.PHONY: demo test test-compose bench lint lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The lock first, then the project itself on top of it, editable and with nothing more.
# --no-build-isolation: the build backend is the one the lock pins, not the newest one.
$(VENV)/.installed: $(LOCK) pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The stamps' former names: one venv now serves running and testing alike.
$(VENV)/.installed-run $(VENV)/.installed-dev: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/ladder demo $(ARGS)

# The whole bench by default, Celery's peers included; ARGS replaces that (--sweep, ...).
bench: $(VENV)/.installed
	$(BIN)/ladder bench $(or $(ARGS),--peers)

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(ARGS)

# compose.yaml on a real Docker Engine, which the harness (tests/engine.py) sets up: root only.
test-compose: $(VENV)/.installed
	$(BIN)/python -m pytest -s -m engine tests/test_compose_engine.py $(ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# pip-tools from a throwaway venv resolves the newest versions pyproject.toml allows. pip's
# configuration files are left out, so that only PyPI's own files are hashed.
PIP_COMPILE = env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND='make lock' \
	"$$tmp/venv/bin/pip-compile" --quiet --upgrade --generate-hashes --allow-unsafe \
	--all-build-deps --strip-extras --no-emit-index-url --no-emit-find-links

lock:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "make lock needs Python 3.11")'
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp" queue_ladder.egg-info' EXIT && \
	$(PYTHON) -m venv "$$tmp/venv" && \
	"$$tmp/venv/bin/python" -m pip install --quiet $(PIP_TOOLS) && \
	$(PIP_COMPILE) --all-extras -o $(LOCK) pyproject.toml && \
	$(PIP_COMPILE) -c $(LOCK) -o $(IMAGE_LOCK) pyproject.toml

clean:
	rm -rf $(VENV) results .pytest_cache .mypy_cache .ruff_cache
