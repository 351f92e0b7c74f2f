"""Which models leave memory to make room, and in what order: a pure function of the candidates.

The order is least recently used first (a ``get()``, a call through a handle
and a load hit are uses), among the models whose release will really free
their memory. A pinned model never leaves; a model with a call in flight is
in use; a model that something outside the manager holds (a variable, a list)
would free nothing if released, so it is not counted as room and the planner
names it instead. In ``offload`` mode a model on a GPU moves to the CPU when
the CPU can take it, which frees its GPU memory even while something holds it.

The planner only decides. The manager carries the plan out one model at a time
through the ordinary release. Before each eviction it asks whether something
holds the model's parameters (an optimizer, a kept loss); if so the model counts
as held and the plan is made again. It reads the release report too: a model
that survived its release (held in a way no cheap check sees, such as a saved
``state_dict()``) made no room, and the plan is made again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nbmodels.core.memory import format_bytes
from nbmodels.core.policy.budget import Limits

Action = Literal["unload", "offload"]


@dataclass(frozen=True)
class Candidate:
    """A loaded model as the planner sees it: its bytes per device, its last use, what keeps it."""

    name: str
    bytes_by_device: Mapping[str, int]
    last_used: float
    pinned: bool = False
    busy: bool = False  # a call through its handle is running
    held: bool = False  # something outside the manager holds the model object: a release frees nothing now

    def on(self, devices: Mapping[str, int] | Sequence[str]) -> bool:
        return any(self.bytes_by_device.get(device, 0) > 0 for device in devices)

    @property
    def off_cpu(self) -> int:
        """Bytes an offload would move to the CPU."""
        return sum(n for device, n in self.bytes_by_device.items() if device != "cpu")


@dataclass(frozen=True)
class Eviction:
    """One step of a plan: unload a model, or move it to the CPU."""

    name: str
    action: Action
    bytes_by_device: Mapping[str, int] = field(hash=False)


@dataclass(frozen=True)
class RoomPlan:
    """What to evict, in order, and whether that is enough; when not, what stood in the way."""

    evictions: tuple[Eviction, ...]
    fits: bool
    over: dict[str, int] = field(default_factory=dict, hash=False)  # bytes still over budget after the plan
    count_over: int = 0  # models still over max_loaded_models after the plan
    pinned: tuple[str, ...] = ()  # would have helped, but are pinned
    held: tuple[str, ...] = ()  # would have helped, but something else holds them
    busy: tuple[str, ...] = ()  # would have helped, but a call is running in them

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e.name for e in self.evictions)

    @property
    def blocked(self) -> tuple[str, ...]:
        return self.pinned + self.held + self.busy


def lru(candidates: Sequence[Candidate]) -> list[Candidate]:
    """Least recently used first; ties by name, so the order never depends on dict order."""
    return sorted(candidates, key=lambda c: (c.last_used, c.name))


def plan_room(
    candidates: Sequence[Candidate],
    *,
    used: Mapping[str, int],
    need: Mapping[str, int],
    limits: Limits,
    count: int,
    adding: int = 1,
    everywhere: bool = False,
    cpu_room: int | None = None,
) -> RoomPlan:
    """Plan the evictions that make ``need`` fit within ``limits``.

    ``used`` is what each device holds now (loaded, loads in flight, survivors);
    ``count`` the models loaded or loading, ``adding`` how many this step adds.
    ``everywhere`` checks every budget, not only the devices ``need`` touches (a
    budget was lowered). ``cpu_room`` is set in ``offload`` mode: the bytes the
    CPU can take, so that GPU models move there rather than unload.
    """
    remaining = limits.over(used, need, everywhere=everywhere)
    count_left = max(count + adding - limits.max_models, 0) if limits.max_models else 0
    if not remaining and not count_left:
        return RoomPlan((), True)
    evictions: list[Eviction] = []
    pinned: list[str] = []
    held: list[str] = []
    busy: list[str] = []
    room = cpu_room
    for candidate in lru(candidates):
        if not remaining and count_left <= 0:
            break
        if not (count_left > 0 or candidate.on(remaining)):
            continue  # nothing of it is where room is needed
        offload = (
            room is not None
            and count_left <= 0  # an offloaded model still counts as loaded
            and "cpu" not in remaining
            and 0 < candidate.off_cpu <= room
        )
        if candidate.pinned:
            pinned.append(candidate.name)
            continue
        if candidate.busy:
            busy.append(candidate.name)
            continue
        if candidate.held and not offload:  # moving frees the GPU copy even while something holds the model
            held.append(candidate.name)
            continue
        if offload and room is not None:
            room -= candidate.off_cpu
        evictions.append(Eviction(candidate.name, "offload" if offload else "unload", dict(candidate.bytes_by_device)))
        for device in list(remaining):
            remaining[device] -= candidate.bytes_by_device.get(device, 0)
            if remaining[device] <= 0:
                del remaining[device]
        if not offload:
            count_left -= 1
    fits = not remaining and count_left <= 0
    return RoomPlan(
        tuple(evictions),
        fits,
        over=remaining,
        count_over=max(count_left, 0),
        pinned=tuple(pinned),
        held=tuple(held),
        busy=tuple(busy),
    )


def rescue_order(candidates: Sequence[Candidate], device: str) -> list[Candidate]:
    """After an out-of-memory error on ``device``: the models there whose release frees memory, LRU first.

    Pinned models and models with a call running stay; so do models something
    else holds, whose release would free nothing (the error names them instead).
    """
    return [c for c in lru(candidates) if c.on([device]) and not (c.pinned or c.busy or c.held)]


@dataclass(frozen=True)
class Holding:
    """What holds a model outside the manager (paths, as the holder search names them) and the command that frees it."""

    held_by: tuple[str, ...]
    fix: str = ""


@dataclass(frozen=True)
class Shortfall:
    """Why a plan does not fit, in words, and the bytes per device that evictions could free for the need."""

    text: str
    free: dict[str, int] = field(default_factory=dict, hash=False)


def explain_shortfall(
    plan: RoomPlan,
    *,
    need: Mapping[str, int],
    limits: Limits,
    used: Mapping[str, int],
    sizes: Mapping[str, int],
    holders: Mapping[str, Holding],
    loading: Sequence[str] = (),
    still_held: Sequence[str] = (),
) -> Shortfall:
    """What was needed, what evictions could free, and what cannot leave (with what holds it and the fix).

    ``sizes`` are the models' bytes; ``holders`` what the holder search found for
    the held ones; ``loading`` the loads in flight in the way; ``still_held`` the
    models evicted already whose memory did not come back.
    """
    fmt = format_bytes
    parts = []
    free = {}
    for device, excess in sorted(plan.over.items()):
        limit = limits.bytes_by_device[device]
        wanted = need.get(device, 0)
        free[device] = max(wanted - excess, 0)
        if wanted > limit:
            parts.append(f"it needs {fmt(wanted)} on {device}, more than the whole {device} budget of {fmt(limit)}")
        elif wanted:
            parts.append(
                f"it needs {fmt(wanted)} on {device}; the {device} budget is {fmt(limit)}, "
                f"of which only {fmt(free[device])} can be made free"
            )
        else:
            parts.append(f"{device} holds {fmt(used.get(device, 0))}, {fmt(excess)} over the budget of {fmt(limit)}")
    if plan.count_over:
        parts.append(f"max_loaded_models is {limits.max_models}")
    blocked = [f"{name} ({fmt(sizes.get(name))}, pinned)" for name in plan.pinned]
    blocked += [f"{name} ({fmt(sizes.get(name))}, a call in it is running)" for name in plan.busy]
    for name in plan.held:
        holding = holders.get(name)
        held_by = ", ".join(holding.held_by) if holding is not None else "something outside nbmodels"
        fix = f"; {holding.fix} frees it" if holding is not None and holding.fix else ""
        blocked.append(f"{name} ({fmt(sizes.get(name))}, held by {held_by}{fix})")
    if loading:
        blocked.append(f"{', '.join(loading)} (still loading)")
    text = "; ".join(parts)
    if blocked:
        text += "; what cannot leave: " + ", ".join(blocked)
    if plan.evictions:
        text += "; evicting " + ", ".join(plan.names) + " would not be enough"
    if still_held:
        text += f"; evicted already, but still held (their memory did not come back): {', '.join(still_held)}"
    return Shortfall(text, free)


__all__ = [
    "Action",
    "Candidate",
    "Eviction",
    "Holding",
    "RoomPlan",
    "Shortfall",
    "explain_shortfall",
    "lru",
    "plan_room",
    "rescue_order",
]
