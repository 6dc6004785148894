"""A second validation from another acquisition batch, held out of training altogether.

Internal validation (a patient-disjoint fifth of the training films) shares the training films' batch and sits
at AUC 0.99+; on the official Kermany test (another batch of the same hospital) the shipped models lost
0.03-0.09 AUC and a quarter of the normals' specificity (#13). A named rule picks films from another series,
or another block of patients, so a run can report how its promise travels before anyone ships it:

``kermany-batch``: the ``IM-`` normal series from patient 0400 on (the other normals are the ``NORMAL2-IM-``
series and earlier ``IM-`` patients) and the pneumonia patients numbered 1400 and above. Kermany's file names
carry the patient, so the holdout is patient-disjoint by construction.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

import numpy as np

from core.errors import DatasetError
from core.films.folders import FilmSet

_NORMAL_SERIES = re.compile(r"^IM-(\d+)-\d+", re.IGNORECASE)  # not NORMAL2-IM-...
_PNEUMONIA_PATIENT = re.compile(r"^person(\d+)_", re.IGNORECASE)


def _kermany_batch(name: str) -> bool:
    normal = _NORMAL_SERIES.match(name)
    if normal:
        return int(normal.group(1)) >= 400
    patient = _PNEUMONIA_PATIENT.match(name)
    return bool(patient) and int(patient.group(1)) >= 1400


@dataclass(frozen=True)
class HoldoutRule:
    name: str
    description: str
    held_out: Callable[[str], bool]  # file name -> whether the film belongs to the held-out batch


RULES = {
    "kermany-batch": HoldoutRule(
        "kermany-batch",
        "another batch held out of training: the IM- normal series from patient 0400 and pneumonia patients "
        "1400 and above",
        _kermany_batch,
    ),
}


def holdout_rule(name: str) -> HoldoutRule:
    try:
        return RULES[name]
    except KeyError:
        raise DatasetError(f"Unknown holdout '{name}'; choose one of {', '.join(RULES)}.") from None


def split_holdout(films: FilmSet, rule_name: str) -> tuple[FilmSet, FilmSet]:
    """(films to train and validate on, the held-out batch). Both parts need every class: a holdout that
    empties a class, or finds nothing to hold out, is refused with the counts."""
    rule = holdout_rule(rule_name)
    held = np.array([rule.held_out(path.name) for path in films.paths], dtype=bool)
    kept, out = films.subset(np.flatnonzero(~held)), films.subset(np.flatnonzero(held))
    if min(out.class_counts()) == 0 or min(kept.class_counts()) == 0:
        counts = ", ".join(f"{c} {n}" for c, n in zip(films.classes, out.class_counts()))
        raise DatasetError(f"The '{rule_name}' holdout needs films of every class on both sides; it would hold "
                           f"out {counts}. Use it on a Kermany-named training folder, or train without it.")
    return kept, out
