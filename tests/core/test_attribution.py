"""Attribution on real tensors: each holder kind named with its bytes, shared storages once, remedies that free.

A namespace dict stands for the notebook's variables (a site, as the IPython
layer gives one); the manager's models and released models are real. The
total attributed is checked against an independent scan of the live tensors
this test made.
"""

from __future__ import annotations

import functools
import gc
import json
import sys
import types
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest
import torch

from nbmodels.core import ModelManager
from nbmodels.core.attribution import MemoryReport, cuda_from_records, memory_report, residue
from nbmodels.core.holders import Site, remove_key
from nbmodels.core.nvml import devices_from_records
from nbmodels.errors import ModelLoadError

MiB = 1 << 20
RECORDING = Path(__file__).parent / "data" / "cuda-readings.json"


def floats(nbytes: int) -> torch.Tensor:
    return torch.ones(nbytes // 4)


def _fail(big: torch.Tensor) -> None:
    raise ValueError("boom")


def f() -> None:
    big = floats(6 * MiB)
    _fail(big)


def fail_as_the_prompt_does() -> None:
    """Keep the last exception in ``sys.last_*``, as Python's prompt does after a failed statement."""
    try:
        f()
    except ValueError:
        sys.last_type, sys.last_value, sys.last_traceback = sys.exc_info()


def plant(manager: ModelManager, ns: dict[str, Any]) -> None:
    """Every kind of holder, with known sizes."""
    torch.manual_seed(0)
    ns["x"] = floats(5 * MiB)
    ns["view"] = ns["x"][10:]  # the same storage
    net = ns["net"] = torch.nn.Linear(1024, 1024)  # 4 MiB + 4 KiB
    opt = ns["opt"] = torch.optim.Adam(net.parameters())
    inp = ns["inp"] = torch.randn(768, 1024)  # 3 MiB
    net(inp).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)  # state: exp_avg, exp_avg_sq: 2 x (4 MiB + 4 KiB)
    ns["losses"] = [(torch.relu(net(inp)) ** 2).sum()]  # its graph saves relu's output: 3 MiB
    ns["sd"] = net.state_dict()  # shares the net's storages
    fail_as_the_prompt_does()
    manager.load("m", "demo:mlp", hidden=512)


@pytest.fixture
def ns(manager: ModelManager, last_exception: None) -> Iterator[dict[str, Any]]:
    namespace: dict[str, Any] = {}
    undo = manager.add_holder_finder(lambda: [Site(namespace, remove=remove_key, command="del {key}")])
    try:
        yield namespace
    finally:
        undo()
        namespace.clear()


def report(manager: ModelManager, **kwargs: Any) -> MemoryReport:
    gc.collect()
    return memory_report(manager, cuda=[], **kwargs)


def near(actual: int, expected: int) -> bool:
    return abs(actual - expected) <= 0.02 * expected


def test_each_holder_is_named_with_its_bytes(manager: ModelManager, ns: dict[str, Any]) -> None:
    plant(manager, ns)
    found = report(manager)
    weights = 1024 * 1024 * 4 + 1024 * 4

    x = found.row("x")
    assert (x.kind, x.device) == ("variable", "cpu") and near(x.nbytes, 5 * MiB) and x.storages == 1
    assert "view" in x.others
    net = found.row("net")
    assert net.kind == "variable" and near(net.nbytes, weights)
    assert {"opt", "losses", "sd"} <= set(net.others)  # the optimizer, the kept graph and the copy reach it too
    opt = found.row("opt")
    assert opt.kind == "optimizer state" and near(opt.nbytes, 2 * weights)
    assert "exp_avg" in opt.what and "exp_avg_sq" in opt.what
    graph = found.row("losses")
    assert graph.kind == "autograd graph" and near(graph.nbytes, 768 * 1024 * 4)
    assert found.row("inp").kind == "variable" and near(found.row("inp").nbytes, 3 * MiB)
    local = found.row("sys.last_traceback → local 'big' of f()")
    assert local.kind == "traceback" and near(local.nbytes, 6 * MiB)
    model = found.row("m")
    assert model.kind == "model" and model.nbytes == manager.info("m").total_bytes
    assert [r.nbytes for r in found.rows if r.kind != "smaller"] == sorted(
        (r.nbytes for r in found.rows if r.kind != "smaller"), reverse=True
    )
    assert "in tensors:" in str(found) and "<table" in found._repr_html_()


def test_shared_storages_are_counted_once(manager: ModelManager, ns: dict[str, Any]) -> None:
    emb = torch.nn.Embedding(1024, 512)  # 2 MiB
    head = torch.nn.Linear(512, 1024, bias=False)
    head.weight = emb.weight  # tied
    ns["tied"] = torch.nn.Sequential(emb, head)
    ns["copy"] = ns["tied"].state_dict()
    ns["alias"] = emb.weight.detach()
    found = report(manager)
    row = found.row("tied")
    assert row.nbytes == 2 * MiB and row.storages == 1
    assert {"copy", "alias"} <= set(row.others)
    assert not [r for r in found.rows if r.owner in ("copy", "alias")]


def _new_storages(before: set[int]) -> dict[int, int]:
    """Live storages under Python tensors that were not there before: an independent gc scan."""
    found = {}
    for obj in gc.get_objects():
        if issubclass(type(obj), torch.Tensor) and obj.device.type != "meta":
            storage = obj.untyped_storage()
            if storage._cdata not in before and storage.nbytes():
                found[storage._cdata] = storage.nbytes()
    return found


def test_the_rows_account_for_every_live_tensor(manager: ModelManager, ns: dict[str, Any]) -> None:
    gc.collect()
    before = set(_new_storages(set()))
    plant(manager, ns)
    found = report(manager, everything=True)
    live = _new_storages(before)
    named = {key for row in found.rows if row.kind != "unattributed" for key in row.keys}
    assert sum(n for key, n in live.items() if key in named) >= 0.99 * sum(live.values())


def test_each_remedy_frees_what_its_row_says(manager: ModelManager, ns: dict[str, Any]) -> None:
    plant(manager, ns)
    owners = [r.owner for r in report(manager).rows if r.kind != "smaller"]
    assert len(owners) >= 7
    for owner in owners:
        ns.clear()
        if "m" in manager:
            manager.unload("m")
        plant(manager, ns)
        found = report(manager)
        row = found.row(owner)
        command = found.commands(row)
        scope = {"manager": manager} if row.kind == "model" else ns
        exec(command, scope)  # as written
        scope.pop("__builtins__", None)
        gc.collect()
        assert row.alive() == 0, f"{owner}: {command!r} left {row.alive()} of {row.storages} storages alive"


def test_a_million_plain_items_beside_the_model_change_nothing(manager: ModelManager, ns: dict[str, Any]) -> None:
    plant(manager, ns)
    before = [(r.owner, r.kind, r.nbytes) for r in report(manager).rows]
    ns["data"] = [(i, str(i)) for i in range(1_000_000)]
    ns["table"] = {i: (i, "row") for i in range(200_000)}
    after = report(manager)
    assert [(r.owner, r.kind, r.nbytes) for r in after.rows] == before
    assert not after.truncated


def test_a_report_keeps_nothing_alive(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["x"] = floats(2 * MiB)
    ns["net"] = torch.nn.Linear(512, 1024)
    refs = [weakref.ref(ns["x"]), weakref.ref(ns["net"])]
    kept = report(manager)
    assert kept.row("x").alive() == 1
    ns.clear()
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert kept.row("x").alive() == 0 and kept.row("net").alive() == 0


def test_a_released_model_still_held_is_named_with_its_holder(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["keep"] = manager.load("m", "demo:mlp", hidden=512)
    manager.unload("m")
    assert manager.survivors() == ["m"]
    row = report(manager).row("released model m")
    assert row.kind == "released model" and "keep" in row.others
    assert [r.kind for r in row.remedies] == ["unload"]
    exec(row.remedies[0].text(), {"manager": manager})
    gc.collect()
    assert row.alive() == 0 and "keep" not in ns


def test_diff_names_what_was_added_and_freed(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["x"] = floats(2 * MiB)
    first = report(manager)
    ns["y"] = floats(3 * MiB)
    del ns["x"]
    changes = report(manager).diff(first)
    assert [(c.owner, c.delta, c.status) for c in changes.added] == [("y", 3 * MiB, "added")]
    assert [(c.owner, c.delta, c.status) for c in changes.freed] == [("x", -2 * MiB, "freed")]
    assert "+3.0 MiB" in str(changes)


def test_the_cpu_residue_is_the_rss_beyond_live_tensors() -> None:
    lines = residue(500 * MiB, {"cpu": 120 * MiB}, [])
    assert [(r.device, r.nbytes) for r in lines] == [("cpu", 380 * MiB)]


def test_cuda_residue_from_recorded_readings() -> None:
    recording = json.loads(RECORDING.read_text())
    gpus = devices_from_records(recording["nvml"])
    readings = cuda_from_records(recording["torch"], gpus, pid=recording["pid"], visible=recording["visible"])
    assert [(r.device, r.process, r.others) for r in readings] == [("cuda:0", 2231369728, 2063597568)]
    lines = {r.label.split(" (")[0]: r for r in residue(None, {"cuda:0": 900 * MiB}, readings)}
    cache = lines["allocator cache"]
    assert cache.nbytes == 512 * MiB and cache.remedy.command == "import torch; torch.cuda.empty_cache()"
    assert lines["allocated by PyTorch outside the live tensors found"].nbytes == 1024 * MiB - 900 * MiB
    outside = next(r for label, r in lines.items() if label.startswith("CUDA context and this process"))
    assert outside.nbytes == 2231369728 - 1610612736
    assert lines["other processes"].nbytes == 2063597568
    with_context = cuda_from_records(
        [{**recording["torch"][0], "context": 500 * MiB}], gpus, pid=recording["pid"], visible=recording["visible"]
    )
    split = {r.label.split(" (")[0]: r.nbytes for r in residue(None, {}, with_context)}
    assert split["CUDA context"] == 500 * MiB
    assert split["this process outside PyTorch's allocator"] == 2231369728 - 1610612736 - 500 * MiB


def test_a_module_attribute_and_borrowed_memory(manager: ModelManager, ns: dict[str, Any]) -> None:
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(256, 1024)  # 1 MiB + 4 KiB
            self.cache = floats(2 * MiB)  # a plain attribute of the user's own net

    ns["net"] = Net()
    ns["arr"] = torch.from_numpy(numpy.ones(2**19))  # 4 MiB of numpy's memory
    found = report(manager)
    net = found.row("net")
    assert net.nbytes == 3 * MiB + 4 * 1024 and "net.cache" in net.what
    arr = found.row("arr")
    assert arr.borrowed == arr.nbytes == 4 * MiB and net.borrowed == 0
    assert "torch did not allocate" in str(found)


def test_a_tensor_no_named_place_reaches_is_reported_unattributed(manager: ModelManager, ns: dict[str, Any]) -> None:
    hidden = types.ModuleType("somebody_elses_module")  # not in the notebook's variables, not in sys.modules
    hidden.cache = floats(3 * MiB)  # type: ignore[attr-defined]
    ns["x"] = floats(2 * MiB)
    found = report(manager)
    (row,) = [r for r in found.rows if r.kind == "unattributed"]  # one row per device, said, never hidden
    assert storage_key(hidden.cache) in row.keys and row.nbytes >= 3 * MiB and not row.remedies
    assert storage_key(ns["x"]) not in row.keys
    assert found.attributed <= found.total - 3 * MiB and "unattributed" in found.summary()


def storage_key(tensor: torch.Tensor) -> int:
    return int(tensor.untyped_storage()._cdata)


def test_every_tensor_a_graph_saved_is_counted(manager: ModelManager, ns: dict[str, Any]) -> None:
    """Saved outputs come back as new tensor objects, one per read: each one is counted, none is lost."""
    y = torch.full((2**18,), 0.1, requires_grad=True)  # 1 MiB, the leaf
    for _ in range(8):
        y = torch.exp(y) * 0.5  # exp saves its output (1 MiB a step), read back as a new object each time
    ns["y"] = y
    del y
    found = report(manager)
    graph = found.row("y")
    assert graph.kind == "autograd graph" and near(graph.nbytes, 9 * MiB)  # 8 steps and the leaf
    assert not [r for r in found.rows if r.kind == "unattributed"]


def test_a_suspended_generator_and_a_partial_hold_what_they_captured(manager: ModelManager, ns: dict[str, Any]) -> None:
    def batches() -> Iterator[int]:
        buffer = floats(3 * MiB)
        yield int(buffer.numel())

    ns["gen"] = batches()
    next(ns["gen"])
    ns["step"] = functools.partial(torch.add, floats(2 * MiB))
    found = report(manager)
    assert found.row("gen").nbytes == 3 * MiB and found.row("step").nbytes == 2 * MiB
    assert ns["gen"].gi_frame is not None  # still suspended: the walk did not run it


def test_a_walk_out_of_budget_says_so_and_loses_nothing_silently(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["records"] = [{"id": [i]} for i in range(5_000)] + [{"deep": floats(2 * MiB)}]  # tracked: each costs
    found = memory_report(manager, cuda=[], budget=1_000)
    assert "ran out of budget from records" in found.truncated and "stopped early" in str(found)
    assert found.row("unattributed (no named place reaches it)").nbytes >= 2 * MiB  # said, never hidden
    full = report(manager)  # the default budget reaches it
    assert not full.truncated and full.row("records").nbytes == 2 * MiB


def test_an_isolated_model_is_listed_as_its_worker_s_memory(manager: ModelManager, ns: dict[str, Any]) -> None:
    manager.load("far", "demo:mlp", hidden=512, runner="process")
    ns["x"] = floats(2 * MiB)
    found = report(manager)
    info = manager.info("far")
    row = found.row("far")
    assert row.kind == "model" and row.nbytes == info.total_bytes and info.where in row.what
    assert found.total == found.attributed and found.row("x").nbytes == 2 * MiB
    assert row.storages == 0 and not row.keys  # none of its storages is in this process
    assert [r.kind for r in row.remedies] == ["unload"]


def test_a_holder_no_python_names_is_said_in_words_that_still_run(manager: ModelManager) -> None:
    hidden: dict[str, Any] = {"cache": floats(2 * MiB)}
    undo = manager.add_holder_finder(lambda: [Site(hidden, label="{key} (a library's cache)")])  # no command
    try:
        found = report(manager)
        row = found.row("cache (a library's cache)")
        command = found.commands(row)
        assert command == "# also: remove cache (a library's cache) (no Python names it)"
        exec(command, {})  # runs as written: it says what to do, and does nothing
    finally:
        undo()


def test_a_load_out_of_memory_names_the_other_holders(manager: ModelManager, ns: dict[str, Any]) -> None:
    ns["activations"] = floats(3 * MiB)

    def runs_out() -> torch.nn.Module:
        raise MemoryError()

    with pytest.raises(ModelLoadError) as info:
        manager.load("new", runs_out)
    message = str(info.value)
    assert "other holders on cpu: activations 3.0 MiB" in message  # earlier tests' strays may follow it
    assert "(nbmodels.memory() or %memory: what frees each)" in message
    assert message.index("other holders") < message.index("nothing nbmodels manages there can be freed")


def test_a_report_leaves_no_cycle_that_keeps_a_value_alive(manager: ModelManager, ns: dict[str, Any]) -> None:
    """Without a collection after it, deleting a variable the report walked frees it at once."""
    ns["x"] = floats(2 * MiB)
    ref = weakref.ref(ns["x"])
    gc.collect()
    gc.disable()
    try:
        memory_report(manager, cuda=[])
        del ns["x"]
        assert ref() is None
    finally:
        gc.enable()


def test_a_holder_finder_that_fails_is_said_and_the_rest_is_reported(manager: ModelManager, ns: dict[str, Any]) -> None:
    def broken() -> list[Site]:
        raise RuntimeError("widget registry gone")

    undo = manager.add_holder_finder(broken)
    try:
        ns["x"] = floats(2 * MiB)
        found = report(manager)
    finally:
        undo()
    assert found.row("x").nbytes == 2 * MiB
    assert "a holder finder failed (RuntimeError: widget registry gone)" in found.truncated
