"""``%model_panel`` in a real InteractiveShell: it displays a live panel on the process-wide manager."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
from ipywidgets import Button, widget_serialization

from nbmodels import ModelManager

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _find(widget: Any, css: str) -> Any:
    if css in getattr(widget, "_dom_classes", ()):
        return widget
    for child in getattr(widget, "children", ()):
        found = _find(child, css)
        if found is not None:
            return found
    return None


def test_model_panel_displays_a_live_panel(ip: InteractiveShell, mgr: ModelManager) -> None:
    manager = mgr
    with capture_output() as shown:
        result = ip.run_line_magic("model_panel", "")
    assert result is None  # shown once, not echoed again into Out
    assert len(shown.outputs) == 1
    data = shown.outputs[0].data
    assert data["text/plain"].startswith("<nbmodels panel: 0 model(s)>")
    root = widget_serialization["from_json"](f"IPY_MODEL_{data[WIDGET_VIEW]['model_id']}", None)
    assert "nbmodels-panel" in root._dom_classes

    manager.load("m", "demo:mlp", hidden=8)  # the panel follows the process-wide manager
    assert _find(root, "nbmodels-row-m") is not None

    close: Button = _find(root, "nbmodels-close")
    close.click()  # the panel's own close button unsubscribes it
    manager.unload("m")
    manager.load("n", "demo:mlp", hidden=8)
    assert _find(root, "nbmodels-row-n") is None
    assert root.comm is None


def test_model_panel_takes_no_arguments(ip: InteractiveShell) -> None:
    with pytest.raises(UsageError):
        ip.run_line_magic("model_panel", "extra")
