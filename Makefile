# Two entry points on a fresh machine: `make demo` and `make test`. Both bootstrap .venv
# (idempotent: reinstalls only when pyproject.toml or constraints.txt change).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.niche-installed
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-slow bench bench-peers-venv bench-peers venv clean browser postgres

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel (an unpinned torch would pull a multi-GB CUDA build)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/niche demo

test: $(STAMP) browser postgres
	$(BIN)/python -m pytest -q

# The page test drives Debian's chromium; install it where we can, else the test skips.
browser:
	@scripts/install-browser.sh

# The monitor's PostgreSQL tests start a throw-away cluster from Debian's binaries; install them where we can.
postgres:
	@scripts/install-postgres.sh

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# All benchmarks (hours on 2 cores; each step caches its results, rerun to resume), then BENCHMARKS.md.
bench: $(STAMP)
	$(BIN)/python benchmarks/run.py
	$(BIN)/python benchmarks/serve_load.py
	$(BIN)/python benchmarks/compress.py
	$(BIN)/python benchmarks/run.py --render

# The peers of benchmarks/peers.py (fastText, model2vec, SetFit) in their own .venv-peers: model2vec's
# distillation needs transformers<5.4, niche's .venv has 5.23. Pins: benchmarks/peers-constraints.txt.
bench-peers-venv:
	PYTHON=$(PYTHON) benchmarks/peers-venv.sh

# niche vs tuned peers on the shared datasets (about 2 h on 2 cores; cached per dataset and system).
bench-peers: $(STAMP) bench-peers-venv
	nice -n 10 $(BIN)/python benchmarks/peers.py
	$(BIN)/python benchmarks/run.py --render

clean:
	rm -rf $(VENV) runs
