"""What rules a version out as its task's default is said before the work, not after it: ``train --set-default``
before training, ``calibrate --set-default`` before it registers (core.store.promotion)."""
from __future__ import annotations

import re


def test_a_promotion_the_floor_rules_out_is_refused_before_training(run_cli, tmp_path, kermany_train, monkeypatch):
    """A review: the refusal came after the whole run. The films-per-class part of the floor is known once the
    films are split; a refusal after training (sensitivity not reached) still names the version it registered
    (tests/test_cli_edges.py)."""
    monkeypatch.setenv("CXR_PROMOTION_MIN_FILMS", "500")  # 100 films leave 10 of each class for validation
    models = tmp_path / "models"
    refused = run_cli("train", kermany_train, "--arch", "logistic", "--epochs", "1", "--image-size", "32",
                      "--max-films", "100", "--no-augment", "--name", "cli", "--set-default", checkpoints=models)
    assert refused.returncode == 1 and "epoch" not in refused.stderr  # no epoch was run
    (line,) = refused.json_lines()
    assert re.search(r"cannot become the default model for pneumonia: its validation would hold only \d+ NORMAL "
                     r"films and \d+ PNEUMONIA films; a default needs at least 500 of each class\. Train on more "
                     r"films, or leave out --set-default \(or add --override-floor\)\. Nothing was trained\.$",
                     line["error"])  # the floor said once for both classes (a browser review: once a class)
    assert "name" not in line and not list(models.glob("*.pt"))
    monkeypatch.setenv("CXR_PROMOTION_MIN_FILMS", "5")
    low = run_cli("train", kermany_train, "--arch", "logistic", "--epochs", "1", "--image-size", "32", "--max-films",
                  "100", "--no-augment", "--target-sensitivity", "0.9", "--set-default", checkpoints=models)
    assert low.returncode == 1 and "would be chosen for 90 % sensitivity; a default must promise at least 95 %" \
        in low.json_lines()[0]["error"] and not list(models.glob("*.pt"))


def test_a_calibration_for_a_target_below_the_floor_is_refused_before_it_registers(trained_model, registry, run_cli,
                                                                                   audit):
    """Found by a CLI review: `calibrate --target-sensitivity 0.9 --set-default` registered the version, then refused
    to make it the default; the target is known before any film is read, as `train --set-default` knows it."""
    before = sorted(path.name for path in registry.iterdir())
    low = run_cli("calibrate", trained_model.name, "--target-sensitivity", "0.9", "--set-default", checkpoints=registry)
    assert low.returncode == 1 and "Traceback" not in low.stderr
    assert low.json_lines() == [{"error": f"A version recalibrated from {trained_model.name} cannot become the default "
                                          "model for pneumonia: its operating point would be chosen for 90 % "
                                          "sensitivity; a default must promise at least 95 %. Calibrate for a higher "
                                          "target, or leave out --set-default (or add --override-floor). Nothing was "
                                          "registered."}]
    assert sorted(path.name for path in registry.iterdir()) == before and not audit.exists()


def test_a_calibration_on_too_few_validation_films_is_refused_before_it_registers(trained_model, registry, run_cli,
                                                                                  audit, settings_env):
    """The re-read of a CLI review's fix: a version whose validation holds too few films of a class was still
    registered, then refused as the default; those films are counted in its record before any is read."""
    settings_env(CXR_PROMOTION_MIN_FILMS="5000")  # undone with the audit log's setting: monkeypatch's came after
    counts = trained_model.record.report.class_counts
    before = sorted(path.name for path in registry.iterdir())
    few = run_cli("calibrate", trained_model.name, "--target-sensitivity", "0.97", "--set-default",
                  checkpoints=registry)
    assert few.returncode == 1 and "Traceback" not in few.stderr
    assert few.json_lines() == [{"error": f"A version recalibrated from {trained_model.name} cannot become the default "
                                          f"model for pneumonia: its validation holds only {counts[0]} NORMAL films "
                                          f"and {counts[1]} PNEUMONIA films; a default needs at least 5000 of each "
                                          "class. "
                                          "Calibrate on a site folder with enough films of each class (--site-folder), "
                                          "or leave out --set-default (or add --override-floor). Nothing was "
                                          "registered."}]
    assert sorted(path.name for path in registry.iterdir()) == before and not audit.exists()
