"""Releasing models and proving it: a function of what to release, where holders may be, and force.

The manager hands over the entries it has already taken out (and models
released earlier that were still alive); this module drops the last references,
checks with weak references which storages died, and only when something
survived imports the holder search (:mod:`nbmodels.core.holders`), which names
every holder and plans the smallest removal. Without force the report shows
that plan; with force exactly that plan runs, then the storages are checked
again. Bytes are reported freed only for storages that died.

No full garbage collection runs on the common paths: with several hundred
thousand objects (transformers imported) one costs a fifth of a second. It runs
only when a model survived with nothing holding it but a cycle.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from nbmodels.core import isolation, memory
from nbmodels.core.collector import collector_paused
from nbmodels.core.holders.records import Action, Blocker, RemovalPlan
from nbmodels.core.holders.sites import Boundary, Gap, Site
from nbmodels.core.holders.watch import Watch
from nbmodels.core.reports import ReleaseReport, StillAlive
from nbmodels.core.storage_origin import Origin, not_owned_lines

log = logging.getLogger("nbmodels")

Places = Callable[[], list[Site | Boundary | Gap]]
FixCommand = Callable[[str, Sequence[str]], str]


@dataclass
class Released:
    """A model taken out of the manager, to be released: its name, the object, and its release hook."""

    name: str
    model: Any
    on_release: Callable[[Any], None] | None = None


@dataclass(frozen=True)
class Request:
    """How to release: with force, naming wide cuts force may make (``allow``), or as a dry run."""

    force: bool = False
    allow: tuple[str, ...] = ()
    dry_run: bool = False


_NOTHING_FOUND = (
    "nothing the search can name holds it: C code, an extension, or a function still running "
    "(perhaps the code that asked for the release)"
)


def release(
    taken: list[Released],
    survivors: Sequence[Watch],
    *,
    request: Request,
    places: Places,
    loaded: Callable[[], list[tuple[str, Any]]],
    fix: FixCommand,
    pending: tuple[str, ...] = (),
    record: Callable[[Watch], None] | None = None,
) -> tuple[ReleaseReport, list[Watch]]:
    """Release ``taken`` (emptied in place: the caller keeps no reference) and re-check ``survivors``.

    Returns the report and the watches of models still alive, which the caller
    keeps so that a later unload (with force) can still reach them. ``record``
    gets each new watch as soon as it exists, before anything slow runs.
    """
    started = time.perf_counter()
    rss_before = memory.process_rss()
    cuda_before = memory.cuda_allocated()
    errors: dict[str, str] = {}
    watches = list(survivors)
    rechecked = tuple(watch.name for watch in watches)
    released: list[str] = []
    remotes: list[tuple[str, Any]] = []  # models in a worker: stopping the worker is what frees them
    with collector_paused():  # watching every tensor allocates: see nbmodels.core.collector
        for item in taken:
            released.append(item.name)
            try:
                if isolation.is_remote(item.model):
                    remotes.append((item.name, item.model))
                else:
                    watches.append(Watch(item.name, item.model))
                    if record is not None:
                        record(watches[-1])
                if item.on_release is not None:
                    item.on_release(item.model)
            except Exception as exc:
                errors[item.name] = f"{type(exc).__name__}: {exc}"
                log.warning("releasing %s: %s", item.name, errors[item.name])
            finally:
                item.model = None
    taken.clear()
    stops = isolation.stop_all(remotes) if remotes else {}
    del remotes
    with collector_paused():  # the search and force: see nbmodels.core.collector
        outcome = _settle(watches, request, places, loaded)
    cuda_emptied = memory.empty_cuda_cache()
    freed: dict[str, int] = {}
    not_owned: dict[Origin, int] = {}  # died, but over a file's pages or another object's memory: nothing came back
    for watch in watches:
        for device, nbytes in watch.take_freed().items():
            freed[device] = freed.get(device, 0) + nbytes
        for origin, nbytes in watch.take_not_owned().items():
            not_owned[origin] = not_owned.get(origin, 0) + nbytes
    stopped: dict[str, str] = {}
    for name, result in stops.items():
        if isinstance(result, str) or not result.gone:
            errors[name] = f"its worker did not end: {result if isinstance(result, str) else result.how}"
            continue
        stopped[name] = _stop_line(result)
        for device, nbytes in result.freed_bytes.items():
            freed[device] = freed.get(device, 0) + nbytes
    if freed:
        memory.trim_heap()
    alive = [watch for watch in watches if watch.alive()]
    still = tuple(
        StillAlive(plan.name, plan, fix=_fix(plan, request, fix), what=watch.what())
        for watch, plan in outcome.plans
        if watch.alive()
    )
    report = ReleaseReport(
        released=tuple(released),
        freed_bytes=freed,
        rss_before=rss_before,
        rss_after=memory.process_rss(),
        cuda_allocated_before=cuda_before,
        cuda_allocated_after=memory.cuda_allocated(),
        still_alive=still,
        errors={**errors, **outcome.failed},
        seconds=time.perf_counter() - started,
        gc_collected=outcome.collected,
        cuda_cache_emptied=cuda_emptied,
        pending=pending,
        forced=request.force,
        removed={name: tuple(actions) for name, actions in outcome.done.items()},
        rechecked=rechecked,
        hunt_seconds=outcome.seconds,
        stopped=stopped,
        not_freed=tuple(not_owned_lines(not_owned)),
    )
    for survivor in report.still_alive:
        log.warning("%s", survivor.describe())
    return report, alive


def _stop_line(result: Any) -> str:
    """``worker 4242 stopped in 0.18 s (548.0 MiB of its own memory back)``, from a StopResult."""
    place = f"worker {result.pid}" if result.runner == "process" else "Ray actor"
    back = sum(result.freed_bytes.values())
    came = f" ({memory.format_bytes(back)} of its own memory back)" if back else ""
    verb = {"stopped": "stopped", "killed": "killed (it did not stop when asked)"}.get(result.ended, "had ended")
    return f"{place} {verb} in {result.seconds:.2f} s{came}"


@dataclass
class _Outcome:
    plans: list[tuple[Watch, RemovalPlan]]  # detached plans of the watches still alive
    done: dict[str, list[Action]]
    failed: dict[str, str]
    collected: bool
    seconds: float


def _settle(
    watches: list[Watch], request: Request, places: Places, loaded: Callable[[], list[tuple[str, Any]]]
) -> _Outcome:
    """Find what holds the survivors and, with force, remove it; then look again at what is left."""
    outcome = _Outcome([], {}, {}, False, 0.0)
    alive = [watch for watch in watches if watch.alive()]
    if not alive:
        return outcome
    plans, unexplained = _plans(alive, places, loaded, outcome, trace=False)
    if unexplained or any(not plan.actions and not plan.blockers for plan in plans):
        # something the walk cannot see holds it: often a cycle (a traceback printer leaves some behind), which a
        # gc pass frees; only what is left after one is traced through the heap and named
        del plans
        gc.collect()
        outcome.collected = True
        alive = [watch for watch in alive if watch.alive()]
        plans = _plans(alive, places, loaded, outcome)[0] if alive else []
    if request.force and plans:
        from nbmodels.core.holders.execute import execute

        done, failed = execute(plans, request.allow)
        outcome.done, outcome.failed = done, failed
        del plans
        left = [watch for watch in alive if watch.alive()]
        if left and done:
            gc.collect()  # what force cut may have left a cycle behind
            outcome.collected = True
            left = [watch for watch in left if watch.alive()]
        alive = left
        plans = _plans(alive, places, loaded, outcome)[0] if alive else []
    outcome.plans = [(watch, _explained(plan.detached())) for watch, plan in zip(alive, plans, strict=True)]
    return outcome


def _plans(
    watches: list[Watch],
    places: Places,
    loaded: Callable[[], list[tuple[str, Any]]],
    outcome: _Outcome,
    *,
    trace: bool = True,
) -> tuple[list[RemovalPlan], bool]:
    from nbmodels.core.holders.search import search

    found = search(watches, places(), loaded=loaded(), trace=trace)
    outcome.seconds += found.seconds
    return found.plans, found.unexplained


def _explained(plan: RemovalPlan) -> RemovalPlan:
    """A plan that names nothing gets a blocker that says so (and why that can be)."""
    if plan.actions or plan.blockers:
        return plan
    return replace(plan, blockers=(Blocker("a reference outside Python's view", "unseen", _NOTHING_FOUND),))


def _fix(plan: RemovalPlan, request: Request, fix: FixCommand) -> str:
    """The command that frees the model: force, naming what needs naming; empty when force cannot."""
    if plan.blockers or plan.truncated or not plan.actions:
        return ""
    allow = tuple(dict.fromkeys([*request.allow, *(a.holder for a in plan.waiting_for(request.allow))]))
    needs = bool(plan.waiting_for(request.allow))
    if request.force and not needs:
        return ""  # force ran this plan and it did not free the model: the report says what is left
    return fix(plan.name, allow)


def dry_run(
    owners: Sequence[Any],
    survivors: Sequence[Watch],
    *,
    places: Places,
    loaded: Callable[[], list[tuple[str, Any]]],
    fix: FixCommand,
    allow: tuple[str, ...] = (),
) -> ReleaseReport:
    """What a release (and force) would do, changing nothing.

    ``owners`` are the manager's records of loaded models (``.name``, ``.model``):
    their reference to the model is the manager's own, not a holder.
    """
    from nbmodels.core.holders.search import search

    started = time.perf_counter()
    rss = memory.process_rss()
    cuda = memory.cuda_allocated()
    remote = [owner.name for owner in owners if isolation.is_remote(owner.model)]  # unloading stops its worker
    owners = [owner for owner in owners if not isolation.is_remote(owner.model)]
    watches = [Watch(owner.name, owner.model) for owner in owners]
    watches += [watch for watch in survivors if watch.alive()]
    seconds = 0.0
    detached: list[RemovalPlan] = []
    if watches:
        found = search(watches, places(), loaded=loaded(), owners=owners, trace=False)
        if found.unexplained:
            del found
            gc.collect()  # what the walk cannot see is often a cycle: collect it before naming what is left
            found = search(watches, places(), loaded=loaded(), owners=owners)
        seconds, detached = found.seconds, [plan.detached() for plan in found.plans]
        del found
    request = Request(dry_run=True, allow=allow)
    held = tuple(
        StillAlive(plan.name, _explained(plan), fix=_fix(plan, request, fix), what=watch.what())
        for watch, plan in zip(watches, detached, strict=True)
        if plan.actions or plan.blockers or watch in survivors
    )
    free = tuple(remote) + tuple(
        plan.name
        for plan in detached
        if not plan.actions and not plan.blockers and plan.name not in {h.name for h in held}
    )
    return ReleaseReport(
        released=(),
        freed_bytes={},
        rss_before=rss,
        rss_after=rss,
        cuda_allocated_before=cuda,
        cuda_allocated_after=cuda,
        still_alive=held,
        errors={},
        seconds=time.perf_counter() - started,
        gc_collected=False,
        cuda_cache_emptied=False,
        rechecked=tuple(watch.name for watch in survivors if watch.alive()),
        hunt_seconds=seconds,
        dry_run=True,
        would_free=free,
    )


__all__ = ["Released", "Request", "dry_run", "release"]
