"""Edges of the two-tier model store found by a review: a linked file in the shipped folder, a shipped version
without its population file, and a population check whose description could not be written."""
from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from core.errors import CheckpointError, ModelNotFound
from core.models.build import build_model
from core.models.features import GaussianScore
from core.store import manifest
from core.store.checkpoints import load_checkpoint, population_file, save_checkpoint
from core.store.records import PopulationCheck
from core.store.registry import find_model, list_models, listing, set_default
import test_model_tiers
from test_model_tiers import record_for, save

tiers = test_model_tiers.tiers  # that file's two-tier folders, a fixture


def _score(seed: int) -> GaussianScore:
    features = np.random.default_rng(seed).normal(size=(24, 8))
    return GaussianScore.fit(features, components=3)


def _check() -> PopulationCheck:
    return PopulationCheck(population="test films", fitted_on=24, components=3, threshold=5.0, quantile=0.98,
                           validation_films=8, validation_warn_rate=0.0)


def _save_with_check(folder: Path, name: str) -> Path:
    model, _ = build_model("logistic", 2, 32)
    record = record_for(name).model_copy(update={"population_check": _check()})
    save_checkpoint(folder, model, record, _score(0))
    return folder / f"{name}.json"


def _files(folder: Path) -> dict[str, bytes]:
    """The folder's files and their bytes, without its lock file."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".registry.lock"}


# --- a linked file in the shipped folder --------------------------------------------------------------------


@pytest.mark.parametrize("target", ["outside", "inside"])
def test_a_linked_shipped_file_is_a_problem_named_without_paths_not_a_crash(tiers, tmp_path, target):
    """``_key`` resolved the link and then failed (ValueError) for every listing, page and command, naming the
    server paths; a link to a description outside the folder was not even seen as shipped when loaded."""
    shipped, _ = tiers
    if target == "outside":
        source = save(tmp_path / "elsewhere", "linked-v1")
        (shipped / "linked-v1.pt").symlink_to(source.with_suffix(".pt"))
    else:  # a second name for a listed description: its bytes match the manifest, the name does not
        source = shipped / "ship-pneu-v2.json"
    (shipped / "linked-v1.json").symlink_to(source)
    refused = "Shipped file linked-v1.json is refused: shipped files must be regular files"
    entries, problems = list_models()
    assert sorted(e.name for e in entries) == ["ship-pneu-v1", "ship-pneu-v2", "ship-tb-v1"]
    assert [p for p in problems if p.startswith(refused)] == problems[:1] and len(problems) == 1
    assert str(tmp_path) not in problems[0]
    with pytest.raises(CheckpointError, match=refused):
        load_checkpoint(shipped / "linked-v1.json")
    checked = manifest.check(shipped)
    assert any(p.startswith(refused) for p in checked) and not any(str(tmp_path) in p for p in checked)
    assert manifest.is_shipped(shipped / "linked-v1.json")


def test_the_models_command_lists_a_linked_shipped_file_as_a_problem(tiers, tmp_path, run_cli):
    shipped, site = tiers
    (shipped / "linked-v1.json").symlink_to(save(tmp_path / "elsewhere", "linked-v1"))
    result = run_cli("models", "--json", checkpoints=site)
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    (line,) = result.json_lines()
    assert sorted(m["name"] for m in line["models"]) == ["ship-pneu-v1", "ship-pneu-v2", "ship-tb-v1"]
    assert len(line["problems"]) == 1 and "linked-v1.json is refused" in line["problems"][0]
    assert str(tmp_path) not in result.stdout + result.stderr


# --- a shipped version without its population file ----------------------------------------------------------


def test_a_shipped_default_without_its_population_file_is_a_broken_default(tiers):
    """The listing served it (\"triages without its population check\") while loading refused it: a shipped
    version must have every file its manifest lists."""
    shipped, _ = tiers
    json_path = _save_with_check(shipped, "ship-pneu-v3")
    manifest.write_manifest(shipped)
    set_default("ship-pneu-v3")
    assert find_model(None, task="pneumonia").name == "ship-pneu-v3"
    population_file(json_path).unlink()
    with pytest.raises(CheckpointError, match="ship-pneu-v3.population.pt cannot be read"):
        load_checkpoint(json_path)
    entries, problems, broken = listing()
    assert "ship-pneu-v3" not in {e.name for e in entries}
    assert broken["pneumonia"][0] == "ship-pneu-v3"
    assert problems[0] == ("ship-pneu-v3.json names population-check file ship-pneu-v3.population.pt, which is "
                           "missing, so the model cannot be used: a shipped version must have every file its "
                           "checksum manifest lists. Restore the checkpoints folder from the repository.")
    with pytest.raises(ModelNotFound, match="The default model of the pneumonia task, ship-pneu-v3, cannot be used"):
        find_model(None, task="pneumonia")


def test_a_broken_site_default_leaves_its_task_without_a_default_in_the_listing_too(tiers):
    """A review: find_model refused the site's broken default, yet the listing (what the app offers) marked the
    shipped default as the task's default, so Triage served it in its place without a word."""
    from dashboard.components.task_choice import with_defaults

    shipped, site = tiers
    save(site, "site-pneu-v1")
    set_default("site-pneu-v1")
    (site / "site-pneu-v1.json").write_text((site / "site-pneu-v1.json").read_text()[:40])
    with pytest.raises(ModelNotFound, match="site-pneu-v1, cannot be used"):
        find_model(None, task="pneumonia")
    entries, problems, broken = listing()
    assert broken["pneumonia"][0] == "site-pneu-v1"
    assert [e.name for e in entries if e.is_default] == ["ship-tb-v1"] and entries[0].name == "ship-tb-v1"  # first
    served, left_out = with_defaults(entries)
    assert {e.task for e in served} == {"tuberculosis"} and left_out == ["pneumonia"]


def test_a_shipped_description_edited_on_disk_is_refused_not_re_signed_by_a_change(tiers):
    """A review: changing a shipped version's description (collection-check, measured-elsewhere, ...) read the
    JSON without its manifest and signed it again, so a threshold edited on disk became the signed one."""
    from core.store.descriptions import update_record

    shipped, _ = tiers
    json_path = shipped / "ship-pneu-v1.json"
    json_path.write_text(json_path.read_text().replace('"threshold": 0.4', '"threshold": 0.99'))
    signed = (shipped / manifest.MANIFEST_FILE).read_bytes()
    with pytest.raises(CheckpointError, match="ship-pneu-v1.json"):
        update_record(json_path, lambda record: {})
    assert (shipped / manifest.MANIFEST_FILE).read_bytes() == signed
    assert any("ship-pneu-v1.json" in problem for problem in manifest.check(shipped))


def test_site_versions_are_private_and_shipped_files_stay_readable(tiers):
    """A review: the site folder's versions (weights, population checks and records naming the server's data
    folder, all from the site's patient films) were readable by every local user, while the same weights in the
    runs folder were private."""
    import os
    import stat

    from core.training.shipping import ship_version

    shipped, site = tiers
    site.mkdir(mode=0o755)
    os.chmod(site, 0o755)  # an older install's folder: narrowed when next written
    model, _ = build_model("logistic", 2, 32)
    stored = ship_version(model, record_for(""), "site-pneu")
    assert stat.S_IMODE(site.stat().st_mode) == 0o700
    for suffix in (".pt", ".json"):
        assert stat.S_IMODE((site / f"{stored.name}{suffix}").stat().st_mode) == 0o600
    assert all(stat.S_IMODE(path.stat().st_mode) == 0o644 for path in shipped.glob("ship-*"))


# --- a population check whose description could not be written --------------------------------------------------


@pytest.mark.parametrize("before", ["a check", "none"])
def test_a_population_check_whose_description_cannot_be_written_leaves_the_version_as_it_was(tmp_path, monkeypatch,
                                                                                           before):
    """The population file was replaced first: a full disk when the JSON followed left a version refused for a
    population file that no longer matched its description."""
    from core.store import descriptions

    if before == "a check":
        json_path = _save_with_check(tmp_path, "site-pneu-v1")
    else:
        json_path = save(tmp_path, "site-pneu-v1")
    files = _files(tmp_path)
    expected = load_checkpoint(json_path).population

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(descriptions, "atomic_write_json", full)
    with pytest.raises(OSError):
        descriptions.attach_population_check(json_path, _score(1), _check())
    assert _files(tmp_path) == files
    loaded = load_checkpoint(json_path).population
    if expected is None:
        assert loaded is None
    else:
        assert np.array_equal(loaded.mean, expected.mean) and np.array_equal(loaded.precision, expected.precision)
    monkeypatch.undo()
    stored = descriptions.attach_population_check(json_path, _score(1), _check())  # and it still works afterwards
    assert load_checkpoint(json_path).record.population_check == stored.population_check
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.suffix == ".tmp") == []


def test_a_shipped_folder_that_does_not_exist_is_named_not_silently_empty(tmp_path, settings_env):
    """Found by a review: a mistyped CXR_CHECKPOINTS offered no shipped model and said nothing; the Triage page
    said no model was registered yet. A site folder that does not exist yet is normal (its first version makes it)."""
    settings_env(CXR_CHECKPOINTS=str(tmp_path / "mistyped"), CXR_MODELS=str(tmp_path / "site-not-made-yet"))
    entries, problems = list_models()
    assert entries == [] and problems == [
        "The shipped models folder (CXR_CHECKPOINTS) does not exist, so no shipped model is offered: unset "
        "CXR_CHECKPOINTS, or set it to a checkpoints folder of this repository."]
    (tmp_path / "mistyped").mkdir()
    assert list_models() == ([], [])


def test_a_version_shipped_is_never_named_like_a_site_version(tmp_path, settings_env):
    """Found by a review: naming into the shipped folder counted that folder alone, so a shipped version could take
    a site version's name; the site's copy was then ignored as named like a shipped one, and with it the site's
    default for its task."""
    from core.store.versions import next_version_name

    shipped, site = tmp_path / "shipped", tmp_path / "site"
    shipped.mkdir(), site.mkdir()
    settings_env(CXR_CHECKPOINTS=str(shipped), CXR_MODELS=str(site))
    (site / "pneumonia-cnn5-v1.json").write_text("{}")
    (site / "pneumonia-cnn5-v2.pt").write_bytes(b"")
    assert next_version_name("pneumonia-cnn5", shipped) == "pneumonia-cnn5-v3"
    assert next_version_name("pneumonia-cnn5") == "pneumonia-cnn5-v3"  # as the site's own naming already did


def test_a_stop_during_a_version_s_registration_is_held_until_it_is_whole(tiers, caplog, monkeypatch):
    """Found by reviews: Ctrl+C (or SIGTERM, which the CLI makes one) after the files were written and before the
    audit line left a version no one could trace, and the resume the message suggested registered it again;
    stopping right after the audit line skipped the promotion asked for. The stop is held until all of it is done,
    and the command reports the version it registered."""
    import os
    import signal

    from core.training import shipping

    shipped, site = tiers
    done, promoted = [], []
    monkeypatch.setattr(shipping, "promote", lambda name, **kwargs: promoted.append(name))  # the floor aside

    def audit_then_forget(stored):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl+C, arriving as the audit line is being written
        signal.sigtimedwait((), 0)  # gives a handler its turn
        done.append(stored.name)

    model, _ = build_model("logistic", 2, 32)
    stored = shipping.ship_version(model, test_model_tiers.record_for(""), "ship-pneu", make_default=True,
                                   after_save=audit_then_forget)
    assert done == promoted == [stored.name] == ["ship-pneu-v3"]  # audited, then promoted as asked
    assert (site / "ship-pneu-v3.json").is_file()
    assert "a stop was asked for while ship-pneu-v3 was being registered; it is registered" in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers put back


def test_signing_a_shipped_folder_that_does_not_exist_is_refused_not_made(tmp_path, settings_env, capsys):
    """Found by a review: `python -m core.store.manifest` with a mistyped CXR_CHECKPOINTS made the folder, signed
    it empty and exited 0."""
    import json

    settings_env(CXR_CHECKPOINTS=str(tmp_path / "mistyped"))
    for argv in ([], ["--check"]):
        assert manifest.main(argv) == 1
        assert json.loads(capsys.readouterr().out) == {"error": "The shipped models folder (CXR_CHECKPOINTS) does "
                                                                "not exist: nothing to sign or check."}
    assert not (tmp_path / "mistyped").exists()


# --- the shipped registry, signed like the files it points at ----------------------------------------------


def test_a_shipped_registry_edited_on_disk_is_refused_not_followed(tiers):
    """Left undone by earlier sessions: the manifest signed every shipped file except ``registry.json``, so one edit
    made a weaker shipped version its task's default without any file failing its check."""
    shipped, _ = tiers
    assert "registry.json" in manifest.read_manifest(shipped)
    registry = shipped / "registry.json"
    registry.write_text(registry.read_text().replace("ship-pneu-v1", "ship-pneu-v2"))
    entries, problems = list_models()  # the models still listed, as the problem says (a CLI review: all refused)
    (said,) = [problem for problem in problems if "registry.json" in problem]
    assert said.startswith("registry.json does not match the checksum manifest of the shipped models: it was replaced")
    assert said.endswith("Until registry.json is restored (git checkout -- checkpoints/registry.json), no shipped "
                         "task has a default model.") and str(shipped) not in said
    assert "ship-pneu-v2" in {e.name for e in entries} and not any(e.is_default for e in entries if e.tier == "shipped")
    with pytest.raises(ModelNotFound, match="^The pneumonia task has no default model: registry.json does not match"):
        find_model(None, task="pneumonia")
    assert find_model("ship-pneu-v1").name == "ship-pneu-v1"  # named, it is served
    assert any(p.startswith("registry.json does not match") for p in manifest.check(shipped))


def test_the_shipping_path_signs_the_registry_it_promotes_in(tiers, monkeypatch):
    """``make models`` promotes in the shipped folder: the registry it writes is signed with it, so the shipped
    folder stays whole and the new default is served."""
    import errno
    import hashlib

    shipped, _ = tiers
    set_default("ship-pneu-v2", shipped)
    signed = manifest.read_manifest(shipped)["registry.json"]
    assert signed == hashlib.sha256((shipped / "registry.json").read_bytes()).hexdigest()
    assert manifest.check(shipped) == []
    entries, problems = list_models()
    assert problems == [] and {e.name for e in entries if e.is_default} == {"ship-pneu-v2", "ship-tb-v1"}

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    before = _files(shipped)
    monkeypatch.setattr(manifest, "write_manifest", full)  # the registry written, its signature not
    with pytest.raises(CheckpointError, match="the default is unchanged"):
        set_default("ship-pneu-v1", shipped)
    assert _files(shipped) == before  # put back: never left refused by its own manifest
