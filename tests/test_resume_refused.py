"""A resume refused because the folder's films or the settings no longer match the saved run is not offered
again: the Retrain page showed the refusal with Resume training right under it, and every click started another
job refused the same way, each with its job.resume line in the audit log (a review)."""
from __future__ import annotations

import test_resume
from e2e_support import retrain_page
from test_resume import FAR_JOB, TINY, _interrupted_job, _resume_buttons

from core.jobs.jobs import FAILED, read_job
from core.jobs.records import write_settings, write_status
from core.training.resume import run_identity
from core.training.saved_runs import nothing_to_resume, runs_dir
from core.training.train import split_films

site = test_resume.site  # its fixture: an empty site models folder, the runs folder beside it


def test_a_resume_refused_for_other_films_offers_no_resume_again(kermany_train, site, tmp_path, settings_env,
                                                                    monkeypatch):
    from core.access.policy import RequestFacts
    from dashboard.components import access

    monkeypatch.setattr(access, "request_facts", lambda: RequestFacts.of("127.0.0.1", {"Host": "localhost"}))
    jobs = tmp_path / "jobs"
    settings_env(CXR_DATA_DIR=str(kermany_train))
    read_job(_interrupted_job(jobs, kermany_train, TINY, site))  # settled: failed, its run kept
    (button,) = _resume_buttons(retrain_page())  # offered while the run can go on
    assert button.key == f"resume-{FAR_JOB}"
    # the resume job the button starts, refused as the runner words it when the films changed since
    other = TINY.model_copy(update={"max_films": 80}).resolved()
    refusal = nothing_to_resume(run_identity(other, kermany_train, *split_films(kermany_train, other)[1:3]), runs_dir())
    assert refusal.lasting
    resumed = jobs / "20261201-000000-bead"
    resumed.mkdir()
    write_settings(resumed, read_job(jobs / FAR_JOB).settings.model_copy(
        update={"job_id": resumed.name, "resume_of": FAR_JOB}))
    write_status(resumed, FAILED, message="Training failed: " + str(refusal), resume_refused=refusal.lasting)
    at = retrain_page()
    assert not at.exception and "There is no interrupted run of these settings" in "\n".join(e.value for e in at.error)
    assert _resume_buttons(at) == []  # neither under the refusal nor as the earlier job's interrupted run


def test_the_runner_records_a_lasting_refusal_and_only_that(tmp_path, monkeypatch, settings_env):
    """The status flag the page reads comes from the runner: a refusal asking again cannot change (no run of
    these settings on these films) sets it; a passing one (the run busy) does not."""
    import core.training.train as training
    from core.errors import ResumeRefused
    from core.jobs.records import read_status
    from test_job_crashes import _runner

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    for lasting in (True, False):
        runner = _runner(tmp_path / str(lasting), monkeypatch, resume_of=FAR_JOB)

        def refused(*args, **kwargs):
            raise ResumeRefused("There is no interrupted run of these settings on these films to resume; start a "
                                "new run instead (without --resume).", lasting=lasting)

        monkeypatch.setattr(training, "train", refused)
        assert runner._run() == 1
        status = read_status(runner.folder)
        assert status.state == FAILED and status.resume_refused is lasting
        assert status.message.endswith("start a new run instead (Start training).")


def test_a_diverged_run_offers_no_resume(tmp_path, monkeypatch, settings_env):
    """Found by a review: a run stopped for a NaN loss kept its last epoch's state, and Resume replayed the same
    steps from it (same weights, batch order and seed) into the same divergence; the message asks for a new run
    at a lower learning rate instead."""
    import core.training.train as training
    from core.errors import TrainingDiverged
    from core.jobs.records import read_status
    from test_job_crashes import _runner

    settings_env(CXR_MODELS=str(tmp_path / "models"), CXR_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    runner = _runner(tmp_path, monkeypatch)

    def diverged(*args, **kwargs):
        raise TrainingDiverged("Training diverged in epoch 2 of 3: the loss became nan, so the weights are no longer "
                               "numbers and nothing was registered. Train again with a lower learning rate.")

    monkeypatch.setattr(training, "train", diverged)
    assert runner._run() == 1
    status = read_status(runner.folder)
    assert status.state == FAILED and status.resume_refused
    assert status.message.startswith("Training failed: Training diverged in epoch 2 of 3")


def test_a_saved_state_that_cannot_be_used_is_a_lasting_refusal(kermany_train, site, monkeypatch):
    """Found by a review: a damaged state, or one whose films were decoded by other code, was refused as if asking
    again could help, so the page offered Resume under every refusal, each click another job refused the same way."""
    import pytest

    from core.errors import ResumeRefused
    from core.training import saved_state
    from core.training.train import train
    from test_resume import _interrupt

    _interrupt(kermany_train, TINY, site)
    monkeypatch.setattr(saved_state, "cache_namespace", lambda: "decoded by another version")
    with pytest.raises(ResumeRefused, match="decoded by other code") as other_code:
        train(kermany_train, TINY, directory=site, resume=True)
    monkeypatch.undo()
    (state,) = runs_dir().glob("*.pt")
    state.write_bytes(state.read_bytes()[:-10])
    with pytest.raises(ResumeRefused, match="has changed since") as changed:
        train(kermany_train, TINY, directory=site, resume=True)
    assert other_code.value.lasting and changed.value.lasting
