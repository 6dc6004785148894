"""A job whose runner died is settled by the next reader, from the version it managed to register: found by the
job id its training record carries, in the model files themselves (a jobs review: read through the registry, a
registry.json that could not be read at that moment settled a finished job as failed, for good, with Resume
offered to register the same run twice)."""
from __future__ import annotations

import json
from pathlib import Path

from core.jobs.jobs import read_job
from core.jobs.records import JobSettings, write_settings, write_status


def _dead_job(root: Path, job_id: str, site: Path, who: str | None = None) -> Path:
    folder = root / job_id
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=job_id, data_dir=Path("films"), checkpoints=site, started_by=who))
    write_status(folder, "running")
    return folder


def test_a_dead_job_that_registered_its_version_succeeded_even_when_the_registry_cannot_be_read(copied_model,
                                                                                                 tmp_path):
    record = json.loads(copied_model.read_text())
    record["training"]["job_id"] = "job-7"
    copied_model.write_text(json.dumps(record))
    (copied_model.parent / "registry.json").write_text("{damaged")  # e.g. half restored from a backup
    settled = read_job(_dead_job(tmp_path / "jobs", "job-7", copied_model.parent))
    assert settled.state == "succeeded" and settled.model == record["name"]
    assert "after registering" in settled.message
    other = read_job(_dead_job(tmp_path / "jobs", "job-8", copied_model.parent))  # registered nothing
    assert other.state == "failed" and "Nothing was registered" in other.message


def test_a_job_killed_between_its_version_and_its_audit_line_is_recorded_and_promoted_when_settled(
        copied_model, tmp_path, settings_env, monkeypatch):
    """A review: killed after writing its version's files but before the ``train`` audit line (its saved run still
    there), the job was settled as succeeded with no audit line and no first-default promotion. The settler writes
    the line, marked as written at settling, and applies the first-default rule; killed just after the line, no
    second line."""
    import core.jobs.jobs as jobs
    from core.admin.audit import read_actions, record_action
    from core.store.registry import find_model

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    discarded = []
    monkeypatch.setattr(jobs, "saved_run_of_job", lambda job_id: type("Run", (), {"key": f"run-of-{job_id}"}))
    monkeypatch.setattr(jobs, "discard_saved_run", discarded.append)
    record = json.loads(copied_model.read_text())
    record["training"]["job_id"] = "job-9"
    copied_model.write_text(json.dumps(record))
    record_action("job.start", "admin", job="job-9")
    settled = read_job(_dead_job(tmp_path / "jobs", "job-9", copied_model.parent, who="admin"))
    assert settled.state == "succeeded" and settled.message.endswith("that version is complete.")
    train = [a for a in read_actions() if a.action == "train"]
    assert [(a.who, a.model, a.details["job"], a.details["settled"]) for a in train] == [
        ("admin", record["name"], "job-9", True)]
    assert train[0].details["auc"] == record["report"]["auc"] and discarded == ["run-of-job-9"]
    assert find_model(record["name"]).is_default  # the task's first version, as training would have made it
    assert [a.action for a in read_actions(limit=2)] == ["default.change", "train"]

    record["training"]["job_id"] = "job-10"  # killed after its line: nothing written twice
    copied_model.write_text(json.dumps(record))
    record_action("job.resume", "admin", job="job-10")
    record_action("train", "admin", model=record["name"], job="job-10")
    read_job(_dead_job(tmp_path / "jobs", "job-10", copied_model.parent, who="admin"))
    assert [a.details["job"] for a in read_actions() if a.action == "train"] == ["job-10", "job-9"]


def test_two_readers_settle_a_dead_job_one_after_the_other(copied_model, tmp_path, monkeypatch):
    """Found by a concurrency review: every viewer of the Retrain page reads the job under a shared lock, so two
    could settle one dead job at once, both finding its ``train`` audit line missing and both writing it."""
    import threading
    import time

    from core.jobs import jobs

    folder, inside, most, lock = _dead_job(tmp_path / "jobs", "job-9", copied_model.parent), [0], [0], threading.Lock()
    real = jobs._settle_if_dead

    def slow(folder):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.3)  # long enough for the other reader to arrive
        try:
            return real(folder)
        finally:
            with lock:
                inside[0] -= 1

    monkeypatch.setattr(jobs, "_settle_if_dead", slow)
    readers = [threading.Thread(target=read_job, args=(folder,)) for _ in range(2)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(10)
    assert most[0] == 1 and read_job(folder).state == "failed"


def test_a_job_killed_after_its_audit_line_and_state_but_before_its_first_default_is_promoted_when_settled(
        copied_model, tmp_path, settings_env):
    """A resume review: killed after its ``train`` line and after its saved run was deleted, but before the first-
    default rule, the job was settled as succeeded and its new task never got a default."""
    from core.admin.audit import read_actions, record_action
    from core.store.registry import find_model

    settings_env(CXR_MODELS=str(copied_model.parent), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    record = json.loads(copied_model.read_text())
    record["training"]["job_id"] = "job-11"
    copied_model.write_text(json.dumps(record))
    record_action("job.start", "admin", job="job-11")
    record_action("train", "admin", model=record["name"], job="job-11")  # no saved run is left
    settled = read_job(_dead_job(tmp_path / "jobs", "job-11", copied_model.parent, who="admin"))
    assert settled.state == "succeeded" and find_model(record["name"]).is_default
    assert [a.action for a in read_actions()].count("train") == 1
