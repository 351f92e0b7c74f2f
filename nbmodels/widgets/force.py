"""What force would remove to free one released model, as the panel shows it before it runs.

A model unloaded while something else still holds it stays in the panel as a
*held* row: the row lists what force would remove (``del model``, ``del
Out[7]``) and its button runs exactly that. The plan is the manager's own
(``StillAlive.plan``, a frozen ``RemovalPlan``); before force runs, the panel
looks again with a dry run and runs force only if the plan is still the one
shown. A plan that needs a holder named (a tuple that also holds a score) is
not run from the panel: the row says which, and the magic that names it.
"""

from __future__ import annotations

from dataclasses import dataclass

from nbmodels.core.manager import ModelManager
from nbmodels.core.reports import ReleaseReport, StillAlive


@dataclass(frozen=True)
class ForcePlan:
    """What force would do to free ``name``: one line per removal, or why it cannot."""

    name: str
    actions: tuple[str, ...]
    holders: tuple[str, ...]  # what holds the model, in the user's words
    blocked: str = ""  # why force cannot free it ("" when it can)
    what: str = "the model"

    @property
    def can_force(self) -> bool:
        return bool(self.actions) and not self.blocked


def plan_of(alive: StillAlive) -> ForcePlan:
    """The plan a release report's survivor entry carries, as the panel shows it."""
    plan = alive.plan
    actions = tuple(a.text() for a in plan.actions if not a.consent)
    blocked = alive.blocked
    waiting = plan.waiting_for()
    if not blocked and waiting:
        names = ", ".join(a.holder for a in waiting)
        blocked = f"{names} also hold(s) more than the model; name it to force: {alive.fix}"
    if not plan.actions and not blocked:
        blocked = "no holder in Python's view (a C extension or another thread?)"
    return ForcePlan(alive.name, actions, tuple(a.where for a in plan.actions), blocked, alive.what)


def plans_in(report: ReleaseReport) -> dict[str, ForcePlan]:
    """Every survivor's plan in a release report, by name."""
    return {alive.name: plan_of(alive) for alive in report.still_alive}


def check_again(manager: ModelManager, name: str) -> tuple[ForcePlan | None, ReleaseReport]:
    """Look again at what holds a released model; a dry run, so it removes nothing and changes nothing.

    Returns the plan now (None when the model has died meanwhile) and the report of that check.
    """
    report = manager.unload(name, dry_run=True)
    plan = plans_in(report).get(name)
    return plan, report


def run(manager: ModelManager, name: str) -> ReleaseReport:
    """Run force for ``name`` (what :func:`check_again` showed a moment before)."""
    return manager.unload(name, force=True)
