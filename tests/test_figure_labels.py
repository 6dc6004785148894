"""Every figure says what it is, found by a review of the figures shown against the stored ones: which films a
framing check framed, a target as it was set, a macro AUC as macro (Compare's captions: test_dashboard_compare)."""
from __future__ import annotations

import numpy as np

from conftest import REPO
from core.store.records import read_model_record
from core.store.registry import SHIPPED, ModelEntry

SHIPPED_DIR = REPO / "checkpoints"
DEFAULT = "pneumonia-resnet18-lite1-224-wide-all-ensemble-v1"  # retrained on every film: framed its validation
HELD_OUT_PAIR = "pneumonia-resnet18-224-wide-ensemble-v1"  # held a batch out: framed that batch


def _entry(name: str) -> ModelEntry:
    path = SHIPPED_DIR / f"{name}.json"
    return ModelEntry(read_model_record(path), False, path, SHIPPED)


def test_the_framing_check_says_which_films_it_framed_and_compare_never_mixes_them():
    from dashboard.components.travel import line_summaries, travel_comparison

    default, pair = _entry(DEFAULT), _entry(HELD_OUT_PAIR)
    assert "validation films" in default.record.other_reports["tighter-framing"].split
    assert "another batch" in pair.record.other_reports["tighter-framing"].split
    assert any(line.startswith("**Validation films, framed 15 % tighter (synthetic)** (1038 films)")
               for line in line_summaries(default.record))
    assert any(line.startswith("**Another batch, framed 15 % tighter (synthetic)** (1154 films)")
               for line in line_summaries(pair.record))
    # a figures review: the validation films framed tighter are the films that chose the threshold and epoch
    (framed,) = [line for line in line_summaries(default.record) if line.startswith("**Validation films, framed")]
    assert framed.endswith("The same films chose its threshold and epoch: a little high.")
    assert not any("chose its threshold" in line for line in line_summaries(pair.record))
    table = travel_comparison([default, pair])
    films = table.loc["Validation films, framed 15 % tighter (synthetic): films"]
    assert (films[DEFAULT], films[HELD_OUT_PAIR]) == ("1038", "not measured")
    films = table.loc["Another batch, framed 15 % tighter (synthetic): films"]
    assert (films[DEFAULT], films[HELD_OUT_PAIR]) == ("not measured", "1154")


def test_compare_s_chart_never_plots_another_run_s_other_batch_figures_as_the_model_s_own():
    """A figures review: the default's other-batch sensitivity and specificity (another run's weights, at that run's
    threshold) were plotted on the "Another batch" row under the default's name, like the held-out pair's own."""
    from dashboard.components.travel import travel_points

    rows = {(p.model, p.films) for p in travel_points([_entry(DEFAULT), _entry(HELD_OUT_PAIR)])}
    assert (DEFAULT, "Another batch (another run's weights)") in rows and (DEFAULT, "Another batch") not in rows
    assert (HELD_OUT_PAIR, "Another batch") in rows


def test_a_sensitivity_target_of_half_a_point_is_shown_and_stored_as_set():
    from core.training.operating_point import choose_operating_point
    from dashboard.components.model_card import operating_point_text
    from dashboard.components.reports import target_percent

    assert [target_percent(t) for t in (0.95, 0.96, 0.995, 0.975, 1.0)] == ["95 %", "96 %", "99.5 %", "97.5 %",
                                                                            "100 %"]
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    p_abnormal = np.clip(np.r_[rng.normal(0.3, 0.15, 200), rng.normal(0.7, 0.15, 200)], 0, 1)
    point = choose_operating_point(y, np.c_[1 - p_abnormal, p_abnormal], ["NORMAL", "PNEUMONIA"], 0.995)
    assert point.policy == "highest threshold with validation sensitivity >= 99.5%"  # was ">= 100%"
    record = read_model_record(SHIPPED_DIR / f"{DEFAULT}.json")
    card = operating_point_text(record.model_copy(update={"operating_point": point}))
    assert "chosen for ≥ 99.5 % sensitivity" in card


def test_a_macro_auc_says_so_where_its_row_says_only_auc():
    from dashboard.components.travel import line_summaries, travel_table

    covid = read_model_record(SHIPPED_DIR / "covid-efficientnet_lite0-v1.json")
    assert len(covid.classes) == 3
    assert travel_table(covid).loc["AUC", "Validation"].endswith(", macro")
    assert all(", macro;" in line for line in line_summaries(covid))
    binary = read_model_record(SHIPPED_DIR / "pneumonia-cnn5-v1.json")
    assert "macro" not in travel_table(binary).loc["AUC", "Validation"]


def test_two_versions_calibrated_on_two_sites_films_never_share_a_row_or_a_chart_series():
    """Found by a review: every site report had one title, so Compare showed one "Site films" row with two sites'
    figures side by side, as if read on the same films."""
    from core.store.records import Calibration
    from dashboard.components.travel import TRAVEL_TITLES, travel_comparison, travel_points

    entries = []
    for ward, digest in (("ward-a", "a" * 64), ("ward-b", "b" * 64), ("ward-b", "c" * 64)):  # b relabelled: c
        record = _entry("pneumonia-logistic-v1").record
        films = {"n": 8, "class_counts": {"NORMAL": 4, "PNEUMONIA": 4}, "sha256": digest}
        calibration = Calibration.model_validate({"from": "pneumonia-logistic-v0", "target_sensitivity": 0.95,
                                                  "source": "site folder", "folder": f"site/{ward}", "films": films})
        record = record.model_copy(update={"name": f"logistic-{digest[0]}", "calibration": calibration,
                                           "other_reports": {**record.other_reports, "site": record.report}})
        entries.append(ModelEntry(record, False, SHIPPED_DIR / f"{record.name}.json", SHIPPED))
    table = travel_comparison(entries)
    site = TRAVEL_TITLES["site"]
    rows = [f"{site}: site/ward-a (aaaaaaaa)", f"{site}: site/ward-b (bbbbbbbb)", f"{site}: site/ward-b (cccccccc)"]
    for row, model in zip(rows, ("logistic-a", "logistic-b", "logistic-c")):
        assert [table.loc[f"{row}: films", name] == "not measured" for name in ("logistic-a", "logistic-b",
                                                                                "logistic-c")].count(False) == 1
        assert table.loc[f"{row}: films", model] != "not measured"
    assert {p.films for p in travel_points(entries) if p.films.startswith(site)} == set(rows)
