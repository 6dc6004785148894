"""Registration interrupted (a resume review): a run killed after registering its version and before deleting its
finished state registered the same model again on resume (the version now records the run's id, and the resume
finds it); a manifest that could not be written left unsigned files in the shipped folder."""
from __future__ import annotations

import pytest
import test_model_tiers
import test_resume
from test_resume import TINY

from core.admin.audit import read_actions
from core.store.records import read_model_record
from core.store.registry import find_model
from core.training import resume
from core.training.saved_runs import saved_runs
from core.training.train import train

site = test_resume.site  # that file's fixture: a models folder of the test's own
tiers = test_model_tiers.tiers  # a shipped folder with its manifest, and a site folder


@pytest.fixture(autouse=True)
def own_audit_log(tmp_path, settings_env):
    """An audit log of the test's own: the session's holds other tests' ``train`` lines."""
    settings_env(CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))


def test_a_resume_after_a_kill_between_registering_and_forgetting_registers_nothing_again(kermany_train, site,
                                                                                          monkeypatch):
    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # stands for SIGKILL: the version and its audit line are written, the state stays

    with monkeypatch.context() as patched:
        patched.setattr(resume, "discard_saved_run", killed)
        with pytest.raises(KeyboardInterrupt):
            train(kermany_train, TINY, directory=site)
    (written,) = site.glob("pneumonia-logistic-v*.json")
    first = read_model_record(written)
    assert first.training.run_id and [run.finished for run in saved_runs()] == [True]
    again = train(kermany_train, TINY, directory=site, resume=True)
    assert again.name == first.name and list(site.glob("pneumonia-logistic-v*.json")) == [written]
    assert saved_runs() == [] and [a.action for a in read_actions(limit=10)].count("train") == 1
    assert find_model(first.name).is_default  # the promotion the kill left undone (a re-read of the change)
    fresh = train(kermany_train, TINY, directory=site)  # a new run of the same settings is a new version
    assert fresh.name != first.name and fresh.training.run_id != first.training.run_id


def test_a_kill_before_the_audit_line_is_recorded_when_the_run_is_resumed(kermany_train, site, monkeypatch):
    """A re-read of the change: the resume that found the version registered skipped what the kill had left
    undone, the ``train`` audit line and the task's first default."""
    from core.training import train as train_module

    def killed(action, *args, **details):
        raise KeyboardInterrupt  # the version's files are written; its audit line is not

    with monkeypatch.context() as patched:
        patched.setattr(train_module, "record_action", killed)
        with pytest.raises(KeyboardInterrupt):
            train(kermany_train, TINY, directory=site)
    assert [a.action for a in read_actions(limit=10)].count("train") == 0
    record = train(kermany_train, TINY, directory=site, resume=True)
    (line,) = [a for a in read_actions(limit=10) if a.action == "train"]
    assert (line.model, line.details["run"], line.details["settled"]) == (record.name, record.training.run_id, True)
    assert find_model(record.name).is_default and saved_runs() == []


def test_a_recalibrated_copy_is_not_taken_for_the_run_s_own_version(monkeypatch):
    """A re-read of the change: a calibrated copy keeps its training record, run id included, and listed first
    (made the default) it was reported as the version the run registered."""
    from types import SimpleNamespace

    from core.training import shipping

    own = SimpleNamespace(name="m-v1", created="2026-12-07T10:00", calibration=None, members=[],
                          training=SimpleNamespace(run_id="r1"))
    copy = SimpleNamespace(name="m-v2", created="2026-12-07T11:00", calibration=object(), members=[],
                           training=SimpleNamespace(run_id="r1"))
    monkeypatch.setattr(shipping, "list_models", lambda directory: ([SimpleNamespace(record=r) for r in (copy, own)],
                                                                     []))
    assert shipping.registered_already("r1").name == "m-v1" and shipping.registered_already("r2") is None


def test_a_state_that_cannot_be_deleted_leaves_the_version_registered_and_said_so(kermany_train, site, monkeypatch):
    """A review: an OSError deleting the state escaped the registration, so a job said "Nothing was registered"
    of a version that was, and offered a Resume that registered it again."""
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patched:
        patched.setattr(resume, "discard_saved_run", read_only)
        record = train(kermany_train, TINY, directory=site)
    assert (site / f"{record.name}.json").is_file() and [run.finished for run in saved_runs()] == [True]
    assert train(kermany_train, TINY, directory=site, resume=True).name == record.name and saved_runs() == []


def test_a_shipped_version_whose_manifest_cannot_be_written_is_not_left_behind_unsigned(tiers, monkeypatch):
    """A resume review: an OSError writing the checksum manifest left the new files in the shipped folder, refused
    by every listing as unsigned, while the next run (make models) shipped another version beside them."""
    from test_model_tiers import record_for

    from core.errors import CheckpointError
    from core.models.build import build_model
    from core.store import manifest
    from core.training.shipping import ship_version

    shipped, _ = tiers
    before = sorted(p.name for p in shipped.iterdir() if not p.name.startswith("."))

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(manifest, "write_manifest", full)
    model, _ = build_model("logistic", 2, 32)
    with pytest.raises(CheckpointError, match=r"^The checksum manifest could not be written \(No space left on "
                                              r"device\); nothing was registered\.$"):
        ship_version(model, record_for(""), "ship-pneu", directory=shipped)
    assert sorted(p.name for p in shipped.iterdir() if not p.name.startswith(".")) == before


def test_a_version_once_saved_is_never_registered_again_by_a_resume(kermany_train, site, monkeypatch):
    """A process that dies once its version is on disk (here, in the promotion step) leaves its run's state, and
    resuming it registers nothing a second time: it finishes what was left, the task's first default (a resume
    review: forgotten before the promotion, the state left a command-line run's new task without a default)."""
    import core.training.shipping as shipping
    from core.store.registry import find_model

    def dies(*args, **kwargs):
        raise KeyboardInterrupt  # the process is stopped between saving the version and promoting it

    with monkeypatch.context() as patched:
        patched.setattr(shipping, "promote_first", dies)
        with pytest.raises(KeyboardInterrupt):
            train(kermany_train, TINY, directory=site)
    (written,) = site.glob("pneumonia-logistic-v*.json")
    assert [run.finished for run in saved_runs()] == [True] and not find_model(written.stem).is_default
    assert train(kermany_train, TINY, directory=site, resume=True).name == written.stem
    assert list(site.glob("pneumonia-logistic-v*.json")) == [written] and saved_runs() == []
    assert find_model(written.stem).is_default


def test_a_refused_promotion_ends_the_run_at_the_barrier_like_a_success(monkeypatch, tmp_path):
    """A re-read: the version is registered and only its promotion refused, so the other training processes
    returned and wait at the closing barrier; rank 0 left the group without it, which can abort them."""
    from core.errors import PromotionRefused
    from core.training import train as train_module

    left = []

    def refused(*args, **kwargs):
        raise PromotionRefused("m-v1 cannot become the default model for pneumonia: too few films.")

    monkeypatch.setattr(train_module, "_train", refused)
    monkeypatch.setattr(train_module, "leave", lambda hardware, completed=False: left.append(completed))
    with pytest.raises(PromotionRefused):
        train(tmp_path, TINY, directory=tmp_path)
    assert left == [True]
