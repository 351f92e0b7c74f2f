"""Property tests of force: random notebook namespaces that hold the model in random places.

Hypothesis builds namespaces of nested dicts, lists, tuples, objects with
attributes, unrelated tensors, long and odd keys, and places the model (or a
submodule, a parameter, a detached weight, a tensor whose autograd graph holds
the weights) anywhere in them, with an output history beside them. Then:

- the plan shown before force is exactly what force does;
- every value not on a path to the model is unchanged, every container stays
  (the same object, with all its other entries), the history dict too;
- the model's storages are dead, or the plan said why not (a blocker, or a
  holder that needs naming) and force changed nothing at all.
"""

from __future__ import annotations

import gc
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from nbmodels.core.holders import Site, Watch, remove_key
from nbmodels.core.holders.execute import execute
from nbmodels.core.holders.search import search
from tests.soak import examples

PART = "<part>"


class Box:
    """A user's object with attributes."""

    def __init__(self, **attributes: Any) -> None:
        self.__dict__.update(attributes)

    def __repr__(self) -> str:
        return f"Box({self.__dict__!r})"


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))


# What the placeholder PART becomes: part of the model in one of the ways a notebook makes one.
PARTS = ("model", "submodule", "parameter", "detached", "graph")


def make_part(model: nn.Module, kind: str) -> Any:
    if kind == "model":
        return model
    if kind == "submodule":
        return model[0]
    if kind == "parameter":
        return model[2].weight
    if kind == "detached":
        return model[0].weight.detach()
    return model(torch.randn(2, 3)).sum()  # a loss: its graph holds the weights


keys = st.one_of(
    st.text(min_size=1, max_size=8),
    st.text(min_size=70, max_size=90),  # a key whose repr is long
    st.integers(-5, 5),
    st.tuples(st.text(max_size=3), st.integers(0, 3)),
)
atoms = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5), st.none(), st.booleans())


def trees() -> st.SearchStrategy[Any]:
    leaves = st.one_of(atoms, st.just(PART), st.just("<tensor>"))
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.dictionaries(keys, inner, max_size=4),
            st.lists(inner, max_size=4),
            st.tuples(inner, inner),
            st.dictionaries(st.sampled_from(["a", "b", "model", "opt"]), inner, max_size=3).map(lambda d: Box(**d)),
        ),
        max_leaves=10,
    )


namespaces = st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True), trees(), min_size=1, max_size=6)


def realise(value: Any, part: Any) -> Any:
    """Replace the placeholders by the part and by an unrelated tensor."""
    if isinstance(value, str) and value == PART:
        return part
    if isinstance(value, str) and value == "<tensor>":
        return torch.ones(2)
    if isinstance(value, dict):
        return {k: realise(v, part) for k, v in value.items()}
    if isinstance(value, list):
        return [realise(v, part) for v in value]
    if isinstance(value, tuple):
        return tuple(realise(v, part) for v in value)
    if isinstance(value, Box):
        return Box(**{k: realise(v, part) for k, v in vars(value).items()})
    return value


def holds_part(value: Any, part: Any) -> bool:
    if value is part:
        return True
    if isinstance(value, dict):
        return any(holds_part(v, part) for v in value.values())
    if isinstance(value, list | tuple):
        return any(holds_part(v, part) for v in value)
    if isinstance(value, Box):
        return any(holds_part(v, part) for v in vars(value).values())
    return False


def only_parts(value: Any, part: Any) -> bool:
    """The part itself, or a tuple made only of it: a part of the model too (force may delete it whole)."""
    return value is part or (type(value) is tuple and len(value) > 0 and all(only_parts(v, part) for v in value))


def shape(value: Any, part: Any) -> Any:
    """A deep snapshot: atoms by value, containers by identity and contents, the part as a marker."""
    if only_parts(value, part):
        return PART
    if isinstance(value, dict):
        return ("dict", id(value), {k: shape(v, part) for k, v in value.items()})
    if isinstance(value, list):
        return ("list", id(value), [shape(v, part) for v in value])
    if isinstance(value, tuple):
        return ("tuple", id(value), tuple(shape(v, part) for v in value))
    if isinstance(value, Box):
        return ("Box", id(value), {k: shape(v, part) for k, v in vars(value).items()})
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    return ("atom", value)


def after_force(snapshot: Any) -> Any:
    """What force must leave: each reference to the part cut where it is held, nothing else touched."""
    if snapshot == PART:
        return PART
    kind = snapshot[0]
    if kind == "dict":
        return ("dict", snapshot[1], {k: after_force(v) for k, v in snapshot[2].items() if v != PART})
    if kind == "list":
        return ("list", snapshot[1], [("atom", None) if v == PART else after_force(v) for v in snapshot[2]])
    if kind == "Box":
        return (
            "Box",
            snapshot[1],
            {k: ("atom", None) if v == PART else after_force(v) for k, v in snapshot[2].items()},
        )
    if kind == "tuple":
        return ("tuple", snapshot[1], tuple(after_force(v) for v in snapshot[2]))
    return snapshot


@settings(max_examples=examples(50), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(namespace=namespaces, kind=st.sampled_from(PARTS), echoed=st.booleans())
def test_force_removes_exactly_the_plan_and_nothing_else(namespace: dict[str, Any], kind: str, echoed: bool) -> None:
    model = small()
    part = make_part(model, kind)
    ns = {name: realise(value, part) for name, value in namespace.items()}
    ns["unrelated"] = {"lr": 0.1, "rows": [1, 2, 3]}
    out: dict[int, Any] = {1: 42, 2: "text"}
    if echoed:
        out[3] = part  # an echoed result
    sites = [
        Site(ns, remove=remove_key, command="del {key}"),
        Site(out, label="Out[{key}]", kind="output", remove=remove_key, command="del Out[{key}]", unit=True),
    ]
    watch = Watch("m", model)
    del model
    held = echoed or any(holds_part(value, part) for value in ns.values())
    before = {name: shape(value, part) for name, value in ns.items()}
    tuple_only = any(_in_tuple(value, part) for value in ns.values())
    del part
    gc.collect()

    shown = search([watch], sites).plans[0].detached()
    (plan,) = search([watch], sites).plans
    done, errors = execute([plan])
    del plan
    gc.collect()

    assert errors == {}
    assert shown.frees() == (not watch.alive()) or not held
    if held and not shown.frees():
        assert shown.blockers or shown.waiting_for(), shown  # the plan says why force did not free it
        assert done == {}  # and force changed nothing at all
        assert {name: _shape_again(ns[name], before[name]) for name in ns} == before
        assert tuple_only or shown.blockers
        return
    assert not watch.alive(), shown
    assert [a.text() for a in done.get("m", [])] == [a.text() for a in shown.actions]
    assert out.get(1) == 42 and out.get(2) == "text" and 3 not in out
    for name, snapshot in before.items():
        if snapshot == PART:
            assert name not in ns  # a variable whose value is part of the model goes
        else:
            assert _shape_again(ns[name], snapshot) == after_force(snapshot), name


def _in_tuple(value: Any, part: Any, inside: bool = False) -> bool:
    """True when ``part`` sits (somewhere) inside a tuple next to something else: a cut that needs naming."""
    if only_parts(value, part):
        return inside
    if isinstance(value, tuple):
        return any(_in_tuple(v, part, True) for v in value)
    if isinstance(value, dict):
        return any(_in_tuple(v, part, inside) for v in value.values())
    if isinstance(value, list):
        return any(_in_tuple(v, part, inside) for v in value)
    if isinstance(value, Box):
        return any(_in_tuple(v, part, inside) for v in vars(value).values())
    return False


def _shape_again(value: Any, snapshot: Any) -> Any:
    """The shape of ``value`` now, with whatever stood for the part at the same place marked again."""
    if snapshot == PART and value is not None:
        return PART
    if isinstance(value, dict):
        old = snapshot[2] if snapshot[0] == "dict" else {}
        return ("dict", id(value), {k: _shape_again(v, old.get(k, ("atom", None))) for k, v in value.items()})
    if isinstance(value, list):
        old = snapshot[2] if snapshot[0] == "list" else []
        return (
            "list",
            id(value),
            [_shape_again(v, old[i] if i < len(old) else ("atom", None)) for i, v in enumerate(value)],
        )
    if isinstance(value, tuple):
        old = snapshot[2] if snapshot[0] == "tuple" else ()
        return ("tuple", id(value), tuple(_shape_again(v, old[i]) for i, v in enumerate(value)))
    if isinstance(value, Box):
        old = snapshot[2] if snapshot[0] == "Box" else {}
        return ("Box", id(value), {k: _shape_again(v, old.get(k, ("atom", None))) for k, v in vars(value).items()})
    if isinstance(value, torch.Tensor):
        return ("tensor", id(value))
    return ("atom", value)


class Refusing:
    """A user's object whose attributes cannot be cleared: the removal force plans for it raises."""

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "held", value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise PermissionError("this object keeps what it holds")


@settings(max_examples=examples(20), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    namespace=namespaces,
    kind=st.sampled_from(PARTS),
    before_items=st.sampled_from([0, 15_000]),
    after_items=st.sampled_from([0, 15_000]),
    refusing=st.booleans(),
)
def test_force_is_all_or_nothing_beside_big_data_and_names_every_python_holder(
    namespace: dict[str, Any], kind: str, before_items: int, after_items: int, refusing: bool
) -> None:
    """Big containers of plain values around the holders, a removal that raises: whole plans or nothing."""
    model = small()
    part = make_part(model, kind)
    ns: dict[str, Any] = {"data_before": [(i, str(i)) for i in range(before_items)]}
    ns.update({name: realise(value, part) for name, value in namespace.items()})
    ns["data_after"] = [[i, float(i)] for i in range(after_items)]
    if refusing:
        ns["refusing"] = Refusing(part)
    sites = [Site(ns, remove=remove_key, command="del {key}")]
    watch = Watch("m", model)
    del model
    before = {name: shape(value, part) for name, value in ns.items()}
    held = refusing or any(holds_part(value, part) for value in ns.values())
    del part
    gc.collect()

    (plan,) = search([watch], sites).plans
    shown = plan.detached()
    done, errors = execute([plan])
    del plan
    gc.collect()

    assert not any(b.kind == "unseen" for b in shown.blockers), shown.blockers  # Python sees every holder here
    assert not shown.truncated, shown.truncated
    if not held:
        assert done == {} and not shown.actions
        return
    if refusing and shown.frees():
        assert done == {} and "PermissionError" in errors["m"], errors  # one removal raised: none stayed done
        assert {name: _shape_again(ns[name], before[name]) for name in ns} == before
        assert watch.alive()
        return
    if not shown.frees():
        assert done == {} and {name: _shape_again(ns[name], before[name]) for name in ns} == before
        return
    assert errors == {} and not watch.alive()
    assert [a.text() for a in done["m"]] == [a.text() for a in shown.actions]  # each count is what happened
    assert ns["data_before"] == [(i, str(i)) for i in range(before_items)] and len(ns["data_after"]) == after_items
