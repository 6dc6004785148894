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
	# Passive OpenMP waiting: a background training job and the app share the CPU without spinning.
	# dashboard.serve is `streamlit run dashboard/app.py` with the default model loading from the start.
	OMP_WAIT_POLICY=PASSIVE $(PY) -m dashboard.serve --server.port $(PORT)

test: setup
	$(PY) -m pytest

# Benchmarks print their figures and rewrite their sections of docs/measurements.md.
bench: setup
	$(PY) bench/inference.py
	$(PY) bench/ood.py
	$(PY) bench/models.py
	$(PY) bench/training.py
	$(PY) bench/evaluate.py
	$(PY) bench/precision.py
	$(PY) bench/bombs.py
	# The cold start and the 8-session load are measured in Debian's Chromium (apt-get install chromium).
	if [ -x /usr/bin/chromium ]; then $(PY) bench/cold_start.py && $(PY) bench/load.py; \
	else echo "cold start and load: no /usr/bin/chromium, skipped"; fi

# Reproduce the shipped models (times are for 2 CPU cores; see README "Models").
# --shipped writes into checkpoints/ (and its checksum manifest) instead of the site's model folder.
TRAIN := $(PY) -m core train $(DATA) --precision fp32 --shipped  # the shipped models were trained in fp32
models: setup
	$(TRAIN) --arch efficientnet_lite0 --epochs 5 --image-size 160 --augment --target-sensitivity 0.98 --name pneumonia-efficientnet_lite0 --set-default --override-floor
	$(TRAIN) --arch logistic --epochs 15 --image-size 64 --no-augment --name pneumonia-logistic
	$(TRAIN) --arch mlp --epochs 15 --image-size 64 --no-augment --name pneumonia-mlp
	$(TRAIN) --arch cnn5 --epochs 8 --image-size 128 --augment --name pneumonia-cnn5
	$(TRAIN) --arch resnet18 --epochs 6 --image-size 160 --no-augment --name pneumonia-resnet18-noaug
	$(TRAIN) --arch resnet18 --epochs 6 --image-size 160 --augment --name pneumonia-resnet18-aug
	$(PY) -m core.serving.fit_chest_check
	$(PY) -m core.store.manifest  # the detector's files changed too: re-sign every shipped file
	$(PY) bench/models.py

clean-venv:
	rm -rf $(VENV)
