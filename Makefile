# Quick start:  make demo   (set up and write demo.wav)   |   make test   (set up and run the tests)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# torch 2.13.0 is the CPU wheel the tests run with; the package itself accepts torch >= 2.4.
TORCH_SPEC ?= torch==2.13.0

.PHONY: setup setup-ui demo test lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q "$(TORCH_SPEC)" || $(PIP) install -q "torch>=2.4"
	$(PIP) install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

# The web page (`jukebox serve`) and its browser test: Gradio plus Playwright (which drives the system's
# Chromium, `apt-get install chromium`; it never downloads a browser).
setup-ui: setup
	$(PIP) install -q -e ".[dev,ui]" playwright

demo: setup
	$(PY) -m jukebox.demo demo.wav

test: setup
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check src tests benchmarks recipes research

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
