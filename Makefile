# `make run` and `make test` do all set-up on a fresh machine: .venv is created when missing and
# re-installed whenever requirements.txt changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DATA ?= ../shared/data/kermany-224/train
PORT ?= 8501

.PHONY: setup run test bench models clean-venv

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(VENV)/bin/streamlit run dashboard/app.py --server.port $(PORT)

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) bench/inference.py

clean-venv:
	rm -rf $(VENV)
