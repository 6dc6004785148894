"""bench/measurements.py: how a benchmark's section is stored, and the CPU time a hypervisor took meanwhile."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measurements import cpu_times, steal_share, write_section  # noqa: E402


def test_steal_is_the_share_of_all_cpu_time_between_two_readings():
    before = [100, 0, 10, 500, 0, 0, 0, 40, 0, 0]
    after = [160, 0, 20, 520, 0, 0, 0, 150, 0, 0]  # 60 user + 10 system + 20 idle + 110 stolen
    assert steal_share(before, after) == pytest.approx(110 / 200)
    assert steal_share(before, before) is None  # no time passed
    assert steal_share(None, after) is None and steal_share(before[:4], after[:4]) is None  # cannot be told


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="no /proc/stat on this system")
def test_this_machine_reports_its_cpu_times():
    first = cpu_times()
    assert first is not None and len(first) >= 8 and all(value >= 0 for value in first)
    assert all(later >= earlier for earlier, later in zip(first, cpu_times()))  # counters only grow


def test_a_section_is_replaced_and_the_text_around_it_kept(tmp_path, capsys):
    path = tmp_path / "measurements.md"
    path.write_text("# Measurements\n\nwritten by hand\n")
    write_section("speed", "Speed", ["| a | 1 |"], path)
    write_section("speed", "Speed", ["| a | 2 |"], path)
    text = path.read_text()
    assert text.startswith("# Measurements\n\nwritten by hand\n") and text.count("<!-- begin speed -->") == 1
    assert "| a | 2 |" in text and "| a | 1 |" not in text and "_Measured " in text
    assert "| a | 2 |" in capsys.readouterr().out


def test_the_training_bench_says_when_the_machines_own_speed_moved_under_it():
    from bench.training_runs import drift
    moved = drift(22.9, 64.8)
    assert moved.startswith("the same bare bf16 step ran 183% faster after the runs") and "not a measurement" in moved
    assert drift(30.0, 28.5) == ("the same bare bf16 step ran 5% slower after the runs than before them "
                                 "(28.5 against 30.0 films/s)")


@pytest.mark.parametrize("shipped", [True, False])
def test_the_evaluate_bench_times_the_cli_on_the_shipped_models_or_on_a_registry_it_is_given(tmp_path, monkeypatch,
                                                                                             shipped):
    """`make bench` stopped at bench/evaluate.py for a day (run_process had gained an argument its caller did not
    pass), and the GPU session gives it a registry of models it trained, which is not a signed shipped folder."""
    import subprocess

    from bench import evaluate
    from bench.training_runs import Run

    calls = []

    def run_process(command, env, run):
        calls.append((command, env, run))
        return 2.5, subprocess.CompletedProcess(command, 0, stdout='{"n": 3}\n', stderr="")
    monkeypatch.setattr(evaluate, "run_process", run_process)
    models = evaluate.SHIPPED if shipped else tmp_path / "trained"
    wall, report, problem = evaluate.evaluate_cli(tmp_path / "films", "m-v1", tmp_path, models)
    assert (wall, report, problem) == (2.5, {"n": 3}, "")
    command, env, run = calls[0]
    assert command[-5:] == ["evaluate", str(tmp_path / "films"), "--model", "m-v1", "--json"] and isinstance(run, Run)
    assert (env["CXR_CHECKPOINTS"] == str(models)) == shipped and (env["CXR_MODELS"] == str(models)) != shipped
