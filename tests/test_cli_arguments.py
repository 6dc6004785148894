"""Command-line arguments refused in words before any work: an empty path (an unset shell variable)."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("args, said", [
    (["predict", ""], "An empty file name was given (an unset shell variable?): name the one meant."),
    (["evaluate", " "], "Name the dataset folder: one sub-folder of films per class."),  # its own words
    (["measured-elsewhere", ""], "An empty file name was given (an unset shell variable?): name the one meant."),
    (["calibrate", "x-v1", "--target-sensitivity", "0.97", "--site-folder", ""],
     "An empty --site-folder was given (an unset shell variable?): name the one meant."),
], ids=["predict", "evaluate", "measured-elsewhere", "calibrate"])
def test_an_empty_path_is_refused_in_words(run_cli, tmp_path, args, said):
    """A CLI review: `predict ""` read the empty name as "." and said "the file is a folder, not a film";
    `measured-elsewhere ""` said "Measurements file  cannot be read"."""
    done = run_cli(*args, checkpoints=tmp_path)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.json_lines() == [{"error": said}]
