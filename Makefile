# sdxlab: every target creates .venv on first use and installs the project into it.
#   make demo   run the whole workbook on the bundled sample photos with the tiny offline model
#   make test   lint, then run the tests (library, notebooks, browser)
#   make lab    JupyterLab on the notebooks, on localhost with a token
#   make bench  the benchmarks in bench/ (GPU figures need a GPU; on a CPU they run the tiny model)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
STAMP := $(VENV)/.sdxlab-installed
PROFILE ?= demo
ARGS ?=

.PHONY: demo test lab bench lint venv clean-venv

venv: $(STAMP)

# torch first: the CUDA build where an NVIDIA GPU is present, otherwise the much smaller CPU build
# (a local CPU wheel when the machine has one, else PyTorch's CPU index).
# open_clip_torch is installed without dependencies: only its CLIP vocabulary file is used, and its
# torchvision dependency would pull a second, incompatible torch build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install "torch==$(TORCH_VERSION)"; \
	else \
		$(PY) -m pip install "torch==$(TORCH_VERSION)+cpu" 2>/dev/null || \
		$(PY) -m pip install "torch==$(TORCH_VERSION)" --index-url $(TORCH_CPU_INDEX) --extra-index-url https://pypi.org/simple; \
	fi
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install --no-deps "open_clip_torch>=2.24"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m sdxlab run --profile $(PROFILE) $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check lib tests bench notebooks
	$(VENV)/bin/ruff format --check lib tests bench data

# nbmake first runs every notebook as committed (demo defaults) on copies in a temporary folder, writing into
# a temporary outputs folder; the executed copies are kept in the run folder (outputs/demo/notebooks/, where
# papermill runs put theirs) and pytest's notebook tests read what that run recorded, so the demo runs once.
# (`pytest` alone runs the demo itself, with papermill.)
# The browser test drives JupyterLab in Debian's chromium (Playwright cannot download its own browser on CI):
# installed here when missing and running as root (CI); otherwise that one test is skipped and says why.
test: lint
	command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update && apt-get install -y chromium; } \
		|| echo "chromium is not installed (apt-get install -y chromium): the browser test will be skipped"
	scratch="$$(mktemp -d)" && mkdir "$$scratch/notebooks" && cp notebooks/*.ipynb "$$scratch/notebooks/" \
		&& SDXLAB_PROJECT="$(CURDIR)" SDXLAB_OUTPUTS="$$scratch/outputs" $(PY) -m pytest --nbmake --overwrite \
			--nbmake-timeout=600 -p no:cacheprovider -q --rootdir="$$scratch" "$$scratch/notebooks" \
		&& mv "$$scratch/notebooks" "$$scratch/outputs/demo/notebooks" \
		&& SDXLAB_TEST_DEMO_RUN="$$scratch/outputs/demo" $(PY) -m pytest $(ARGS)

# Bound to localhost with Jupyter's login token (printed below); the whole project is browsable so
# outputs/ can be opened next to the notebooks. Root (containers, CI) needs --allow-root.
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 --no-browser --ServerApp.root_dir=. \
		--LabApp.default_url=/lab/tree/notebooks $(if $(filter 0,$(shell id -u)),--allow-root,)

bench: $(STAMP)
	for script in bench/bench_*.py; do $(PY) $$script || exit 1; done

clean-venv:
	rm -rf $(VENV)
