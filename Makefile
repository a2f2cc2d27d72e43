# The two commands a newcomer needs (see README.md):
#   make book   set up .venv if needed, build the web book with warnings as errors, print where it is
#   make test   set up .venv if needed, run the whole test suite (package, graders, widgets, notebooks, book)
# Everything else here is for maintainers.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-stamp
W7     := $(VENV)/ipywidgets7
BOOK_HTML := _build/html/index.html

.DEFAULT_GOAL := help
.PHONY: help env book test test-fast lab execute check lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

# --- environment ---------------------------------------------------------------------------
$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else \
	  "Python 3.11 or newer is needed, found %d.%d at %s (try: make PYTHON=python3.11 ...)" % (v[0], v[1], sys.executable))'
	@test -x $(PY) || { echo "Creating $(VENV) ..."; $(PYTHON) -m venv $(VENV); }
	@echo "Installing pinned requirements into $(VENV) (about a minute the first time) ..."
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@touch $@

# ipywidgets 7.7 is what Colab runs; the widget tests run once more against it from this folder.
$(W7)/.stamp: tests/requirements-ipywidgets7.txt | $(STAMP)
	rm -rf $(W7)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(W7) -r $<
	@touch $@

# Triton (about 1 GB installed) is needed only by the tests of the teaching kernel, run under its CPU interpreter.
TRITON := $(VENV)/.triton-stamp
$(TRITON): tests/requirements-triton.txt | $(STAMP)
	@echo "Installing Triton for the kernel tests (about a minute the first time) ..."
	$(PY) -m pip install --quiet --disable-pip-version-check -r $<
	@touch $@

env: $(STAMP)  ## create .venv and install everything (done by book/test too)

# --- the book --------------------------------------------------------------------------------
book: $(STAMP)  ## build the web book from the committed notebooks (warnings are errors)
	$(BIN)/jupyter-book build . --warningiserror --nitpick --keep-going
	@echo ""
	@echo "The book is at: file://$(abspath $(BOOK_HTML))"

# --- tests -----------------------------------------------------------------------------------
test: $(STAMP) $(W7)/.stamp $(TRITON)  ## the whole suite: unit, graders, widgets (ipywidgets 8 and 7.7), nbval, lint, book
	$(BIN)/ruff check .
	$(PY) tools/nbtools.py check notebooks/*.ipynb
	ATTN_COURSE_IPYWIDGETS7=$(abspath $(W7)) $(PY) -m pytest

test-fast: $(STAMP)  ## package, grader and widget tests only (no notebooks, no book)
	$(PY) -m pytest tests -p no:nbval -m "not slow" -o addopts="-ra"

# --- notebooks -------------------------------------------------------------------------------
# JupyterLab refuses to run as root (containers, Codespaces) unless told to.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root)
lab: $(STAMP)  ## open the chapters in JupyterLab
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

execute: $(STAMP)  ## re-execute notebooks in place (NB=notebooks/01_x.ipynb for one), deterministic, metadata stripped
	$(PY) tools/nbtools.py execute $(or $(NB),notebooks/*.ipynb)

check: $(STAMP)  ## check notebook conventions without running anything
	$(PY) tools/nbtools.py check notebooks/*.ipynb

lint: $(STAMP)  ## ruff (with B015: comparisons that assert nothing)
	$(BIN)/ruff check .

BENCH ?= mha local
bench: $(STAMP)  ## benchmarks printing ratios against baselines run alongside (BENCH="mha", ARGS="--device cuda")
	@for name in $(BENCH); do echo "== python -m attn_course.bench $$name $(ARGS)"; \
	  $(PY) -m attn_course.bench $$name $(ARGS) || exit 1; done

clean:  ## remove the built book and caches (keeps .venv)
	rm -rf _build .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './$(VENV)/*' -exec rm -rf {} +
