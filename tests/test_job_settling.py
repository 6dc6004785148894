"""A job whose runner died is settled by the next reader, from the version it managed to register: found by the
job id its training record carries, in the model files themselves (a jobs review: read through the registry, a
registry.json that could not be read at that moment settled a finished job as failed, for good, with Resume
offered to register the same run twice)."""
from __future__ import annotations

import json
from pathlib import Path

from core.jobs.jobs import read_job
from core.jobs.records import JobSettings, write_settings, write_status


def _dead_job(root: Path, job_id: str, site: Path) -> Path:
    folder = root / job_id
    folder.mkdir(parents=True)
    write_settings(folder, JobSettings(job_id=job_id, data_dir=Path("films"), checkpoints=site))
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
