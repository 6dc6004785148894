"""``other-batch NAME --from RUN`` (#13): a version trained on every film gets the other-batch figures of a run of
its recipe that held that batch out, says where they came from, and refuses a run of another recipe; an ensemble
of versions borrows from an ensemble of such runs, member by member."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import environment
from core.errors import CommandRefused
from core.store.checkpoints import load_checkpoint
from core.store.records import TrainConfig, read_model_record
from core.training.calibrate import calibrate
from core.training.ensemble import build_ensemble_version
from core.training.holdout_run import adopt_holdout_run, recipe_differences
from core.training.other_reports import OUT_OF_BATCH
from core.training.train import train
from dashboard.components.reports import threshold_value
from dashboard.components.travel import (other_batch_threshold, out_of_batch_origin, read_at_another_threshold,
                                         threshold_text, travel_table)

RECIPE = dict(arch="logistic", epochs=2, image_size=64, augment=False, max_films=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory, kermany_train):
    """A folder of site models: a version trained on every film, a run of its recipe with the batch held out,
    and a run of another recipe (one more epoch) with it held out."""
    folder = tmp_path_factory.mktemp("holdout-runs")
    with environment(CXR_MODELS=str(folder)):
        version = train(kermany_train, TrainConfig(**RECIPE), name="every-film")
        run = train(kermany_train, TrainConfig(**RECIPE, holdout="kermany-batch"), name="every-film-holdout")
        other = train(kermany_train, TrainConfig(**{**RECIPE, "epochs": 3}, holdout="kermany-batch"),
                      name="other-recipe")
        yield folder, version, run, other


@pytest.fixture(scope="module")
def ensembles(models, kermany_train):
    """Ensembles of two seeds in the same folder: trained on every film, the same recipe with the batch held out,
    and a held-out pair whose second member ran one more epoch."""
    folder = models[0]

    def pair(name: str, holdout: str | None = None, epochs: tuple[int, int] = (2, 2)):
        members = [train(kermany_train, TrainConfig(**{**RECIPE, "epochs": n}, seed=seed, split_seed=0,
                                                     holdout=holdout), name=f"{name}-s{seed}").name
                   for seed, n in enumerate(epochs)]
        return build_ensemble_version(members, name, 0.95, directory=folder).record

    with environment(CXR_MODELS=str(folder)):
        yield pair("all-films"), pair("all-films-holdout", "kermany-batch"), \
            pair("other-holdout", "kermany-batch", (2, 3))


@pytest.fixture
def in_folder(models):
    with environment(CXR_MODELS=str(models[0])):
        yield models


def test_the_version_gets_the_runs_other_batch_report_and_says_whose_it_is(in_folder, isolated_audit_log):
    folder, version, run, _ = in_folder
    stored = adopt_holdout_run(version.name, run.name, who="tester")
    again = read_model_record(folder / f"{version.name}.json")
    assert again == stored
    lent = run.other_reports[OUT_OF_BATCH]
    assert again.other_reports[OUT_OF_BATCH] == lent  # the run's own report, at the run's threshold
    assert lent.n == 300 - run.data.train.n - run.data.validation.n > 0
    assert lent.threshold == run.operating_point.threshold != version.operating_point.threshold
    assert again.holdout_run.name == run.name and again.holdout_run.rule == "kermany-batch"
    assert again.holdout_run.threshold == run.operating_point.threshold
    assert again.holdout_run.validation_auc == run.report.auc
    assert again.holdout_run.epochs == len(run.training.history)
    # the version itself is unchanged: weights, operating point, validation
    assert (again.weights_sha256, again.operating_point, again.report) == (
        version.weights_sha256, version.operating_point, version.report)
    load_checkpoint(folder / f"{version.name}.json")  # still loads: the weights still match the record
    # the card: the run's figures, said to be another run's at its own threshold, not "an earlier threshold"
    origin = out_of_batch_origin(again)
    assert f"another run of the same recipe that held that batch out ({run.name}: 2 epochs" in origin
    assert f"own threshold ({run.operating_point.threshold:.3f}" in origin and "not measured on it" in origin
    assert read_at_another_threshold(again) == []
    assert travel_table(again).loc["n", "Other batch"] == str(lent.n)
    assert other_batch_threshold(again) == (f"{threshold_value(lent.threshold)} (the run that held it out; this "
                                            "version's is "
                                            f"{threshold_value(again.operating_point.threshold)})")  # says whose
    audit = [json.loads(line) for line in isolated_audit_log.read_text().splitlines()]
    assert audit[-1]["action"] == "other-batch" and audit[-1]["model"] == version.name
    assert audit[-1]["details"]["run"] == run.name


def test_a_threshold_is_shown_to_as_many_decimals_as_tell_it_from_another(in_folder):
    _, version, _, _ = in_folder
    near = version.model_copy(update={"operating_point": version.operating_point.model_copy(
        update={"threshold": 0.386412})})  # to 5 decimals, as the card gives it (at 3 it contradicted serving)
    assert threshold_text(near) == "0.38641" and threshold_text(near, 0.386414) == "0.386412"
    assert threshold_text(near, 0.5) == "0.38641" and threshold_text(near, 0.386412) == "0.38641"


def test_a_run_of_another_recipe_is_refused_with_what_differs(in_folder):
    folder, version, _, other = in_folder
    with pytest.raises(CommandRefused, match=r"not a run of every-film-v1's recipe: epochs 3 \(not 2\)"):
        adopt_holdout_run(version.name, other.name)


def test_a_run_without_a_holdout_and_a_version_with_one_are_refused(in_folder):
    _, version, run, _ = in_folder
    with pytest.raises(CommandRefused, match="was not trained with another batch held out"):
        adopt_holdout_run(version.name, version.name)  # the version as its own run: no holdout
    with pytest.raises(CommandRefused, match="its other-batch figures are its own"):
        adopt_holdout_run(run.name, run.name)


def test_recalibrating_drops_the_lent_figures_read_at_the_other_runs_threshold(in_folder, kermany_train):
    _, version, run, _ = in_folder
    adopt_holdout_run(version.name, run.name)
    recalibrated = calibrate(version.name, 0.9, kermany_train)
    assert OUT_OF_BATCH not in recalibrated.other_reports and recalibrated.holdout_run is None


def test_the_command_line_prints_the_figures_and_refuses_unknown_names_as_json(models, run_cli):
    folder, version, run, _ = models
    done = run_cli("other-batch", version.name, "--from", run.name, checkpoints=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    line = done.json_lines()[-1]
    assert line["name"] == version.name and line["holdout_run"]["name"] == run.name
    assert line["other_batch"]["n"] == run.other_reports[OUT_OF_BATCH].n
    listed = {row["name"]: row for row in json.loads(run_cli("models", "--json", checkpoints=folder).stdout)["models"]}
    assert listed[version.name]["holdout_run"]["name"] == run.name
    assert listed[version.name]["other_metrics"]["out-of-batch"]["n"] == line["other_batch"]["n"]
    missing = run_cli("other-batch", version.name, "--from", "no-such-run", checkpoints=folder)
    assert missing.returncode == 1 and "no-such-run" in missing.json_lines()[-1]["error"]
    assert "Traceback" not in missing.stdout + missing.stderr


def test_an_ensemble_borrows_from_an_ensemble_of_runs_of_its_members_recipes(in_folder, ensembles):
    folder, version, run, _ = in_folder
    every_film, held_out, other = ensembles
    # each member's recipe and precision are stored with the ensemble
    assert [(m.config.seed, m.config.holdout) for m in every_film.members] == [(0, None), (1, None)]
    assert [m.config.seed for m in held_out.members] == [0, 1] and all(m.precision for m in held_out.members)
    stored = adopt_holdout_run(every_film.name, held_out.name)
    assert stored.other_reports[OUT_OF_BATCH] == held_out.other_reports[OUT_OF_BATCH]
    assert stored.holdout_run.name == held_out.name and stored.holdout_run.members == 2
    assert stored.holdout_run.threshold == held_out.operating_point.threshold
    assert stored.operating_point == every_film.operating_point and stored.report == every_film.report
    load_checkpoint(folder / f"{every_film.name}.json")
    assert f"({held_out.name}: an ensemble of 2 networks, validation AUC" in out_of_batch_origin(stored)
    with pytest.raises(CommandRefused, match=r"not a run of all-films-v1's recipe: member 2 epochs 3 \(not 2\)"):
        adopt_holdout_run(every_film.name, other.name)
    with pytest.raises(CommandRefused, match=r"an ensemble of 2 \(not a single network\)"):
        adopt_holdout_run(version.name, held_out.name)
    with pytest.raises(CommandRefused, match=r"a single network \(not an ensemble of 2\)"):
        adopt_holdout_run(every_film.name, run.name)
    # an ensemble registered before members carried their recipes cannot be checked, so it cannot lend
    older = held_out.model_copy(update={"members": tuple(m.model_copy(update={"config": None, "precision": None})
                                                         for m in held_out.members)})
    assert recipe_differences(every_film, older, held_out.other_reports[OUT_OF_BATCH].class_counts) == [
        f"{held_out.name} does not record each member's recipe (registered before ensembles stored them)"]


def test_a_run_recalibrated_on_a_site_folder_lends_no_other_batch_figures():
    """Its other-batch report was read at a threshold chosen on a site's films, not by the recipe's rule on its own
    validation films, which is what a lent figure promises."""
    from conftest import REPO
    from core.errors import CommandRefused
    from core.store.records import Calibration, read_model_record
    from core.training.holdout_run import _check_run

    run = read_model_record(REPO / "checkpoints" / "pneumonia-resnet18-224-wide-ensemble-v1.json")
    assert _check_run(run) is run.other_reports["out-of-batch"]  # as shipped: it may lend its figures
    on_site = run.model_copy(update={"calibration": Calibration.model_validate({
        "from": run.name, "target_sensitivity": 0.95, "source": "site folder", "folder": "ward-7/ward"})})
    with pytest.raises(CommandRefused, match="threshold was chosen on a site's films.*calibrated from"):
        _check_run(on_site)


def test_the_training_folder_is_compared_as_recorded_wherever_the_command_runs(tmp_path, monkeypatch):
    """A record's relative folder is the project root's (recorded_source): a run that stored the same folder as an
    absolute path is of the same folder from any working directory, and another folder is still another."""
    from conftest import REPO
    from core.films.manifest import recorded_source

    version = read_model_record(REPO / "checkpoints" / "pneumonia-cnn5-v1.json")
    assert not version.training.data_dir.startswith("/")  # stored relative, as every shipped version is

    def run_in(folder: str):
        return version.model_copy(update={"training": version.training.model_copy(update={"data_dir": folder})})

    same = run_in(str(Path(recorded_source(version.training.data_dir)).resolve()))
    monkeypatch.chdir(tmp_path)
    counts = [0] * len(version.classes)  # no held-out films: only the folder is asserted on
    assert "another training folder" not in recipe_differences(version, same, counts)
    assert "another training folder" in recipe_differences(version, run_in(str(tmp_path)), counts)


def test_an_ensemble_does_not_show_a_members_lent_figures_as_its_own(in_folder, ensembles):
    """A member trained on every film was never measured on the other batch: the figures another run lent it are
    that run's, so the comparison leaves its out-of-batch figures out instead of setting them beside the ensemble's."""
    folder, version, run, _ = in_folder
    lent = adopt_holdout_run(version.name, run.name)
    assert lent.other_reports[OUT_OF_BATCH] == run.other_reports[OUT_OF_BATCH]
    result = build_ensemble_version([version.name, "all-films-s1-v1"], "mixed", 0.95, directory=folder)
    assert [m.name for m in result.members] == [version.name, "all-films-s1-v1"]
    assert [m.out_of_batch for m in result.members] == [None, None]
    assert result.to_json()["members"][0]["out_of_batch"] is None and result.beats_best_member is None
    assert result.lines()[1].split()[-3:] == ["-", "-", "-"]  # no out-of-batch AUC, sensitivity, specificity


def test_a_from_scratch_run_is_not_a_fine_tune_s_recipe_where_the_weights_are_missing(monkeypatch):
    """Found by a review: both recipes were resolved on the machine running the command, which turns an ImageNet
    start off where its weights file is missing, so a from-scratch run lent its figures to a fine-tune there."""
    from core.store import records
    from core.store.records import TrainConfig
    from core.training.holdout_run import _recipe_differences

    monkeypatch.setattr(records, "_imagenet_weights_present", lambda name: False)  # as on a machine without them
    fine_tune = TrainConfig(arch="resnet18", lr=3e-4, image_size=224, pretrained=True)
    from_scratch = fine_tune.model_copy(update={"pretrained": False, "holdout": "kermany-batch"})
    assert _recipe_differences(fine_tune, "bf16", from_scratch, "bf16") == ["pretrained False (not True)"]
    assert _recipe_differences(fine_tune, "bf16", fine_tune, "bf16") == []
