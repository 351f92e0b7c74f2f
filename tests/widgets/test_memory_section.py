"""The panel's "Where is the memory?" section on a real shell: collapsed, computed only when opened or refreshed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.widgets.memory import TITLE
from nbmodels.widgets.panel import ModelPanel
from tests.ipython.conftest import run


@pytest.fixture
def panel(ip: InteractiveShell, mgr: ModelManager) -> Iterator[ModelPanel]:
    view = ModelPanel(mgr, cuda_devices=0, refresh_interval=0)
    try:
        yield view
    finally:
        view.close()


def test_the_section_is_collapsed_and_computes_only_when_opened(ip: InteractiveShell, panel: ModelPanel) -> None:
    run(ip, "import torch\nactivations = torch.ones(2**20)")
    section = panel.where
    assert section.box.get_title(0) == TITLE and section.box.selected_index is None
    panel.refresh()  # the panel's own refresh never computes it
    assert section.computed == 0 and "activations" not in section.view.value
    section.box.selected_index = 0  # the user opens it
    assert section.computed == 1
    assert "activations" in section.view.value and "del activations" in section.view.value
    run(ip, "del activations\nbatch = torch.ones(2**19)")
    section.refresh_button.click()
    assert section.computed == 2
    assert "activations" not in section.view.value and "del batch" in section.view.value


def test_closing_the_panel_closes_the_section(panel: ModelPanel) -> None:
    box = panel.where.box
    panel.close()
    assert box.comm is None and panel.where.view.comm is None
