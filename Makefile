# Two commands from nothing: `make demo` and `make test`. Each builds .venv when it is missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch is pinned and installed first: 2.13.0 is a CPU build that lies on this machine's disk;
# an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-unit test-science lint bench bench-sae clean-venv

# sae-lens needs transformer-lens < 4, so it gets its own environment (.venv-saelens, gitignored),
# torch pinned first as above. Used by the interop test tier and by the SAE benchmark.
SAELENS_VENV := .venv-saelens
SAELENS_STAMP := $(SAELENS_VENV)/.installed

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) experiments/tour.py --quick

# Two tiers. unit: every test not marked `science`, in .venv (≤ 3 minutes on 2 cores).
# science: the tests marked `science` (quick experiments, notebooks, torchrun, the README) in
# .venv, then the interop tier against the real sae-lens and transformer-lens 3.9
# (.venv-saelens): tests/interop/ plus the TransformerLens parity tests, which must hold on both
# major versions. `make test` runs both tiers, unit first.
PYTEST := -m pytest -n 2 --dist loadgroup -q
INTEROP := tests/interop tests/test_tl_hooks.py tests/test_tl_activation_cache.py tests/test_gpt_tl.py \
	tests/test_readme_tl.py
test: test-unit test-science

test-unit: $(STAMP)
	$(PY) $(PYTEST) -m "not science"

test-science: $(STAMP) $(SAELENS_STAMP)
	$(PY) $(PYTEST) -m science
	$(SAELENS_VENV)/bin/python $(PYTEST) $(INTEROP)

lint: $(STAMP)
	$(VENV)/bin/ruff check superpose experiments benchmarks tests

bench: $(STAMP)
	$(PY) benchmarks/toy_speed.py

$(SAELENS_STAMP): pyproject.toml
	test -x $(SAELENS_VENV)/bin/python || $(PYTHON) -m venv $(SAELENS_VENV)
	$(SAELENS_VENV)/bin/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(SAELENS_VENV)/bin/pip install --quiet --disable-pip-version-check "sae-lens==6.54.12" \
		"transformer-lens==3.9.0" -e ".[dev]"
	touch $(SAELENS_STAMP)

bench-sae: $(SAELENS_STAMP)
	$(SAELENS_VENV)/bin/python benchmarks/sae_speed.py $(ARGS)

clean-venv:
	rm -rf $(VENV)
