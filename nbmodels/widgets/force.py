"""What force would remove to free one released model, as the panel shows it before it runs.

A model unloaded while something else still holds it stays in the panel as a
*held* row: the row lists what force would remove (``del model``, ``del
Out[7]``) and its button runs exactly that. The plan comes from the holder
list of the release report (``StillAlive.holders``); before force runs, the
panel checks again and runs force only if the plan is still the one shown.

This is the one place that turns the manager's answer into a plan: when the
manager hands out a frozen removal plan of its own, only this module changes.
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
    """The plan a release report's survivor entry describes."""
    actions = tuple(h.action for h in alive.holders if h.action)
    blocked = alive.blocked
    if not blocked and len(actions) < len(alive.holders):
        reasons = sorted({h.reason for h in alive.holders if not h.action and h.reason})
        blocked = "; ".join(reasons) or "a holder force cannot remove"
    if not alive.holders and not blocked:
        blocked = "no holder in Python's view (a C extension or another thread?)"
    return ForcePlan(alive.name, actions, tuple(h.path for h in alive.holders), blocked, alive.what)


def plans_in(report: ReleaseReport) -> dict[str, ForcePlan]:
    """Every survivor's plan in a release report, by name."""
    return {alive.name: plan_of(alive) for alive in report.still_alive}


def check_again(manager: ModelManager, name: str) -> tuple[ForcePlan | None, ReleaseReport]:
    """Look again at what holds a released model; removes nothing (``unload`` without force).

    Returns the plan now (None when the model has died meanwhile) and the report of that check.
    """
    report = manager.unload(name)
    plan = plans_in(report).get(name)
    return plan, report


def run(manager: ModelManager, name: str) -> ReleaseReport:
    """Run force for ``name`` (what :func:`check_again` showed a moment before)."""
    return manager.unload(name, force=True)
