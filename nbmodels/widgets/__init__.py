"""The widget layer: the live model panel (``nbmodels.panel()``, ``%model_panel``).

Importing this package imports nothing of ipywidgets; ``nbmodels.widgets.panel`` does.
"""
