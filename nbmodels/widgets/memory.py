"""The panel's "Where is the memory?" section: the ``%memory`` report, collapsed, computed only when asked.

Attribution walks the notebook's objects (about one ``gc.collect()`` of time),
so it never runs on a timer: opening the section or pressing its Refresh
button computes it once. It shows the report's HTML (every live tensor under
the name that holds it, with the command that frees it) and keeps only that
text, never the report's objects.
"""

from __future__ import annotations

import html
import logging
import traceback
from typing import Any

import ipywidgets as widgets

from nbmodels.core import ModelManager
from nbmodels.core.attribution import MemoryReport

log = logging.getLogger("nbmodels")

TITLE = "Where is the memory?"


def _report(manager: ModelManager) -> MemoryReport:
    """The report as ``%memory`` spells it when the extension is loaded, else with Python commands."""
    import nbmodels

    return nbmodels.memory(manager=manager)


class MemorySection:
    """An Accordion, collapsed: opening it (or Refresh) computes the report and shows it."""

    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager
        self.computed = 0  # how many times the report was computed (it is never computed unasked)
        self.view = widgets.HTML('<div class="nbm-faint">open to see where the memory is</div>')
        self.view.add_class("nbmodels-where")
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh", tooltip="compute again")
        self.refresh_button.add_class("nbmodels-where-refresh")
        self.refresh_button.on_click(lambda _: self.compute())
        self.box = widgets.Accordion(children=[widgets.VBox([self.refresh_button, self.view])], selected_index=None)
        self.box.set_title(0, TITLE)
        self.box.add_class("nbmodels-where-section")
        self.box.observe(self._opened, names="selected_index")

    def _opened(self, change: dict[str, Any]) -> None:
        if change.get("new") == 0:
            self.compute()

    def compute(self) -> None:
        """Compute the report now and show it (an error is shown as text, never raised into the front end)."""
        try:
            report = _report(self._manager)
            text = report._repr_html_()
            del report
        except Exception as exc:
            # the traceback as text: a kept record of the exception would hold the report's frames
            log.error("nbmodels: the memory report failed\n%s", traceback.format_exc())
            text = f'<div class="nbm-error">the report failed: {html.escape(f"{type(exc).__name__}: {exc}")}</div>'
        self.computed += 1
        self.view.value = text


__all__ = ["TITLE", "MemorySection"]
