"""Which model ``evaluate DIR`` reads when none is named (core.store.class_default), for tasks outside the three
named ones: a site's own task whose default is damaged is named, never read by a larger task's default."""
from __future__ import annotations

import pytest

from core.errors import ModelNotFound
from core.store.class_default import find_default_for_classes
from test_tasks_core import FOUR, _register

TB = ("NORMAL", "TUBERCULOSIS")


@pytest.mark.parametrize("spare", [False, True])
def test_a_site_task_s_damaged_default_is_named_not_replaced_by_the_four_class_default(tmp_path, settings_env,
                                                                                        spare):
    """Found by a review: the check knew the classes of the three named tasks only, so with a site's
    tuberculosis default damaged its folder was quietly read by the four-class default."""
    site = tmp_path / "site"
    _register(site, "four-v1", FOUR)
    _register(site, "tb-v1", TB).write_text("{damaged")
    if spare:  # a readable version of the task that is not its default
        _register(site, "tb-v2", TB, default=False)
    settings_env(CXR_MODELS=str(site))
    with pytest.raises(ModelNotFound, match=r"^The default model of the tuberculosis task, tb-v1, which reads "
                                            r"NORMAL, TUBERCULOSIS, cannot be used: "):
        find_default_for_classes(TB)
    assert find_default_for_classes(("COVID-19",)).name == "four-v1"  # only the four-class task reads it


def test_a_folder_with_part_of_a_site_task_s_classes_names_its_damaged_default(tmp_path, settings_env):
    """A review of the fix above: the classes were recovered only when the folder's spelt the task's name, so a
    folder of NORMAL and TUBERCULOSIS films went to the four-class default past a damaged three-class site task."""
    site = tmp_path / "site"
    _register(site, "four-v1", FOUR)
    _register(site, "ntp-v1", ("NORMAL", "PNEUMONIA", "TUBERCULOSIS")).write_text("{damaged")
    settings_env(CXR_MODELS=str(site))
    with pytest.raises(ModelNotFound, match=r"^The default model of the normal-pneumonia-tuberculosis task, ntp-v1, "
                                            r"which reads NORMAL, TUBERCULOSIS, cannot be used: "):
        find_default_for_classes(TB)
