"""Evaluating a registered model on a class-folder tree: class mapping, unreadable films, refusals."""
from __future__ import annotations

import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from core.errors import DatasetError
from core.evaluation.folder import evaluate_folder
from core.store.checkpoints import load_checkpoint
from core.store.reports import Report


@pytest.fixture(scope="module")
def loaded(trained_model):
    return load_checkpoint(trained_model.json_path)


SAME = {"NORMAL": "NORMAL", "PNEUMONIA": "PNEUMONIA"}


def _copy(films_dir, target, folders: dict[str, str], per_class: int = 2):
    for source, name in folders.items():
        (target / name).mkdir(parents=True)
        for path in sorted((films_dir / source).iterdir())[:per_class]:
            shutil.copy(path, target / name / path.name)
    return target


def test_unreadable_films_are_listed_not_fatal(loaded, films_dir, tmp_path):
    root = _copy(films_dir, tmp_path / "data", SAME)
    (root / "PNEUMONIA" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    report = evaluate_folder(loaded, root)
    assert isinstance(report, Report) and report.model == loaded.name
    assert report.n == 4
    assert sum(map(sum, report.confusion_matrix)) == 4
    (skipped,) = report.skipped
    assert skipped.file.endswith("broken.png") and "broken.png" in skipped.error
    assert report.to_json()["skipped"] == [{"file": skipped.file, "error": skipped.error}]  # the CLI's layout


def test_class_folders_match_case_insensitively(loaded, films_dir, tmp_path):
    upper = evaluate_folder(loaded, _copy(films_dir, tmp_path / "upper", SAME))
    lower_case = {"NORMAL": "normal", "PNEUMONIA": "pneumonia"}
    lower = evaluate_folder(loaded, _copy(films_dir, tmp_path / "lower", lower_case))
    assert lower.confusion_matrix == upper.confusion_matrix
    assert lower.class_counts == [2, 2]


def test_folders_in_the_other_order_keep_their_labels(loaded, films_dir, tmp_path):
    # On disk "PNEUMONIA" sorts before "normal" (upper case first), so discovery numbers the folders the other
    # way round from the model's classes; labels must be mapped by name, not by position.
    swapped = _copy(films_dir, tmp_path / "data", {"PNEUMONIA": "PNEUMONIA", "NORMAL": "normal"}, per_class=3)
    report = evaluate_folder(loaded, swapped)
    reference = evaluate_folder(loaded, _copy(films_dir, tmp_path / "ref", SAME, per_class=3))
    assert report.confusion_matrix == reference.confusion_matrix
    assert report.auc == pytest.approx(reference.auc)


def test_unknown_class_folder_is_refused(loaded, films_dir, tmp_path):
    root = _copy(films_dir, tmp_path / "data", {"NORMAL": "NORMAL", "PNEUMONIA": "COVID"})
    with pytest.raises(DatasetError, match="COVID"):
        evaluate_folder(loaded, root)


def test_folder_of_unreadable_films_is_refused(loaded, tmp_path):
    for name in ("NORMAL", "PNEUMONIA"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.png").write_bytes(b"")
    with pytest.raises(DatasetError) as refused:
        evaluate_folder(loaded, tmp_path)
    assert str(refused.value) == (f"No film in {tmp_path} can be scored: NORMAL: x.png is empty (0 bytes): nothing of "
                                  "the film arrived. Upload or copy it again; PNEUMONIA: x.png is empty (0 bytes): "
                                  "nothing of the film arrived. Upload or copy it again.")  # why (a CLI review), and
    # which x.png: two class folders may hold the same name


def test_a_film_refused_for_a_passing_reason_stops_the_evaluation_not_listed_as_unreadable(loaded, films_dir,
                                                                                           tmp_path, monkeypatch):
    """A decoding process that did not start says nothing about the film: listing it as unreadable would put it
    in a report that Compare keeps for hours; the evaluation says to try again instead."""
    from core.errors import DecodingUnavailable
    from core.evaluation import folder

    root = _copy(films_dir, tmp_path / "data", SAME)
    read = folder.read_film_file

    def busy(path, *args, **kwargs):
        if path.name == sorted((root / "PNEUMONIA").iterdir())[0].name:
            raise DecodingUnavailable("Films cannot be decoded right now: the decoding process did not start. "
                                      "Try again.")
        return read(path, *args, **kwargs)

    monkeypatch.setattr(folder, "read_film_file", busy)
    with pytest.raises(DecodingUnavailable, match="Try again"):
        evaluate_folder(loaded, root)


def test_films_are_decoded_only_a_little_ahead_of_the_model(loaded, films_dir, monkeypatch):
    """A review: every film of the folder was decoded ahead of the model and held (about 5 GB for 100,000 films);
    at most the workers' and two batches' worth are now."""
    import threading
    import time

    from core.evaluation import folder as evaluation

    decoded, lock, behind = [0], threading.Lock(), []
    original, films = evaluation.film_to_tensor, {}

    def counted(*args, **kwargs):
        with lock:
            decoded[0] += 1
        return original(*args, **kwargs)

    def read_at_once(path, *args, **kwargs):  # decoding far faster than the model: it runs as far ahead as allowed
        return films[path] if path in films else films.setdefault(path, read_film(path, *args, **kwargs))

    def slow_model(model, batch):
        time.sleep(0.2)  # a model slower than decoding: what a large folder on a busy CPU looks like
        return original_probabilities(model, batch)

    original_probabilities, read_film = evaluation.probabilities, evaluation.read_film_file
    evaluate_folder(loaded, films_dir, batch_size=4)  # every film read once, kept for the run below
    monkeypatch.setattr(evaluation, "read_film_file", read_at_once)
    evaluate_folder(loaded, films_dir, batch_size=4)
    monkeypatch.setattr(evaluation, "film_to_tensor", counted)
    monkeypatch.setattr(evaluation, "probabilities", slow_model)
    report = evaluate_folder(loaded, films_dir, batch_size=1, workers=2,
                             on_progress=lambda done, total: behind.append(decoded[0] - done))
    # ahead as far as allowed (the workers' and two batches' worth, less the film just taken, counted done), never
    # further (a review of the tests: with decoding as slow as the model, a bound alone held for a decoder that
    # ran ahead without limit too; such a one is 15 ahead here)
    assert report.n == 16 and max(behind) == 2 + 2 * 1 - 1


def test_films_triage_would_not_triage_are_left_out_and_listed(loaded, films_dir, tmp_path):
    """A blank image and a CT in a PNEUMONIA folder were scored as routine misses, and sensitivity fell without a
    word (a review): they are listed as Triage would leave them, and the figures are the triaged films'."""
    from PIL import Image

    from tests.corpus import non_chest_images

    root = _copy(films_dir, tmp_path / "data", SAME)
    reference = evaluate_folder(loaded, root)
    Image.new("L", (2000, 2000), 128).save(root / "PNEUMONIA" / "blank.png")
    ct_name, ct_bytes = next((name, data) for name, data in non_chest_images() if name == "CT_small.dcm")
    (root / "PNEUMONIA" / ct_name).write_bytes(ct_bytes)
    report = evaluate_folder(loaded, root)
    assert report.n == 4 and report.class_counts == [2, 2]
    assert report.confusion_matrix == reference.confusion_matrix and report.auc == pytest.approx(reference.auc)
    reasons = {skipped.file.rsplit("/", 1)[-1]: skipped.error for skipped in report.skipped}
    assert reasons == {
        "blank.png": "blank.png would not be triaged, so it is left out of the figures: The image is almost uniform "
                     "(blank); there is no film content to read.",
        "CT_small.dcm": "CT_small.dcm would not be triaged, so it is left out of the figures: This image does not look "
                        "like a chest film: it is unlike every chest film the check was built on."}


def test_films_unlike_the_model_s_training_films_are_counted_and_said(loaded, films_dir, dicom_dir, tmp_path,
                                                                       monkeypatch):
    """A browser review: two adult DICOMs among a paediatric model's normal films lowered its specificity with no
    word, while Triage warns on each."""
    from core.evaluation.folder import read_folder

    root = _copy(films_dir, tmp_path / "data", SAME)
    for adult in sorted(dicom_dir.glob("*.dcm")):
        shutil.copy(adult, root / "NORMAL" / adult.name)
    reading = read_folder(loaded, root)
    # the two DICOMs are one adult film, encoded twice: counted once, and warned on
    assert reading.report.n == 5 and reading.atypical == 1  # measured: the adult, no Kermany film
    assert reading.cautions() == [
        f"1 of the 5 films scored are unlike the films {loaded.name} learnt from (paediatric chest films, "
        "Guangzhou): Triage warns on such films and keeps their priority, and the figures here may not hold for them."]
    # without the chest-film detector (its files damaged) the population check still counts, and that is said too
    from core.errors import CheckpointError
    from core.serving.chest_check import ChestFilmCheck

    monkeypatch.setattr(ChestFilmCheck, "shared", mock.Mock(side_effect=CheckpointError("damaged")))
    unscreened = read_folder(loaded, root)
    assert unscreened.atypical == 1 and unscreened.unscreened and unscreened.cautions()[1] == (
        "The chest-film check could not be loaded (the server log says why), so images that are not chest films may be "
        "counted in these figures.")


def test_a_copy_is_counted_once_and_a_film_filed_under_two_classes_not_at_all(loaded, films_dir, tmp_path):
    """A browser review: a byte copy of a normal film filed under PNEUMONIA was scored as a miss, and sensitivity fell
    without a word (a link to one film from two class folders is refused when the folder is listed)."""
    root = _copy(films_dir, tmp_path / "data", SAME)
    normal, pneumonia = (sorted((root / name).iterdir())[0] for name in ("NORMAL", "PNEUMONIA"))
    shutil.copy(normal, root / "PNEUMONIA" / "relabelled.jpeg")
    shutil.copy(pneumonia, root / "PNEUMONIA" / "zz-again.jpeg")
    report = evaluate_folder(loaded, root)
    assert report.n == 3 and report.class_counts == [1, 2]
    assert {s.file.rsplit("/", 1)[-1]: s.error for s in report.skipped} == {
        normal.name: f"{normal.name} is the same file, byte for byte, as PNEUMONIA/relabelled.jpeg, filed under "
                     "another class, so neither is counted: correct the label.",
        "relabelled.jpeg": f"relabelled.jpeg is the same file, byte for byte, as NORMAL/{normal.name}, filed under "
                           "another class, so neither is counted: correct the label.",
        "zz-again.jpeg": f"zz-again.jpeg is a copy, byte for byte, of PNEUMONIA/{pneumonia.name}, so it is counted "
                         "once."}


def test_evaluate_says_so_among_its_cautions(trained_model, films_dir, dicom_dir, tmp_path, run_cli):
    root = _copy(films_dir, tmp_path / "data", SAME)
    for adult in sorted(dicom_dir.glob("*.dcm")):
        shutil.copy(adult, root / "NORMAL" / adult.name)
    done = run_cli("evaluate", root, "--model", trained_model.name, "--json", checkpoints=trained_model.directory)
    assert done.returncode == 0
    (said,) = [c for c in done.json_lines()[0]["cautions"] if "unlike the films" in c]
    assert said.startswith(f"1 of the 5 films scored are unlike the films {trained_model.name} learnt from")


def test_films_left_out_are_listed_in_the_folder_s_order_whichever_check_left_them_out(loaded, films_dir, tmp_path):
    """A re-read: a film the chest-film check left out was listed at its batch's end, after the files found
    unreadable meanwhile, so the list did not follow the folder (and Compare, which lists identical lists once, showed
    two models' lists as two while a verdict memo ran)."""
    from tests.corpus import non_chest_images

    root = _copy(films_dir, tmp_path / "data", SAME)
    (root / "NORMAL" / "a-ct.dcm").write_bytes(dict(non_chest_images())["CT_small.dcm"])
    (root / "NORMAL" / "b-empty.png").write_bytes(b"")
    assert [Path(s.file).name for s in evaluate_folder(loaded, root).skipped] == ["a-ct.dcm", "b-empty.png"]


def test_links_leading_out_of_the_data_roots_are_listed_so_that_the_counts_add_up(loaded, films_dir, tmp_path,
                                                                                  settings_env, data_dir):
    """A review: a folder of 5 film files was evaluated on 4 with no word of the fifth (a link out of the roots,
    never read, as it should be); only the server log said so."""
    from core.evaluation.folder import read_folder

    root, outside = tmp_path / "site-films", tmp_path / "secret"
    _copy(films_dir, root / "batch", SAME)
    outside.mkdir()
    (outside / "x.jpeg").write_bytes(next((films_dir / "NORMAL").iterdir()).read_bytes())
    (root / "batch" / "NORMAL" / "linked.jpeg").symlink_to(outside / "x.jpeg")
    config = tmp_path / "config" / "cxr-triage"
    config.mkdir(parents=True)
    (config / "data-roots.toml").write_text(f'[roots]\nsite = "{root}"\n')
    settings_env(XDG_CONFIG_HOME=str(tmp_path / "config"), CXR_DATA=str(data_dir))
    reading = read_folder(loaded, root / "batch")
    assert reading.report.n == 4 and [(Path(film.file).name, film.error) for film in reading.report.skipped] == [
        ("linked.jpeg", "linked.jpeg is a link leading outside the data roots, which are never read.")]


def test_a_film_whose_grey_levels_look_reversed_is_left_out_for_every_model_alike(loaded, films_dir, tmp_path):
    """Triage withholds a routine call on such a film and keeps an urgent one (core.serving.film_checks): which
    depends on the model, so evaluate leaves every such film out, for every model alike (a browser review: Compare
    read one model on 10 films and three on 9, one inverted film apart)."""
    from PIL import Image, ImageOps

    from core.evaluation.folder import REVERSED_LEFT_OUT

    root = _copy(films_dir, tmp_path / "data", SAME, per_class=8)
    for path in sorted(root.glob("*/*.jpeg")):
        with Image.open(path) as film:
            ImageOps.invert(film.convert("L")).save(path.with_name(f"inverted-{path.name}"))
    report = evaluate_folder(loaded, root)
    inverted = sorted(path.name for path in root.glob("*/inverted-*"))
    assert report.n == 16 and len(inverted) == 16 and sorted(
        (Path(film.file).name, film.error) for film in report.skipped) == [
        (name, f"{name} is left out of the figures: {REVERSED_LEFT_OUT}") for name in inverted]


def test_the_same_film_at_another_size_or_encoding_is_counted_once_and_not_at_all_under_two_classes(loaded, films_dir,
                                                                                                   dicom_dir, tmp_path):
    """A review: the adult DICOM exported twice (uncompressed, JPEG 2000) and a film saved again smaller were each
    counted twice; a byte-for-byte copy already counted once."""
    from PIL import Image

    root = _copy(films_dir, tmp_path / "data", SAME)
    for adult in sorted(dicom_dir.glob("*.dcm")):
        shutil.copy(adult, root / "NORMAL" / adult.name)
    normal = sorted((root / "NORMAL").glob("*.jpeg"))[0]
    with Image.open(normal) as film:
        film.resize((film.width // 2, film.height // 2)).save(root / "NORMAL" / "smaller.png")
    report = evaluate_folder(loaded, root)
    assert report.n == 5 and [(Path(film.file).name, film.error) for film in report.skipped] == [
        ("RG1_UNCI.dcm", "RG1_UNCI.dcm is the same film as NORMAL/RG1_J2KI.dcm at another size, contrast or crop, so "
                         "it is counted once."),
        ("smaller.png", f"smaller.png is the same film as NORMAL/{normal.name} at another size, contrast or crop, so "
                        "it is counted once.")]
    (root / "NORMAL" / "smaller.png").rename(root / "PNEUMONIA" / "smaller.png")  # filed under the other class
    report = evaluate_folder(loaded, root)
    assert report.n == 4 and sorted(Path(film.file).name for film in report.skipped) == sorted(
        ["RG1_UNCI.dcm", "smaller.png", normal.name])
    assert all(film.error.endswith("and its copies are filed under two classes, so none is counted: correct the label.")
               for film in report.skipped if film.file.endswith((".png", ".jpeg")))


def test_films_stored_in_16_bits_are_compared_as_read_not_clipped(loaded, data_dir, tmp_path):
    """A re-read: the fine-detail check read a 12-bit film in a 16-bit PNG through Pillow's 8-bit conversion, which
    clips it white, and a film whose detail cannot be read counts as the same film: two children's films that the
    split's rule joins (rejected in detail when read as they are) were counted as one."""
    from PIL import Image

    (tmp_path / "NORMAL").mkdir()
    for name in ("IM-0210-0001.jpeg", "IM-0525-0001-0002.jpeg"):
        grey = np.asarray(Image.open(data_dir / "kermany-224" / "train" / "NORMAL" / name).convert("L"), np.uint16)
        Image.fromarray(grey * 16 + 300).save(tmp_path / "NORMAL" / name.replace(".jpeg", ".png"))
    report = evaluate_folder(loaded, tmp_path)
    assert report.n == 2 and not report.skipped


@pytest.mark.parametrize("pairs, left_out", [([[0, 1], [1, 2]], {0, 1, 2}),  # A~B in NORMAL, B~C across classes
                                             ([[0, 1], [0, 3]], {0, 1, 3}),  # A~B across classes, A~D in NORMAL
                                             ([[0, 3]], {3})])  # A~D in NORMAL: D counted once
def test_copies_are_counted_by_group_not_pair_by_pair(pairs, left_out, monkeypatch):
    """A re-read: pair by pair, A~B (one class) and B~C (two classes) still counted A, and A~B (two classes) with
    A~D (one class) said D was "counted once" while none of them was."""
    import core.evaluation.folder as folder

    keys = ["/f/NORMAL/a.png", "/f/NORMAL/b.png", "/f/PNEUMONIA/c.png", "/f/NORMAL/d.png"]
    labels = [0, 0, 1, 0]
    if pairs == [[0, 1], [0, 3]]:
        labels = [0, 1, 1, 0]
    monkeypatch.setattr(folder, "repeats_in_detail", lambda films, signatures: np.array(pairs))
    kept, out = folder._one_film_each(keys, labels, [None] * 4, [0, 1, 2, 3])
    assert set(range(4)) - set(kept) == left_out and len(out) == len(left_out)
    assert all(("two classes" in film.error) == (len(left_out) > 1) for film in out)
