"""What a page says when it has no model to use, and who is told to act (a messages review): a site registry.json
that cannot be read hid every model, and every page said "No model is registered yet ... Train one", so an
administrator who did trained for hours into a list still unreadable; clinicians were told to train, which only
an administrator can."""
from __future__ import annotations


class Unlisted(str):
    """A problem that kept every model from being listed (the models folder's registry file), not one model's."""


UNLISTED = "The list of models cannot be read, so no model can be used now; no model is lost."


def no_models(problems: list[str], none_yet: str, is_admin: bool, admin_step: str, said: bool = True) -> str:
    """Why there is no model: the list unreadable (its reason appended unless the page ``said`` it already), else
    ``none_yet`` with ``admin_step`` for an administrator and the same step asked of one for anyone else."""
    unlisted = [problem for problem in problems if isinstance(problem, Unlisted)]
    if unlisted:
        return UNLISTED + ("" if said else f" {unlisted[0]}")
    return f"{none_yet} {admin_step}" if is_admin else f"{none_yet} Ask an administrator to {admin_step[0].lower()}" \
        f"{admin_step[1:]}"
