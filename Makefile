# Two entry points for a fresh machine: `make demo` and `make test`. Both create .venv, install edgekit
# with the extras they need (and the Debian packages the tests and demo use, when missing), then run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgekit-installed

.PHONY: demo test lint venv system-deps clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull GBs of CUDA wheels.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[all]"
	touch $(STAMP)

system-deps:
	bash scripts/system-deps.sh

demo: system-deps venv
	$(VENV)/bin/edgekit demo

test: system-deps venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .demo .cache build dist *.egg-info
