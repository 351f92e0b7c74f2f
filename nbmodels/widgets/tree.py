"""Closing a tree of widgets whole: ipywidgets' ``close()`` leaves children, Layout and Style widgets open.

A widget left open costs a comm and stays in the registry, and one that is closed
while an open parent still lists it breaks ipywidgets' embedding (Voilà,
``embed_data``): so a row or section is closed whole, and only once no layout
shows it.
"""

from __future__ import annotations

import ipywidgets as widgets


def close_tree(widget: widgets.Widget) -> None:
    """Close a widget, its children, and their Layout and Style widgets."""
    for child in getattr(widget, "children", ()):
        close_tree(child)
    for part in ("layout", "style"):
        sub = getattr(widget, part, None)
        if isinstance(sub, widgets.Widget):
            sub.close()
    widget.close()


__all__ = ["close_tree"]
