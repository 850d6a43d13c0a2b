# Two commands from nothing: `make demo` and `make test`. Each builds .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned and installed first: 2.13.0 is a CPU build that lies on this machine's disk;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test lint bench bench-sae clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/tour.py --quick

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup -q

lint: $(STAMP)
	$(VENV)/bin/ruff check superpose experiments benchmarks tests

bench: $(STAMP)
	$(PY) benchmarks/toy_speed.py

# SAE speed/quality against SAELens's own trainer. sae-lens needs transformer-lens < 4, so it
# gets its own environment (.venv-saelens, gitignored), torch pinned first as above.
SAELENS_VENV := .venv-saelens
SAELENS_STAMP := $(SAELENS_VENV)/.installed
$(SAELENS_STAMP): pyproject.toml
	test -x $(SAELENS_VENV)/bin/python || $(PYTHON) -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(SAELENS_VENV)/bin/pip install --quiet --disable-pip-version-check "sae-lens" \
		"transformer-lens<4" -e .
	touch $(SAELENS_STAMP)

bench-sae: $(SAELENS_STAMP)
	$(SAELENS_VENV)/bin/python benchmarks/sae_speed.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
