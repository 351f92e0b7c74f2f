"""Models in Ray actors on a local Ray (``ray.init(num_cpus=1)``), shared by the tests of this module.

Run by ``test_ray_runner.py`` in a pytest of its own: ray's modules and threads stay out of the main
test process, whose holder-search tests work to a time budget over every object in the process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest
import torch

from nbmodels.core import demo, memory, runners
from nbmodels.errors import InvalidArgumentError, ModelLoadError, WorkerDiedError
from tests.core.runners.conftest import PROBE, wait_gone
from tests.core.runners.models import probe

try:
    import ray
except ImportError:  # the test extra installs it (nbmodels[ray]); under CI a missing ray is a failure
    if os.environ.get("CI"):
        raise
    pytest.skip("ray is not installed: pip install 'nbmodels[ray]'", allow_module_level=True)

pytestmark = [
    pytest.mark.slow,
    # Ray's own modules warn about their deprecated parts on import and while running.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_start_call_stop_and_the_actor_is_gone() -> None:
    remote = runners.start("ray", "mlp", "demo:mlp", kwargs={"hidden": 40, "seed": 2})
    x = torch.linspace(-1, 1, 3 * 64).reshape(3, 64)
    local = demo.mlp(hidden=40, seed=2)
    assert torch.equal(remote(x), local(x))
    assert remote.footprint == memory.footprint(local) and remote.class_name == "Sequential"
    assert remote.runner == "ray" and remote.node and remote.pid and psutil.pid_exists(remote.pid)
    assert remote.eval() is remote and remote.training is False
    reading = remote.memory()
    assert reading.pid == remote.pid and reading.rss
    actor = remote._backend._actor  # type: ignore[attr-defined]
    result = remote.stop()
    assert result.gone and result.ended == "stopped" and result.before is not None
    assert wait_gone(remote.pid, 5)
    with pytest.raises(ray.exceptions.RayActorError):  # Ray itself reports the actor dead
        ray.get(actor.measure.remote(), timeout=10)
    with pytest.raises(WorkerDiedError, match="was stopped"):
        remote(x)


def test_errors_in_the_actor_read_like_the_in_process_ones_and_a_crash_is_a_worker_died_error() -> None:
    remote = runners.start("ray", "probe", PROBE)
    try:
        with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
            remote(torch.ones(2, 5))
        with pytest.raises(ValueError, match="failed on purpose"):
            remote.fail()
        assert torch.equal(remote(torch.ones(1, 8)), probe()(torch.ones(1, 8)))  # the actor lived
        exits: list[runners.ExitInfo] = []
        remote.add_exit_callback(exits.append)
        with pytest.raises(WorkerDiedError, match="model 'probe'"):
            remote.call("exit", 3)
        assert not remote.alive and len(exits) == 1 and not exits[0].requested
    finally:
        remote.stop()
    again = runners.start("ray", "probe", PROBE)  # and a fresh start works
    assert again.call("pid") == again.pid
    again.stop()


def test_load_errors_and_bad_devices_for_ray() -> None:
    with pytest.raises(ModelLoadError, match="failed on purpose") as failed:
        runners.start("ray", "x", "tests.core.runners.models:failing_factory")
    assert isinstance(failed.value.__cause__, ValueError)
    with pytest.raises(InvalidArgumentError, match="torch calls a GPU 'cuda'"):
        runners.start("ray", "x", "demo:mlp", device="gpu")


def test_the_manager_places_a_model_in_a_ray_actor_and_unload_ends_it() -> None:
    from nbmodels.core import ModelManager

    manager = ModelManager()
    model = manager.load("r", "demo:mlp", hidden=24, runner="ray")
    x = torch.ones(2, 64)
    assert torch.equal(model(x), demo.mlp(hidden=24)(x))
    info = manager.info("r")
    assert info.runner == "ray" and info.where.startswith("ray ") and info.pid and "RSS" in info.worker_memory
    pid = info.pid
    del model
    report = manager.unload("r")
    assert report.ok and report.stopped["r"].startswith("Ray actor stopped") and wait_gone(pid, 5)
