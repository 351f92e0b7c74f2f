"""The eviction planner as data: who leaves to make room, in what order, and what it names when it cannot."""

from __future__ import annotations

from nbmodels.core.policy.budget import Limits
from nbmodels.core.policy.eviction import Candidate, Holding, explain_shortfall, plan_room, rescue_order

MiB = 2**20


def cpu(name: str, mib: int, last_used: float, **flags: bool) -> Candidate:
    return Candidate(name, {"cpu": mib * MiB}, last_used, **flags)


def plan(candidates: list[Candidate], need_mib: int, budget_mib: int, **options: object):  # type: ignore[no-untyped-def]
    used = {"cpu": sum(c.bytes_by_device.get("cpu", 0) for c in candidates)}
    return plan_room(
        candidates,
        used=used,
        need={"cpu": need_mib * MiB},
        limits=Limits({"cpu": budget_mib * MiB}),
        count=len(candidates),
        **options,  # type: ignore[arg-type]
    )


def test_nothing_leaves_when_it_fits() -> None:
    result = plan([cpu("a", 10, 1.0)], need_mib=10, budget_mib=20)
    assert result.fits and result.evictions == ()


def test_least_recently_used_leaves_first_and_only_as_many_as_needed() -> None:
    models = [cpu("new", 10, 30.0), cpu("old", 10, 10.0), cpu("middle", 10, 20.0)]
    result = plan(models, need_mib=15, budget_mib=40)
    assert result.fits
    assert result.names == ("old",)
    result = plan(models, need_mib=25, budget_mib=40)
    assert result.names == ("old", "middle")


def test_pinned_busy_and_held_models_stay_and_are_named() -> None:
    models = [
        cpu("pinned", 10, 1.0, pinned=True),
        cpu("busy", 10, 2.0, busy=True),
        cpu("held", 10, 3.0, held=True),
        cpu("idle", 10, 4.0),
    ]
    result = plan(models, need_mib=15, budget_mib=45)
    assert result.fits
    assert result.names == ("idle",)  # the only one whose release frees memory, though it is the newest
    result = plan(models, need_mib=25, budget_mib=45)
    assert not result.fits
    assert (result.pinned, result.busy, result.held) == (("pinned",), ("busy",), ("held",))
    assert result.over == {"cpu": 10 * MiB}


def test_a_model_larger_than_the_budget_never_fits() -> None:
    result = plan([cpu("a", 10, 1.0)], need_mib=50, budget_mib=40)
    assert not result.fits and result.blocked == ()


def test_only_models_on_the_full_device_leave() -> None:
    models = [Candidate("gpu", {"cuda:0": 10 * MiB}, 1.0), cpu("cpu-model", 10, 2.0)]
    result = plan_room(
        models,
        used={"cpu": 10 * MiB, "cuda:0": 10 * MiB},
        need={"cuda:0": 10 * MiB},
        limits=Limits({"cpu": 100 * MiB, "cuda:0": 15 * MiB}),
        count=2,
    )
    assert result.names == ("gpu",)


def test_a_model_spread_over_two_devices_frees_both() -> None:
    spread = Candidate("spread", {"cuda:0": 10 * MiB, "cuda:1": 10 * MiB}, 1.0)
    result = plan_room(
        [spread],
        used={"cuda:0": 10 * MiB, "cuda:1": 10 * MiB},
        need={"cuda:0": 8 * MiB, "cuda:1": 8 * MiB},
        limits=Limits({"cuda:0": 15 * MiB, "cuda:1": 15 * MiB}),
        count=1,
    )
    assert result.fits and result.names == ("spread",)


def test_max_loaded_models_evicts_by_count() -> None:
    models = [cpu("a", 1, 2.0), cpu("b", 1, 1.0), cpu("c", 1, 3.0, pinned=True)]
    result = plan_room(models, used={}, need={}, limits=Limits(max_models=3), count=3)
    assert result.names == ("b",)
    result = plan_room(models, used={}, need={}, limits=Limits(max_models=1), count=3)
    assert not result.fits and result.count_over == 1 and result.pinned == ("c",)


def test_a_lowered_budget_plans_for_what_is_already_there() -> None:
    models = [cpu("a", 10, 1.0), cpu("b", 10, 2.0)]
    result = plan_room(
        models, used={"cpu": 20 * MiB}, need={}, limits=Limits({"cpu": 12 * MiB}), count=2, adding=0, everywhere=True
    )
    assert result.fits and result.names == ("a",)


def test_offload_moves_gpu_models_to_the_cpu_when_it_has_room_even_if_held() -> None:
    held_gpu = Candidate("held", {"cuda:0": 10 * MiB}, 1.0, held=True)
    idle_gpu = Candidate("idle", {"cuda:0": 10 * MiB}, 2.0)
    options = {
        "used": {"cuda:0": 20 * MiB},
        "need": {"cuda:0": 15 * MiB},
        "limits": Limits({"cuda:0": 25 * MiB}),
        "count": 2,
    }
    result = plan_room([held_gpu, idle_gpu], cpu_room=100 * MiB, **options)  # type: ignore[arg-type]
    assert [(e.name, e.action) for e in result.evictions] == [("held", "offload")]
    # no room on the CPU: unload instead, and a held model cannot leave that way
    result = plan_room([held_gpu, idle_gpu], cpu_room=5 * MiB, **options)  # type: ignore[arg-type]
    assert [(e.name, e.action) for e in result.evictions] == [("idle", "unload")]
    assert result.held == ("held",)


def test_the_order_never_depends_on_dict_order() -> None:
    models = [cpu("b", 10, 1.0), cpu("a", 10, 1.0)]
    assert plan(models, need_mib=10, budget_mib=25).names == ("a",)
    assert plan(list(reversed(models)), need_mib=10, budget_mib=25).names == ("a",)


def test_after_out_of_memory_every_idle_unpinned_model_on_the_device_is_a_candidate() -> None:
    models = [
        cpu("new", 10, 3.0),
        cpu("old", 10, 1.0),
        cpu("pinned", 10, 0.5, pinned=True),
        cpu("held", 10, 0.1, held=True),
        Candidate("elsewhere", {"cuda:0": MiB}, 0.0),
    ]
    assert [c.name for c in rescue_order(models, "cpu")] == ["old", "new"]
    assert [c.name for c in rescue_order(models, "cuda:0")] == ["elsewhere"]


def test_a_shortfall_says_what_was_needed_what_could_be_freed_and_what_holds_the_rest() -> None:
    models = [cpu("keep", 10, 1.0, pinned=True), cpu("mine", 10, 2.0, held=True), cpu("idle", 10, 3.0)]
    result = plan(models, need_mib=25, budget_mib=40)
    shortfall = explain_shortfall(
        result,
        need={"cpu": 25 * MiB},
        limits=Limits({"cpu": 40 * MiB}),
        used={"cpu": 30 * MiB},
        sizes={"keep": 10 * MiB, "mine": 10 * MiB, "idle": 10 * MiB},
        holders={"mine": Holding(("model", "Out[3]"), "%unload_model mine --force")},
        loading=["other"],
    )
    assert shortfall.free == {"cpu": 20 * MiB}
    assert shortfall.text == (
        "it needs 25.0 MiB on cpu; the cpu budget is 40.0 MiB, of which only 20.0 MiB can be made free; "
        "what cannot leave: keep (10.0 MiB, pinned), mine (10.0 MiB, held by model, Out[3]; "
        "%unload_model mine --force frees it), other (still loading); evicting idle would not be enough"
    )
    lowered = plan_room(models, used={"cpu": 30 * MiB}, need={}, limits=Limits({"cpu": 5 * MiB}), count=3,
                        adding=0, everywhere=True)  # fmt: skip
    text = explain_shortfall(lowered, need={}, limits=Limits({"cpu": 5 * MiB}), used={"cpu": 30 * MiB}, sizes={},
                             holders={}).text  # fmt: skip
    assert text.startswith("cpu holds 30.0 MiB, 15.0 MiB over the budget of 5.0 MiB; what cannot leave: keep (?, ")
    assert "mine (?, held by something outside nbmodels)" in text
