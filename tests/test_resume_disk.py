"""A full disk while a run's new state is described: the message names the epoch a resume continues from."""
from __future__ import annotations

import errno
import json
import os

import test_resume_state
from test_resume_state import CLI_ARGS, CPU, _state

from core.training.resume import open_run

saved, site = test_resume_state.saved, test_resume_state.site  # that file's fixtures


def test_a_full_disk_after_the_new_state_is_written_says_that_state_is_kept(saved, site, monkeypatch, capsys):
    """The new state was on disk, and named in the description's digests, but the message gave the epoch before
    it (or, in a fresh run, 'no epoch is saved: start again'), throwing away a saved epoch."""
    from core import cli
    from core.training import resume

    write, written = resume.write_private, []

    def full_after_the_state(path, writer):
        if path.suffix == ".json" and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, writer)
        written.extend([path] if path.suffix == ".pt" else [])

    monkeypatch.setattr(resume, "write_private", full_after_the_state)
    try:
        cli.main(["train", str(saved.films), *CLI_ARGS])
    except SystemExit as stopped:
        assert stopped.code == 1
    assert "this run's state after epoch 2 of 3 is kept" in json.loads(capsys.readouterr().out.splitlines()[-1])["error"]
    monkeypatch.undo()
    run = open_run(saved.identity, CPU, resume=True)  # as the message says
    assert run.resumed_after == 2
    run.forget()
    assert not _state(saved).exists()
