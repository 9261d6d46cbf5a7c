# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
FS     := $(VENV)/bin/fakesegment
DEMO   := data_cache/demo
STAMP  := $(VENV)/.installed

.PHONY: setup test demo bench clean-demo

setup: $(STAMP)

# Idempotent: re-installs only when the project or its pins change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(FS) probe --out $(DEMO)/probe --n 12 --seed 0
	$(FS) extract --real $(DEMO)/probe/real --synthetic $(DEMO)/probe/synthetic \
		--store $(DEMO)/store.zarr --weights auto
	@echo "demo store: $(DEMO)/store.zarr"

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-demo:
	rm -rf $(DEMO)
