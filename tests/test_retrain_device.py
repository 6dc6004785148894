"""The Retrain page's device and precision choice (issue 11): it shows what this machine has, offers CUDA only
where a GPU was found, and hands the choice to the job, which records where and how it trained."""
from __future__ import annotations

import json

import pytest
import torch
from e2e_support import ROOT, TRAIN_DIR, quick_checkpoints, require
from streamlit.testing.v1 import AppTest

from core.jobs import jobs as jobs_module

APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def page(tmp_path, settings_env, monkeypatch):
    """The Retrain page with a registry and jobs folder of its own; ``start_job`` records what it was given."""
    settings_env(CXR_MODELS=str(quick_checkpoints(tmp_path / "checkpoints")), CXR_JOBS=str(tmp_path / "jobs"),
                 CXR_DATA_DIR=str(require(TRAIN_DIR, "the Kermany train split")))
    started = []
    monkeypatch.setattr(jobs_module, "start_job", lambda data_dir, config, **who: started.append(config))
    at = AppTest.from_file(APP, default_timeout=180)
    at.switch_page("views/retrain.py")
    at.run()
    assert not at.exception
    return at, started


def _select(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label)


@pytest.mark.parametrize("gpus, bf16, options, found, precision", [
    (0, True, ["Automatic (here: CPU)", "CPU"], "no CUDA GPU; a CPU with 3 threads that computes bf16 natively",
     "bf16 (faster where the hardware computes it natively)"),
    (0, False, ["Automatic (here: CPU)", "CPU"], "no CUDA GPU; a CPU with 3 threads that has no native bf16 (trains "
     "in fp32)", "bf16 (emulated on this CPU: probably slower)"),
    (2, False, ["Automatic (here: CUDA)", "CPU", "CUDA GPU"], "2 CUDA GPUs; a CPU with 3 threads that has no native "
     "bf16 (trains in fp32)", "bf16 (faster where the hardware computes it natively)")])
def test_the_form_shows_what_was_found_and_offers_only_that(page, monkeypatch, gpus, bf16, options, found, precision):
    """Each machine as the page would find it (a test review: CI has no GPU, and its CPU's bf16 chose which words
    were checked, against the very function the page calls)."""
    from core.models import device as device_policy

    at, _ = page
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    monkeypatch.setattr(device_policy, "cpu_has_bf16", lambda: bf16)
    at.run()
    device = _select(at, "Device")
    assert device.value == "auto" and device.options == options  # no CUDA to choose where there is none
    assert _select(at, "Training precision").value == "auto"
    assert precision in _select(at, "Training precision").options
    assert next(c.value for c in at.caption if c.value.startswith("Found:")) == f"Found: {found}."


def test_the_choice_reaches_the_job(page):
    at, started = page
    _select(at, "Device").set_value("cpu")
    _select(at, "Training precision").set_value("fp32")
    at.get("form_submit_button")[0].click()
    at.run()
    assert not at.exception
    (config,) = started
    assert (config.device, config.precision) == ("cpu", "fp32")
    stored = json.loads(config.model_dump_json())  # what the job's config.json holds
    assert (stored["device"], stored["precision"]) == ("cpu", "fp32")
