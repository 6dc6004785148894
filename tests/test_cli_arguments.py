"""Command-line arguments refused in words before any work: an empty path (an unset shell variable), a negative
number argparse took for an option."""
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


@pytest.mark.parametrize("value, read", [("-1e-3", -0.001), ("-1E+2", -100.0), ("-.5", -0.5), ("-inf", float("-inf"))])
def test_a_negative_number_in_any_spelling_is_a_value_not_an_option(value, read):
    """A CLI review: `--lr -1e-3` and `--target-sensitivity -inf` were taken for options ("--lr: expected one
    argument"), so the command's own range check, which says what is allowed, never ran."""
    from core.cli import build_parser

    args = build_parser().parse_args(["train", "films", "--arch", "logistic", "--lr", value,
                                      "--target-sensitivity", value])
    assert args.lr == read and args.target_sensitivity == read


def test_the_range_check_answers_a_negative_learning_rate(run_cli, tmp_path):
    done = run_cli("train", tmp_path, "--arch", "logistic", "--lr", "-1e-3", checkpoints=tmp_path / "site")
    assert done.returncode == 1
    assert done.json_lines() == [{"error": "The learning rate must be between 1e-06 and 1; -0.001 was asked for."}]
