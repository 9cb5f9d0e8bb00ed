# The README's commands. `make run` and `make test` work on a fresh clone:
# they create .venv and install what is needed first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test test-load check lint-docker bench screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: install
	$(BIN)/llm-pessoal $(ARGS)

# The suite on every core (at most 4 workers; pytest-xdist), tests that share a module
# fixture (an Xvfb display, a loaded pipeline) on one worker (xdist_group). One process for
# debugging: make test PYTEST_ARGS='-n 0 tests/test_foo.py'. Bytecode files are written even
# where the environment says not to (tests/conftest.py says why; the plugins need it here).
PYTEST_XDIST := -n auto --maxprocesses=4 --dist loadgroup

test: install
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest $(PYTEST_XDIST) $(PYTEST_ARGS)

# The suite three times in a row while two busy loops keep both cores loaded, as on a shared
# CI machine: a test that waits for a passing frame instead of a state fails here.
test-load: install
	@(while :; do :; done) & b1=$$!; (while :; do :; done) & b2=$$!; \
	trap 'kill $$b1 $$b2' EXIT; \
	for run in 1 2 3; do \
		echo "test-load: run $$run of 3, both cores busy"; \
		$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS) || exit 1; \
	done

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The Docker files, linted without a Docker engine: hadolint, the compose files against the
# compose specification's schema, and `docker compose config` where the compose plugin is.
lint-docker: install
	$(BIN)/hadolint Dockerfile
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.gpu.yml
	if docker compose version >/dev/null 2>&1; then \
		docker compose -f docker-compose.yml -f docker-compose.gpu.yml config --quiet; \
	else echo "lint-docker: no 'docker compose' here; skipped 'docker compose config'"; fi

# The README's screenshots: the real app against the tests' fake Ollama, saved as SVG.
screenshots: install
	$(BIN)/python docs/screenshots.py

bench: install
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/stream.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
