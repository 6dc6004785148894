"""What a page says when it has no model to use, and who is told to act (a messages review): a site registry.json
that cannot be read hid every model, and every page said "No model is registered yet ... Train one", so an
administrator who did trained for hours into a list still unreadable; clinicians were told to train, which only
an administrator can."""
from __future__ import annotations


class Unlisted(str):
    """A problem that kept every model from being listed (the models folder's registry file), not one model's."""


UNLISTED = "The list of models cannot be read, so no model can be used now; no model is lost."


def as_seen_by(problems: list[str], is_admin: bool) -> list[str]:
    """The listing's problems as a page shows them: in full to an administrator; to anyone else, what they mean for
    them, without the files, fields and commands only an administrator can act on (a messages review: clinicians
    read "not a valid ModelRecord" and "git checkout -- checkpoints/registry.json")."""
    if is_admin or not problems:
        return problems
    if any(isinstance(problem, Unlisted) for problem in problems):
        return [Unlisted("The list of models cannot be read; an administrator sees why when signed in.")]
    n = len(problems)  # not all are files left out (a re-read: a version served without its population check is one)
    return [f"The model list has {n} note{'s' if n > 1 else ''} for an administrator, who sees "
            f"{'them' if n > 1 else 'it'} when signed in; the models offered here can be chosen."]


def no_models(problems: list[str], none_yet: str, is_admin: bool, admin_step: str, said: bool = True) -> str:
    """Why there is no model: the list unreadable (its reason appended unless the page ``said`` it already), else
    ``none_yet`` with ``admin_step`` for an administrator and the same step asked of one for anyone else."""
    unlisted = [problem for problem in problems if isinstance(problem, Unlisted)]
    if unlisted:
        return UNLISTED + ("" if said else f" {unlisted[0]}")
    return f"{none_yet} {admin_step}" if is_admin else f"{none_yet} Ask an administrator to {admin_step[0].lower()}" \
        f"{admin_step[1:]}"
