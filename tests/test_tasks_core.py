"""Issue 14's task-aware core: the alias table, class folders read as downloaded (the Kaggle layout included),
manifests, near-duplicates kept on one side of the split, and each task's default on the command line."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedGroupKFold

from core.cli import main
from core.errors import DatasetError, ModelNotFound
from core.evaluation.folder import evaluate_folder
from core.films.folders import FilmSet, discover, evaluation_split
from core.films.manifest import (MANIFESTS, find_manifest, load_manifest, manifest_films, shipped_manifests,
                                 training_films)
from core.models.build import build_model
from core.store.checkpoints import load_checkpoint, save_checkpoint
from core.store.records import ModelArgs, ModelRecord, TrainConfig
from core.store.class_default import find_default_for_classes
from core.store.registry import find_model, set_default
from core.store.reports import OperatingPoint
from core.tasks import TASKS, canonical_class, task_name, task_of, task_title
from core.training.data import film_groups, fingerprint, patient_id, patient_split
from core.training.train import split_films

FOUR = ("COVID-19", "NORMAL", "PNEUMONIA", "TUBERCULOSIS")


# --- tasks and the alias table ------------------------------------------------------------------------------

@pytest.mark.parametrize("folder, canonical", [
    ("TURBERCULOSIS", "TUBERCULOSIS"), ("Tuberculosis", "TUBERCULOSIS"), ("TB", "TUBERCULOSIS"),
    ("Covid", "COVID-19"), ("COVID19", "COVID-19"), ("covid-19", "COVID-19"), ("COVID 19", "COVID-19"),
    ("Viral Pneumonia", "VIRAL PNEUMONIA"), ("viral_pneumonia", "VIRAL PNEUMONIA"),
    ("Normal", "NORMAL"), ("NORMAL", "NORMAL"), ("pneumonia", "PNEUMONIA"),
    ("Effusion", None), ("bacteria", None), ("", None), ("normal2", None),
])
def test_the_alias_table_reads_the_public_sets_spellings(folder, canonical):
    assert canonical_class(folder) == canonical


def test_tasks_are_named_by_their_classes_and_old_names_stay():
    assert task_name(("NORMAL", "PNEUMONIA")) == "pneumonia"  # every existing model's task
    assert task_name(("Covid", "Normal", "Viral Pneumonia")) == "covid"
    assert task_name(FOUR) == "four-class" and task_of(FOUR) is TASKS["four-class"]
    assert task_name(("NORMAL", "TUBERCULOSIS")) == "tuberculosis"  # not a named task: as before
    assert task_of(("NORMAL", "TUBERCULOSIS")) is None
    assert task_title("four-class") == "Four classes (with tuberculosis)" and task_title("covid") == "COVID-19"
    assert all(task.classes == tuple(sorted(task.classes)) and task.normal == "NORMAL" for task in TASKS.values())


# --- class folders --------------------------------------------------------------------------------------------

def test_real_sets_are_read_in_canonical_classes(data_dir):
    covid = discover(data_dir / "covid-3class")  # train/ found below the dataset root
    assert covid.classes == ("COVID-19", "NORMAL", "VIRAL PNEUMONIA") and covid.class_counts() == [111, 70, 70]
    assert set(covid.sources) == {"covid-3class"} and len(covid.sources) == 251
    tb = discover(data_dir / "tb" / "train")
    assert tb.classes == ("NORMAL", "TUBERCULOSIS") and tb.class_counts() == [150, 150] and tb.sources[0] == "tb"


def _link_tree(root: Path, spec: dict[str, list[Path]]) -> Path:
    """``root/FOLDER/`` of symlinks to real films."""
    for folder, films in spec.items():
        (root / folder).mkdir(parents=True)
        for film in films:
            (root / folder / film.name).symlink_to(film)
    return root


def _films(folder: Path, start: int, n: int) -> list[Path]:
    return sorted(folder.iterdir())[start:start + n]


def test_an_unknown_class_folder_is_named_with_the_known_classes(films_dir, tmp_path):
    root = _link_tree(tmp_path / "data", {"NORMAL": _films(films_dir / "NORMAL", 0, 2),
                                          "Effusion": _films(films_dir / "PNEUMONIA", 0, 2)})
    with pytest.raises(DatasetError, match=r"'Effusion' .* not a class we know; .*COVID-19, NORMAL, PNEUMONIA, "
                                           r"TUBERCULOSIS, VIRAL PNEUMONIA"):
        discover(root)


def test_two_folders_of_one_class_are_refused(films_dir, tmp_path):
    root = _link_tree(tmp_path / "data", {"Covid": _films(films_dir / "NORMAL", 0, 1),
                                          "COVID19": _films(films_dir / "NORMAL", 1, 1),
                                          "NORMAL": _films(films_dir / "NORMAL", 2, 1)})
    with pytest.raises(DatasetError, match="COVID19 and Covid .* both hold COVID-19"):
        discover(root)


@pytest.fixture
def kaggle_root(tmp_path, data_dir) -> Path:
    """The Kaggle 4-class layout as downloaded (train/, val/, test/; COVID19 ... TURBERCULOSIS), of real films."""
    sources = {"COVID19": data_dir / "covid-3class/train/Covid", "NORMAL": data_dir / "kermany-224/train/NORMAL",
               "PNEUMONIA": data_dir / "kermany-224/train/PNEUMONIA",
               "TURBERCULOSIS": data_dir / "tb/train/Tuberculosis"}
    root = tmp_path / "chest-xray-4class"
    for split, (start, n) in {"train": (0, 10), "val": (40, 2), "test": (60, 3)}.items():
        _link_tree(root / split, {name: _films(folder, start, n) for name, folder in sources.items()})
    return root


def test_kaggle_val_joins_validation_and_test_is_never_trained_on(kaggle_root):
    notes: list[str] = []
    films, train_set, val_set, held = split_films(kaggle_root, TrainConfig(arch="logistic"), notes)
    val_dir = {p for p in (kaggle_root / "val").rglob("*") if p.is_file()}
    test_dir = {p for p in (kaggle_root / "test").rglob("*") if p.is_file()}
    # every film the run drew from, val/ included (the other-collection check leaves out copies of each of them)
    assert films.classes == FOUR and films.class_counts() == [12, 12, 12, 12] and held is None
    assert val_dir <= set(films.paths) and not test_dir & set(films.paths)
    assert val_dir <= set(val_set.paths) and not val_dir & set(train_set.paths)
    assert not test_dir & set(train_set.paths + val_set.paths)
    assert len(val_set) - len(val_dir) == 8 and len(train_set) == 32  # a fifth of train/, and val/
    assert val_set.classes == FOUR and all(val_set.classes[l] == "TUBERCULOSIS" for p, l in
                                           zip(val_set.paths, val_set.labels) if p.parent.name == "TURBERCULOSIS")
    assert "the 8 films of val/ joined the patient-disjoint validation split" in " ".join(notes)


def _register(folder: Path, name: str, classes: tuple[str, ...], default: bool = True) -> Path:
    """An untrained 32-px logistic model of ``classes`` in ``folder`` (the default of its task when asked)."""
    torch.manual_seed(len(name))
    model, _ = build_model("logistic", len(classes), 32)
    record = ModelRecord(name=name, task=task_name(classes), arch="logistic", classes=classes,
                         model_args=ModelArgs(num_classes=len(classes), image_size=32),
                         operating_point=OperatingPoint(classes=classes, normal_index=classes.index("NORMAL"),
                                                        threshold=0.5))
    save_checkpoint(folder, model, record)
    if default:
        set_default(name, folder)
    return folder / f"{name}.json"


def test_evaluate_reads_test_by_default_and_split_chooses(kaggle_root, tmp_path):
    loaded = load_checkpoint(_register(tmp_path / "models", "four-v1", FOUR))
    assert evaluation_split(kaggle_root) == "test" and evaluation_split(kaggle_root / "test") is None
    on_test = evaluate_folder(loaded, kaggle_root)  # tb's noise textures (issue 14) are left out as Triage would
    assert on_test.n == 9 and on_test.class_counts == [3, 3, 3, 0] and on_test.split.endswith("/test")
    assert [Path(s.file).parent.name for s in on_test.skipped] == ["TURBERCULOSIS"] * 3
    on_val = evaluate_folder(loaded, kaggle_root, split="val")
    assert on_val.n == 6 and on_val.class_counts == [2, 2, 2, 0]
    assert evaluate_folder(loaded, kaggle_root, split="train").n == 30


def test_evaluating_a_root_without_test_films_is_refused_not_read_at_train(data_dir, films_dir):
    with pytest.raises(DatasetError, match=r"covid-3class has no 'test' folder \(it has train/\); choose a split"):
        discover(data_dir / "covid-3class", evaluation_split(data_dir / "covid-3class"))
    with pytest.raises(DatasetError, match="films has no split folders"):
        discover(films_dir, "test")


def test_evaluation_accepts_a_subset_of_the_models_classes(kaggle_root, tmp_path):
    loaded = load_checkpoint(_register(tmp_path / "models", "four-v1", FOUR))
    # COVID-19 films, not the TB folder's: shared-data/tb holds noise textures (issue 14), which evaluate leaves out
    covid_only = _link_tree(tmp_path / "covid-only", {"COVID": sorted((kaggle_root / "test" / "COVID19").iterdir())})
    report = evaluate_folder(loaded, covid_only)
    assert report.n == 3 and report.class_counts == [3, 0, 0, 0] and report.classes == list(FOUR)


# --- manifests --------------------------------------------------------------------------------------------

TB_ROOT = "tb-films"  # the data root the four-class manifest reads TUBERCULOSIS from; no site here has one


@pytest.fixture
def tb_films_root(tmp_path, settings_env, data_dir) -> Path:
    """A configured ``tb-films`` root whose ``Tuberculosis`` folder links to shared-data/tb/train/Tuberculosis.
    Those files are noise textures, not films: good enough for manifest mechanics (which folder feeds which
    class, caps, sources), which never look at pixels; no figure of a model may come from them."""
    root = _link_tree(tmp_path / "tb-films-root",
                      {"Tuberculosis": sorted((data_dir / "tb" / "train" / "Tuberculosis").iterdir())})
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {TB_ROOT: str(root)}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    return root


def test_the_shipped_four_class_manifest_reads_tuberculosis_from_a_site_root():
    assert set(shipped_manifests()) == {"four-class"}
    manifest = load_manifest(find_manifest("four-class"))
    assert manifest.task is TASKS["four-class"] and len(manifest.folders) == 6 and "1500" in manifest.description
    assert not any(f.label.startswith("shared-data/tb/") for f in manifest.folders)  # noise textures, not films
    (tb,) = [f for f in manifest.folders if f.class_name == "TUBERCULOSIS"]
    assert (tb.label, tb.source) == (f"{TB_ROOT}/Tuberculosis", TB_ROOT)
    assert "no real tuberculosis films are available" in " ".join(manifest.description.split())
    assert "data-roots.toml" in manifest.description


def test_without_the_tb_root_training_four_class_is_refused_by_the_folders_label(tmp_path, data_dir):
    from core.training.train import train

    expected = r"Manifest four-class: tb-films/Tuberculosis is not a folder inside a configured data root"
    with pytest.raises(DatasetError, match=expected) as caught:
        training_films("four-class")
    with pytest.raises(DatasetError, match=expected) as trained:
        train("four-class", TrainConfig(arch="logistic", epochs=1, image_size=32, max_films=40), directory=tmp_path)
    for message in (str(caught.value), str(trained.value)):
        assert str(data_dir) not in message and str(MANIFESTS) not in message  # a label, never a server path
        assert "this server has no data root named tb-films" in message and "data-roots.toml" in message
    assert not list(tmp_path.iterdir())  # nothing was registered


def test_the_four_class_manifest_with_a_tb_root(tb_films_root):
    manifest = load_manifest(find_manifest("four-class"))
    films = manifest_films(manifest)
    assert films.classes == FOUR and films.class_counts() == [111, 70 + 1341, 1500 + 70, 150]
    counts = {s: films.sources.count(s) for s in set(films.sources)}
    assert counts == {"covid-3class": 251, "kermany-224": 2841, TB_ROOT: 150}
    viral = [l for p, l in zip(films.paths, films.labels) if p.parent.name == "Viral Pneumonia"]
    assert len(viral) == 70 and set(viral) == {FOUR.index("PNEUMONIA")}
    assert manifest_films(manifest).paths == films.paths  # the capped subset is fixed
    assert fingerprint(films).sha256 != fingerprint(FilmSet(films.paths, films.labels, films.classes)).sha256


@pytest.fixture
def ward(tmp_path, settings_env, films_dir) -> Path:
    """A data root named ``ward`` holding NORMAL and PNEUMONIA film folders and an empty one."""
    root = _link_tree(tmp_path / "ward-root", {"normals": _films(films_dir / "NORMAL", 0, 3),
                                               "pneumonias": _films(films_dir / "PNEUMONIA", 0, 3)})
    (root / "empty").mkdir()
    roots = tmp_path / "roots.json"
    roots.write_text(json.dumps({"roots": {"ward": str(root)}}))
    settings_env(CXR_DATA_ROOTS=str(roots))
    return tmp_path


def _manifest(where: Path, body: str, task: str = "pneumonia") -> Path:
    path = where / "mine.toml"
    path.write_text(f'task = "{task}"\ndescription = "a test"\n{body}')
    return path


FOLDER = '[[folder]]\nroot = "{root}"\nclass = "{cls}"\n'
GOOD = FOLDER.format(root="ward/normals", cls="Normal") + FOLDER.format(root="ward/pneumonias", cls="PNEUMONIA")


def test_a_manifest_file_trains_like_a_folder(ward):
    path = _manifest(ward, GOOD + "max_films = 2\n")
    films, extra = training_films(path)
    assert extra is None and films.classes == ("NORMAL", "PNEUMONIA") and films.class_counts() == [3, 2]
    assert set(films.sources) == {"normals", "pneumonias"}  # default source: the label's first folder


@pytest.mark.parametrize("body, task, message", [
    (FOLDER.format(root="ward/normals", cls="EFFUSION"), "pneumonia", "class 'EFFUSION', which is not a class of "
                                                                        "task pneumonia"),
    (GOOD.replace("PNEUMONIA", "VIRAL PNEUMONIA"), "pneumonia", "not a class of task pneumonia"),
    (GOOD.replace("ward/pneumonias", "nowhere/x"), "pneumonia", "nowhere/x is not a folder inside a configured "
                                                                 "data root: this server has no data root named "
                                                                 "nowhere \\(it has shared-data, ward\\)"),
    (GOOD.replace("ward/pneumonias", "ward/no-such"), "pneumonia", "ward has no such folder, or it leads outside"),
    (GOOD.replace("ward/pneumonias", "ward/../outside"), "pneumonia", "ward has no such folder, or it leads outside"),
    (GOOD.replace("ward/pneumonias", "ward/empty"), "pneumonia", "ward/empty holds no films"),
    (FOLDER.format(root="ward/normals", cls="NORMAL"), "pneumonia", "no folder for class\\(es\\) PNEUMONIA"),
    (GOOD, "effusion", "names task 'effusion'; the tasks are pneumonia, covid, four-class"),
    (GOOD + "max_film = 3\n", "pneumonia", "Manifest mine: folder.1.max_film"),
    (GOOD + "[[folder", "pneumonia", "Manifest mine is not valid TOML"),
    ("seed = -1\n" + GOOD, "pneumonia", "Manifest mine: seed: Input should be greater than or equal to 0"),
])
def test_manifest_errors_say_what_to_fix_without_server_paths(ward, body, task, message):
    with pytest.raises(DatasetError, match=message) as caught:
        training_films(_manifest(ward, body, task))
    assert str(ward) not in str(caught.value)


def test_a_folder_is_a_folder_and_a_missing_manifest_is_named(kermany_train, tmp_path):
    assert find_manifest(kermany_train) is None
    with pytest.raises(DatasetError, match="Manifest other.toml does not exist; the shipped manifests are four-class"):
        find_manifest(tmp_path / "other.toml")


# --- near-duplicates and the split --------------------------------------------------------------------------

def test_covid_set_copies_are_grouped_and_kept_on_one_side(data_dir):
    films = discover(data_dir / "covid-3class")
    groups, duplicates = film_groups(films)
    named = {tuple(sorted(f"{films.paths[i].parent.name}/{films.paths[i].name}" for i in pair))
             for pair in duplicates.pairs}
    assert (duplicates.films, duplicates.groups) == (10, 5)  # measured: 5 pairs of copies in 251 films
    assert ("Covid/COVID-00033.jpg", "Covid/COVID-00037.jpg") in named and ("Covid/057.jpeg", "Covid/078.jpeg") in named
    assert len(np.unique(groups)) == 251 - 5
    for seed in (0, 1, 2):
        train, val = patient_split(films, 0.2, seed, groups)
        for a, b in duplicates.pairs:
            assert (films.paths[a] in val.paths) == (films.paths[b] in val.paths)
    assert "10 films in 5 groups" in duplicates.note()


def test_kermany_splits_are_exactly_what_they_were(kermany_train):
    films = discover(kermany_train)
    groups, duplicates = film_groups(films)
    assert duplicates.films == 0 and list(groups) == [patient_id(p) for p in films.paths]
    folds = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=0)  # the split before #14, inline
    _, before = next(folds.split(np.zeros(len(films)), films.labels, [patient_id(p) for p in films.paths]))
    assert patient_split(films, 0.2, 0)[1].paths == tuple(films.paths[i] for i in before)


def test_a_kermany_copy_in_another_set_joins_its_kermany_patient(data_dir):
    kermany = discover(data_dir / "kermany-224" / "train")
    keep = np.flatnonzero([patient_id(p) in ("IM-0240", "IM-0466", "IM-0115") for p in kermany.paths])
    covid = discover(data_dir / "covid-3class")
    normals = np.flatnonzero(covid.labels == covid.classes.index("NORMAL"))
    both = kermany.subset(keep).joined(covid.subset(normals).in_classes(("NORMAL", "PNEUMONIA")))
    groups, duplicates = film_groups(both)
    group_of = dict(zip((f"{p.parent.name}/{p.name}" for p in both.paths), groups))
    assert group_of["Normal/01.jpeg"] == group_of["NORMAL/IM-0240-0001.jpeg"]
    assert group_of["Normal/010.jpeg"] == group_of["NORMAL/IM-0466-0001.jpeg"]
    assert group_of["NORMAL/IM-0115-0001.jpeg"] == "IM-0115"  # no copy: its patient group as before
    assert duplicates.films >= 6  # the two copies above and the COVID set's own pair of normals, 019 and 020


def test_training_splits_a_shipped_manifest_by_its_name(tb_films_root):
    """What train(), the job runner and resumes call: a manifest's name where a folder would be."""
    notes: list[str] = []
    config = TrainConfig(arch="logistic", max_films=300)  # the per-class shares round to exactly 300
    films, train_set, val_set, _ = split_films("four-class", config, notes)
    assert films.classes == FOUR and len(films) == 300 and len(train_set) + len(val_set) == 300
    assert min(val_set.class_counts()) >= 2 and set(val_set.sources) == {"covid-3class", "kermany-224", TB_ROOT}
    assert all(train_set.sources[i] == films.sources[films.paths.index(p)] for i, p in enumerate(train_set.paths))
    again = split_films("four-class", config)[2]
    assert again.paths == val_set.paths and fingerprint(again) == fingerprint(val_set)


# --- defaults per task on the command line ----------------------------------------------------------------

@pytest.fixture
def three_tasks(tmp_path, settings_env) -> Path:
    """The session's empty shipped folder and a site folder with a default for each of the three tasks, the
    four-class one promoted last."""
    site = tmp_path / "site"
    _register(site, "pneu-v1", ("NORMAL", "PNEUMONIA"))
    _register(site, "covid-v1", ("COVID-19", "NORMAL", "VIRAL PNEUMONIA"))
    _register(site, "four-v1", FOUR)
    settings_env(CXR_MODELS=str(site))
    return site


def _cli(capsys, *args) -> tuple[int, list[dict]]:
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:
        code = exit_.code
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]


def test_a_four_class_default_never_takes_over_pneumonia(three_tasks, capsys, normal_film_path):
    assert find_model(None).name == "pneu-v1"  # although four-v1 was promoted last
    code, lines = _cli(capsys, "predict", normal_film_path, "--json")
    assert code == 0 and lines[0]["model"] == "pneu-v1" and set(lines[0]["probabilities"]) == {"NORMAL", "PNEUMONIA"}
    code, lines = _cli(capsys, "predict", normal_film_path, "--json", "--task", "four-class")
    assert code == 0 and lines[0]["model"] == "four-v1" and set(lines[0]["probabilities"]) == set(FOUR)
    code, lines = _cli(capsys, "predict", normal_film_path, "--model", "covid-v1", "--task", "pneumonia")
    assert code == 1 and "covid-v1 is of task covid, not pneumonia" in lines[0]["error"]
    code, lines = _cli(capsys, "models", "--json")
    rows = {row["name"]: (row["task"], row["task_title"], row["is_default"]) for row in lines[0]["models"]}
    assert rows == {"pneu-v1": ("pneumonia", "Pneumonia", True), "covid-v1": ("covid", "COVID-19", True),
                    "four-v1": ("four-class", "Four classes (with tuberculosis)", True)}


def test_without_a_pneumonia_default_predict_asks_for_a_task(tmp_path, settings_env, capsys, normal_film_path):
    site = tmp_path / "site"
    _register(site, "covid-v1", ("COVID-19", "NORMAL", "VIRAL PNEUMONIA"))
    settings_env(CXR_MODELS=str(site))
    assert _cli(capsys, "predict", normal_film_path, "--json")[1][0]["model"] == "covid-v1"  # the only task
    _register(site, "four-v1", FOUR)
    code, lines = _cli(capsys, "predict", normal_film_path, "--json")
    assert code == 1 and "Several tasks have a default model" in lines[0]["error"] and "--task" in lines[0]["error"]


def test_evaluate_picks_the_smallest_task_that_covers_the_folder(three_tasks, kaggle_root, films_dir, capsys):
    assert find_default_for_classes(("NORMAL", "PNEUMONIA")).name == "pneu-v1"
    assert find_default_for_classes(("COVID-19", "NORMAL")).name == "covid-v1"
    assert find_default_for_classes(("TUBERCULOSIS",)).name == "four-v1"
    assert find_default_for_classes(("NORMAL",)).name == "pneu-v1"  # two classes: fewer than the others
    code, lines = _cli(capsys, "evaluate", films_dir, "--json")
    assert code == 0 and lines[0]["model"] == "pneu-v1" and lines[0]["n"] == 16
    code, lines = _cli(capsys, "evaluate", kaggle_root, "--json", "--split", "val")  # 2 TB noise textures left out
    assert code == 0 and lines[0]["model"] == "four-v1" and lines[0]["n"] == 6 and len(lines[0]["skipped"]) == 2
    _register(three_tasks, "tb-v1", ("NORMAL", "TUBERCULOSIS"))
    with pytest.raises(ModelNotFound, match=r"several tasks read NORMAL: (pneu-v1 \(pneumonia\)|tb-v1 "
                                            r"\(tuberculosis\)), (pneu-v1|tb-v1) .*choose one with --model"):
        find_default_for_classes(("NORMAL",))
    code, lines = _cli(capsys, "evaluate", films_dir / "NORMAL", "--json")
    assert code == 1 and "not a class-folder tree" in lines[0]["error"]  # a class folder itself is no tree


def test_evaluate_never_reads_a_folder_with_a_larger_task_s_default_when_the_smallest_has_none(tmp_path,
                                                                                                settings_env):
    """Found by a CLI review: a pneumonia task whose versions had not cleared the floor (so no default) had its
    folder quietly read by the four-class default, while predict refuses such a task."""
    site = tmp_path / "site"
    _register(site, "pneu-v1", ("NORMAL", "PNEUMONIA"), default=False)
    _register(site, "four-v1", FOUR)
    settings_env(CXR_MODELS=str(site))
    with pytest.raises(ModelNotFound, match=r"^The pneumonia task, whose models read NORMAL, PNEUMONIA, has no "
                                            r"default model .*: pneu-v1\. Choose one with --model"):
        find_default_for_classes(("NORMAL", "PNEUMONIA"))
    assert find_default_for_classes(("TUBERCULOSIS",)).name == "four-v1"  # only the four-class task reads it
