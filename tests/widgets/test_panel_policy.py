"""The panel and the memory policy: the pin toggle, when each model will be unloaded, evictions in the status."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from nbmodels import ModelManager
from nbmodels.core.reports import ModelInfo
from nbmodels.widgets import render
from nbmodels.widgets.panel import ModelPanel
from tests.widgets.test_panel import manager

__all__ = ["manager"]  # the panel tests' own manager fixture


@pytest.fixture
def panel(manager: ModelManager) -> Iterator[ModelPanel]:
    view = ModelPanel(manager, cuda_devices=0, refresh_interval=0)
    yield view
    view.close()


def test_the_pin_toggle_pins_and_unpins(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("m", "demo:mlp")
    row = panel.rows["m"]
    assert row.pin_button.description == "Pin"
    row.pin_button.click()
    assert manager.info("m").pinned
    assert panel.rows["m"].pin_button.description == "Unpin" and "nbm-pinned" in row.pin_button._dom_classes
    assert 'class="nbm-c nbm-pin" title="pinned">✓' in row.cells.value
    assert panel.status_text == "pinned m"
    row.pin_button.click()
    assert not manager.info("m").pinned and row.pin_button.description == "Pin"
    manager.pin("m")  # from the API: the row follows the event
    assert row.pin_button.description == "Unpin"


def test_each_row_says_when_keep_alive_unloads_it(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("kept", "demo:mlp")
    manager.load("timed", "demo:mlp", keep_alive="30m", seed=1)
    manager.load("pinned", "demo:mlp", keep_alive=60, seed=2, pin=True)
    assert 'class="nbm-c nbm-unloads" title="keep-alive: forever' in panel.rows["kept"].cells.value
    timed = panel.rows["timed"].cells.value
    assert ">in 30m<" in timed and "keep-alive 30m: unloaded after that long idle" in timed
    assert "but pinned: never unloaded" in panel.rows["pinned"].cells.value


def test_the_unloads_text() -> None:
    def info(**fields: object) -> ModelInfo:
        base: dict[str, object] = {
            "name": "m", "source": "demo:mlp", "class_name": "Sequential", "devices": ("cpu",), "dtypes": ("float32",),
            "parameters": 1, "bytes_by_device": {"cpu": 4}, "rss_delta": None, "cuda_allocated_delta": {},
            "load_seconds": 0.1, "loaded_at": 0.0, "last_used": 0.0, "hits": 0, "pinned": False,
        }  # fmt: skip
        base.update(fields)
        return ModelInfo(**base)  # type: ignore[arg-type]

    now = time.time()
    assert info().unloads == "-"
    assert info(keep_alive=600.0, unload_at=now + 300).unloads == "in 5m"
    assert info(keep_alive=600.0, unload_at=now - 1).unloads == "due"
    assert info(keep_alive=0.0, in_use=True).unloads == "after use"
    assert info(keep_alive=600.0, in_use=True).unloads == "10m after use"
    assert info(keep_alive=600.0, pinned=True).unloads == "-"
    row = dict(zip(ModelInfo.HEADERS, info(keep_alive=600.0, unload_at=now + 300).row(), strict=True))
    assert row["unloads"] == "in 5m" and row["runs in"] == "kernel"
    assert render.COLUMNS[-1] == "unloads"


def test_an_eviction_shows_in_the_status_line(manager: ModelManager, panel: ModelPanel) -> None:
    manager.load("old", "demo:mlp", size_mb=1)
    size = manager.info("old").total_bytes
    assert size is not None
    manager.set_max_memory({"cpu": int(1.5 * size)})
    manager.load("new", "demo:mlp", size_mb=1, seed=1)
    assert panel.status_kind == "ok"
    assert panel.status_text.startswith("evicted old (1022.4 KiB, idle ")
    assert " to fit new · loaded new: Sequential on cpu" in panel.status_text
    assert "old" not in panel.rows
    manager.set_max_memory(None)
    manager.load("brief", "demo:mlp", keep_alive=0.1, seed=2)
    for _ in range(200):
        if panel.status_text.startswith("brief: unloaded by keep-alive"):
            break
        time.sleep(0.02)
    assert panel.status_text.startswith("brief: unloaded by keep-alive after ")
    assert "brief" not in panel.rows
