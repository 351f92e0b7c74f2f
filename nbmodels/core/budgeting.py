"""The manager's memory policy: budgets and eviction, moving models, ``device="auto"``, out-of-memory rescue.

The decisions are pure functions in :mod:`nbmodels.core.policy` (tested with
readings as data); this part carries them out on the manager's state: one
model at a time through the ordinary release, planning again from what really
came back, under ``_room_lock`` so that two loads never spend the same room.
"""

from __future__ import annotations

import gc
import logging
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from nbmodels.core import memory
from nbmodels.core.devices import place
from nbmodels.core.entries import (
    Entry,
    Spec,
    canonical_device,
    hand_over,
    held_elsewhere,
    live_bytes,
    measure,
    tensors_held_elsewhere,
)
from nbmodels.core.policy import budget as budgets
from nbmodels.core.policy import oom
from nbmodels.core.policy.estimate import estimate
from nbmodels.core.policy.eviction import (
    Candidate,
    Eviction,
    Holding,
    RoomPlan,
    explain_shortfall,
    plan_room,
    rescue_order,
)
from nbmodels.core.policy.placement import (
    OFFLOAD_RESERVE,
    choose_device,
    current_readings,
    device_total,
    memory_room,
    system_available,
)
from nbmodels.core.policy.sizes import format_duration
from nbmodels.core.release import Released, Request
from nbmodels.core.reports import Event, ModelInfo, StillAlive
from nbmodels.core.state import EvictMode, ManagerState
from nbmodels.errors import (
    BudgetExceededError,
    InvalidArgumentError,
    ModelLoadError,
    ModelNotFoundError,
    PlacementWarning,
)

log = logging.getLogger("nbmodels")


class Budgeting(ManagerState):
    """Where a model's memory goes: budgets, eviction, offload and placement, and the rescue from OOM."""

    def to(self, name: str, device: Any) -> ModelInfo:
        """Move a loaded model to ``device`` (``"cpu"``, ``"cuda:1"``, ``"auto"``); a budget there makes room first.

        Accounting and events follow (``moved``). Under a budget on ``device`` the
        least recently used unpinned models there leave first; when they cannot,
        BudgetExceededError, and nothing moved.
        """
        target = canonical_device(device)
        if target is None:
            raise InvalidArgumentError(f"to({name!r}, None): give a device such as 'cpu', 'cuda:0' or 'auto'")
        with self._lock:
            entry = self._loaded(name)
            nbytes = sum(entry.footprint.bytes_by_device.values())
        if target == "auto":
            target = self._auto_device(name, nbytes)
        with self._room_lock:
            self._make_room(
                name, {target: nbytes}, purpose=f"to fit {name} on {target}", exclude=name, outcome="nothing was moved"
            )
            info = self._move_entry(name, entry, target)
        self._emit(Event("moved", name=name, info=info))
        return info

    def offload(self, name: str) -> ModelInfo:
        """Move a loaded model to the CPU (``to(name, "cpu")``): its GPU memory comes back, it stays loaded."""
        return self.to(name, "cpu")

    def move(self, name: str, device: Any) -> ModelInfo:
        """Move a loaded model to ``device`` (offload to the CPU, or back to a GPU); the same as :meth:`to`."""
        return self.to(name, device)

    def _move_entry(self, name: str, entry: Entry, target: str) -> ModelInfo:
        """Move ``entry``'s model (outside the manager lock) and record where it is now."""
        with self._lock:
            still_loaded = self._entries.get(name) is entry
            model = entry.model
        moved = place(model, target, None) if still_loaded else None
        with self._lock:
            still_loaded = still_loaded and self._entries.get(name) is entry
            if still_loaded:
                entry.model = moved
                entry.measurement = measure(moved)
                entry.spec = replace(entry.spec, device=target)
                entry._info = None
                info = entry.info()
            known = list(self._entries)
        del model, moved
        if not still_loaded:  # unloaded (or reloaded) while it moved: its entry describes nothing now
            error = ModelNotFoundError(name, known)
            error.message += " (it was unloaded while it was being moved)"
            raise error
        memory.empty_cuda_cache()
        return info

    def _resolve_auto(self, name: str, spec: Spec) -> Spec:
        """``device="auto"``: the CUDA device with the most room for the model's estimate, else the CPU."""
        if spec.device != "auto":
            return spec
        found = estimate(spec.source.text, spec.kwargs, spec.dtype)
        return replace(spec, device=self._auto_device(name, found.nbytes if found else None))

    def _auto_device(self, name: str, nbytes: int | None) -> str:
        with self._lock:
            limits = self._limits()
            used, _ = self._usage(exclude=name)
        room = {device: max(limit - used.get(device, 0), 0) for device, limit in limits.bytes_by_device.items()}
        choice = choose_device(nbytes, current_readings(), room, what=name)
        if choice.warning:
            log.warning("%s", choice.warning)
            warnings.warn(PlacementWarning(choice.warning), stacklevel=5)
        log.info("device='auto' for %s: %s (%s)", name, choice.device, choice.reason)
        return choice.device

    @property
    def max_memory(self) -> dict[str, budgets.Budget]:
        """The budget per device: bytes (``int``) or a fraction of the device's total (``float``)."""
        with self._lock:
            return dict(self._max_memory)

    @max_memory.setter
    def max_memory(self, value: Any) -> None:
        self.set_max_memory(value)

    def set_max_memory(self, value: Any) -> tuple[str, ...]:
        """Set the budget per device: ``{"cpu": "8GiB", "cuda:0": 0.8}`` (or ``"cpu=8GiB,cuda:0=0.8"``; None: none).

        Bytes, a size such as ``"512MB"`` (GB is 10**9, GiB 2**30, as accelerate
        reads them) or a fraction of the device's memory. A lower budget evicts
        least recently used unpinned models at once; returns one line per model
        evicted. When pinned or held models keep a device over it,
        BudgetExceededError, and the budget stays as it was.
        """
        parsed = budgets.parse_budgets(value)
        with self._room_lock:
            with self._lock:
                previous, self._max_memory = self._max_memory, parsed
            try:
                events = self._make_room(
                    None,
                    {},
                    purpose="to fit the new budget",
                    adding=0,
                    everywhere=True,
                    outcome="the budget is unchanged",
                )
            except BudgetExceededError:
                with self._lock:
                    self._max_memory = previous
                raise
        log.info("max_memory: %s", budgets.describe(parsed))
        return tuple(event.reason or "" for event in events)

    @property
    def max_loaded_models(self) -> int:
        """How many models may be loaded at once (0: no limit); loading one more evicts the least recently used."""
        return self._max_models

    @max_loaded_models.setter
    def max_loaded_models(self, value: Any) -> None:
        count = budgets.check_count(value)
        with self._room_lock:
            previous, self._max_models = self._max_models, count
            try:
                self._make_room(
                    None,
                    {},
                    purpose="to fit max_loaded_models",
                    adding=0,
                    everywhere=True,
                    outcome="the limit is unchanged",
                )
            except BudgetExceededError:
                self._max_models = previous
                raise

    @property
    def evict(self) -> EvictMode:
        """What eviction does to a model on a GPU: ``"unload"`` it, or ``"offload"`` it to the CPU when that fits."""
        return self._evict

    @evict.setter
    def evict(self, value: Any) -> None:
        if value not in ("unload", "offload"):
            raise InvalidArgumentError(f"evict must be 'unload' or 'offload', not {value!r}")
        self._evict = value

    def _policy_active(self) -> bool:
        return bool(self._max_memory or self._max_models)

    def _limits(self) -> budgets.Limits:
        """The budgets in bytes now (a fraction of a device whose total is unknown constrains nothing)."""
        resolved = {}
        for device, size in self._max_memory.items():
            nbytes = budgets.resolve(size, device_total(device) if isinstance(size, float) else None)
            if nbytes is not None:
                resolved[device] = nbytes
        return budgets.Limits(resolved, self._max_models)

    def _usage(self, exclude: str | None = None) -> tuple[dict[str, int], int]:
        """Bytes per device that count against budgets, and the models loaded or loading (lock held).

        Loaded models, the estimates of loads in flight, and released models that
        something still holds: their memory has not come back.
        """
        used: dict[str, int] = {}

        def add(nbytes: Mapping[str, int]) -> None:
            for device, n in nbytes.items():
                used[device] = used.get(device, 0) + n

        for entry in self._entries.values():
            if entry.name != exclude:
                add(entry.footprint.resident_by_device)
        for name, reserved in self._reserved.items():
            if name != exclude:
                add(reserved)
        for watches in self._survivors.values():
            for watch in watches:
                add(live_bytes(watch))
        count = sum(name != exclude for name in self._entries) + sum(name != exclude for name in self._reserved)
        return used, count

    def _candidates(
        self, skip: set[str | None], freeable: set[str], suspected: set[str] | None = None
    ) -> list[Candidate]:
        """Every loaded model the planner may consider (lock held); ``suspected``: found held by their tensors."""
        return [
            Candidate(
                entry.name,
                entry.footprint.resident_by_device,
                entry.last_used,
                pinned=entry.pinned,
                busy=entry.busy > 0,
                held=entry.name not in freeable and (entry.name in (suspected or ()) or held_elsewhere(entry)),
            )
            for entry in self._entries.values()
            if entry.name not in skip
        ]

    def _cpu_room(self, limits: budgets.Limits, used: Mapping[str, int]) -> int:
        """Bytes the CPU can take for offloaded models: its budget's room, else what the system has to spare."""
        if "cpu" in limits.bytes_by_device:
            return max(limits.bytes_by_device["cpu"] - used.get("cpu", 0), 0)
        return max(system_available() - OFFLOAD_RESERVE, 0)

    def _make_room(
        self,
        cause: str | None,
        need: Mapping[str, int],
        *,
        purpose: str,
        outcome: str = "nothing was loaded",
        adding: int = 1,
        exclude: str | None = None,
        everywhere: bool = False,
    ) -> list[Event]:
        """Evict until ``need`` fits every budget (the caller holds the room lock); the evictions' events.

        One model at a time, each through the ordinary release; the plan is made
        again after each, from what really came back. A model whose release left it
        alive made no room. When the plan cannot fit, BudgetExceededError: nothing
        more is evicted.
        """
        if not self._policy_active():
            return []
        events: list[Event] = []
        tried: set[str | None] = {exclude}
        freeable: set[str] = set()
        suspected: set[str] = set()  # their parameters have holders outside the model (an optimizer)
        holders: dict[str, StillAlive | None] | None = None
        while True:
            plan, limits, used = self._plan(
                need,
                adding=adding,
                exclude=exclude,
                skip=tried,
                freeable=freeable,
                suspected=suspected,
                everywhere=everywhere,
            )
            if plan.fits and not plan.evictions:
                return events
            if not plan.fits:
                if holders is None:  # only now ask the holder search, once: the failure path may be slow
                    holders = self._holders_of(plan.held)
                    wrong = {name for name in plan.held if name in holders and holders[name] is None}
                    if wrong:  # the reference count was wrong (a cycle, say): their release frees them after all
                        freeable |= wrong
                        continue
                raise self._budget_error(cause, need, limits, used, plan, events, holders, purpose, outcome)
            eviction = plan.evictions[0]
            if eviction.action == "unload" and eviction.name not in freeable | suspected:
                with self._lock:
                    entry = self._entries.get(eviction.name)
                    model = entry.model if entry is not None else None
                    del entry
                held = tensors_held_elsewhere(model)
                del model
                if held:  # its release would free nothing: plan again with it counted as held
                    suspected.add(eviction.name)
                    continue
            tried.add(eviction.name)
            event = self._evict_one(eviction, cause, purpose)
            if event is not None:
                events.append(event)

    def _plan(
        self,
        need: Mapping[str, int],
        *,
        adding: int = 1,
        exclude: str | None = None,
        skip: set[str | None] | None = None,
        freeable: set[str] | None = None,
        suspected: set[str] | None = None,
        everywhere: bool = False,
    ) -> tuple[RoomPlan, budgets.Limits, dict[str, int]]:
        """The eviction decision, from the state now: what would leave for ``need`` (nothing changes).

        ``exclude`` is the model room is made for (its bytes and reservation never
        count, and it never leaves); ``skip`` the models tried already;
        ``freeable`` those the holder search found nothing holding; ``suspected``
        those whose parameters something else holds.
        """
        skip = {exclude} if skip is None else skip | {exclude}
        with self._lock:
            limits = self._limits()
            used, count = self._usage(exclude)
            candidates = self._candidates(skip, freeable or set(), suspected)
            cpu_room = self._cpu_room(limits, used) if self._evict == "offload" else None
        plan = plan_room(
            candidates,
            used=used,
            need=need,
            limits=limits,
            count=count,
            adding=adding,
            everywhere=everywhere,
            cpu_room=cpu_room,
        )
        return plan, limits, used

    def _evict_one(self, eviction: Eviction, cause: str | None, purpose: str) -> Event | None:
        """Unload (or offload) one model to make room; its event, or None when it changed meanwhile."""
        now = self._clock()
        name = eviction.name
        taken: list[Released] = []
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.pinned or entry.busy:
                return None
            idle = format_duration(now - entry.last_used)
            size = memory.format_bytes(sum(entry.footprint.bytes_by_device.values()))
            if eviction.action == "unload":
                del self._entries[name]
                taken.append(hand_over(entry))
        if eviction.action == "offload":
            try:
                info = self._move_entry(name, entry, "cpu")
            except Exception as exc:
                log.warning("offloading %s to make room failed: %s", name, exc)
                return None
            event = Event("evicted", name=name, info=info, cause=cause)
            reason = f"offloaded {name} to the CPU ({size}, idle {idle}) {purpose}"
        else:
            del entry
            report = self._release(taken, pending=(), request=Request())
            reason = f"evicted {name} ({size}, idle {idle}) {purpose}"
            if report.still_alive:
                reason += f"; its memory did not come back: {report.still_alive[0].describe()}"
            event = Event("evicted", name=name, report=report, cause=cause)
        event = replace(event, reason=reason)
        log.info("%s", reason)
        self._emit(event)
        return event

    def _holders_of(self, names: Sequence[str]) -> dict[str, StillAlive | None]:
        """For loaded or released names: what holds each (a dry run of the holder search); None: nothing does."""
        with self._lock:
            names = [n for n in names if n in self._entries or n in self._survivors]
        if not names:
            return {}
        try:
            report = self._dry_run(list(names), Request(dry_run=True))
        except ModelNotFoundError:  # unloaded meanwhile
            return {}
        alive = {held.name: held for held in report.still_alive}
        return {name: alive.get(name) for name in names}

    def _budget_error(
        self,
        cause: str | None,
        need: Mapping[str, int],
        limits: budgets.Limits,
        used: Mapping[str, int],
        plan: RoomPlan,
        events: Sequence[Event],
        holders: Mapping[str, StillAlive | None],
        purpose: str,
        outcome: str,
    ) -> BudgetExceededError:
        """The error of a plan that cannot fit, with what the manager knows of the models in its way."""
        with self._lock:
            sizes = {entry.name: sum(entry.footprint.bytes_by_device.values()) for entry in self._entries.values()}
            loading = [n for n, reserved in self._reserved.items() if n != cause and (reserved or plan.count_over)]
        held = {
            name: Holding(tuple(h.path for h in alive.holders), alive.fix)
            for name, alive in holders.items()
            if alive is not None
        }
        shortfall = explain_shortfall(
            plan,
            need=need,
            limits=limits,
            used=used,
            sizes=sizes,
            holders=held,
            loading=loading,
            still_held=[e.name or "" for e in events if e.report is not None and e.report.still_alive],
        )
        subject = f"no room {purpose}" if cause is None else f"no room for {cause}"
        return BudgetExceededError(
            f"{subject}: {shortfall.text}; {outcome}",
            name=cause or "",
            needed=dict(need),
            free=shortfall.free,
            blocked=plan.blocked,
        )

    def _room_before_load(self, name: str, spec: Spec) -> None:
        """Before a load under a budget: make room for its estimated size, and reserve that room.

        Loads in flight hold their reservations and cannot be evicted: when only
        they stand in the way, this load waits for them to finish (then they are
        loaded models like any other, the least recently used of which may leave).
        """
        if not self._policy_active():
            return
        need: dict[str, int] = {}
        device = spec.device or "cpu"
        if self._max_memory and device != "meta" and "device_map" not in spec.kwargs:
            found = estimate(spec.source.text, spec.kwargs, spec.dtype)
            if found is not None:
                need = {device: found.nbytes}
        me = threading.get_ident()
        while True:
            with self._room_lock:
                try:
                    self._make_room(name, need, purpose=f"to fit {name}", exclude=name)
                except BudgetExceededError:
                    with self._lock:
                        in_flight = [p for n, p in self._pending.items() if n in self._reserved and p.owner != me]
                    if not in_flight:
                        raise
                else:
                    with self._lock:
                        self._reserved[name] = need
                    return
            for pending in in_flight:
                pending.done.wait()

    def _room_after_load(self, name: str, entry: Entry) -> list[Event]:
        """After a load (room lock held): the measured size must fit; if it cannot, the model is released again."""
        if not self._policy_active():
            return []
        with self._lock:
            self._reserved.pop(name, None)
        need = dict(entry.footprint.resident_by_device)
        try:
            return self._make_room(
                name, need, purpose=f"to fit {name}", exclude=name, outcome=f"{name} was released again"
            )
        except BudgetExceededError as exc:
            report = self._release([hand_over(entry)], pending=(), request=Request())
            size = memory.format_bytes(sum(need.values()))
            exc.add_context(after=f" (it loaded, measured {size}, and did not fit)")
            if report.still_alive:
                exc.add_context(after=f"; {report.still_alive[0].describe()}")
            raise

    def _load_rescued(self, name: str, spec: Spec, run: Callable[[], Entry]) -> Entry:
        """``run()`` the load; if it runs out of memory while other models sit on its device, evict them, retry once."""
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        failed: ModelLoadError | None = None
        try:
            return run()
        except ModelLoadError as exc:
            cause = oom.out_of_memory_in(exc.__cause__)
            if cause is None:
                raise
            failed = exc
            default = spec.device if spec.device and spec.device.startswith("cuda") else "cuda:0"
            device = oom.device_of(cause, default)
            del cause
        oom.forget_frames(failed)  # the half-built model in the loader's frames must not stay
        evicted = self._rescue(name, spec, device)
        if not evicted:
            account = self.memory_account(device, exclude=name)
            lines = [line.strip() for line in account.lines()]
            from nbmodels.core.attribution import holders_summary  # only now: it walks the notebook

            others = holders_summary(self, device)  # the tensors of the user's code there, by name
            failed.add_context(after="; " + "; ".join([*lines[:-1], others, lines[-1]] if others else lines))
            raise failed
        failed = None
        gc.collect()
        memory.empty_cuda_cache()
        log.info("retrying %s after evicting %s from %s", name, ", ".join(evicted), device)
        try:
            return run()
        except ModelLoadError as exc:
            if oom.out_of_memory_in(exc.__cause__) is not None:
                exc.add_context(after=f"; it ran out of memory again after {', '.join(evicted)} left {device}")
            raise

    def _rescue(self, name: str, spec: Spec, device: str) -> list[str]:
        """Evict the idle unpinned models on ``device``, least recently used first; the names that left."""
        found = estimate(spec.source.text, spec.kwargs, spec.dtype)
        action: Literal["unload", "offload"] = "offload" if self._evict == "offload" and device != "cpu" else "unload"
        purpose = f"to retry {name} after it ran out of memory on {device}"
        evicted: list[str] = []
        with self._room_lock:
            with self._lock:
                candidates = rescue_order(self._candidates({name}, set()), device)
            for candidate in candidates:
                if found is not None and evicted and memory_room(device) >= found.nbytes:
                    break
                if self._evict_one(Eviction(candidate.name, action, candidate.bytes_by_device), name, purpose):
                    evicted.append(candidate.name)
        return evicted

    def memory_account(self, device: str, *, exclude: str | None = None) -> oom.MemoryAccount:
        """What holds ``device``'s memory: its reading, the models there, released ones still alive there, and the
        command that frees the most (said after an out-of-memory error)."""
        with self._lock:
            there = [
                entry
                for entry in self._entries.values()
                if entry.name != exclude and entry.footprint.bytes_by_device.get(device, 0) > 0
            ]
            rows = [(e.name, e.footprint.bytes_by_device[device], e.pinned, e.last_used) for e in there]
            suspects = [e.name for e in there if held_elsewhere(e) or tensors_held_elsewhere(e.model)]
            del there
            survivors = {
                name: sum(live_bytes(watch).get(device, 0) for watch in watches)
                for name, watches in self._survivors.items()
            }
        survivors = {name: nbytes for name, nbytes in survivors.items() if nbytes > 0}
        found = self._holders_of([*suspects, *survivors])

        def held_by(name: str) -> tuple[tuple[str, ...], str]:
            alive = found.get(name)
            return (tuple(h.path for h in alive.holders), alive.fix) if alive is not None else ((), "")

        models = tuple(
            oom.LoadedModel(name, nbytes, pinned, last_used, *held_by(name)) for name, nbytes, pinned, last_used in rows
        )
        held = tuple(oom.StillHeld(name, nbytes, *held_by(name)) for name, nbytes in survivors.items())
        reading = next((r for r in memory.device_readings() if r.device == device), None)
        return oom.MemoryAccount(device, reading, models, held, oom.best_remedy(models, held), now=self._clock())
