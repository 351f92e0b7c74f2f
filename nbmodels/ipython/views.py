"""What the magics show: the model table with per-device memory, one model's details,
and the rule that an action's result on a cell's last line is not shown again.

Every object here carries records and numbers, never a model, so keeping one in
``Out`` or a variable keeps no memory alive.
"""

from __future__ import annotations

import ast
import html
import sys
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import fields
from typing import Any

from nbmodels.core import ModelInfo, ModelList
from nbmodels.core.memory import DeviceMemory, describe_reading, device_readings, format_bytes
from nbmodels.core.policy.sizes import format_duration


def display(obj: Any, *, raw: bool = False) -> None:
    """IPython's ``display`` (untyped there), imported when first used."""
    from IPython import display as ipython_display

    show: Any = ipython_display.display
    show(obj, raw=raw)


describe_device = describe_reading  # one line of memory for a device, in words (see nbmodels.core.memory)


def _cuda_note(readings: Iterable[DeviceMemory]) -> str | None:
    """Say so when CUDA exists but this process never started it (nothing to show, nothing to free)."""
    if any(r.device.startswith("cuda") for r in readings):
        return None
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        count = int(torch.cuda.device_count()) if torch.cuda.is_available() else 0
    except Exception:
        return None
    return f"{count} CUDA device(s), not used by this process yet" if count else None


class ModelTable(ModelList):
    """``%list_models``: the loaded models (a ModelList) plus each device's memory right now."""

    def __init__(self, models: Iterable[ModelInfo] = (), devices: Iterable[DeviceMemory] = ()) -> None:
        super().__init__(models)
        self.devices: tuple[DeviceMemory, ...] = tuple(devices)

    @classmethod
    def current(cls, models: Iterable[ModelInfo]) -> ModelTable:
        return cls(models, device_readings())

    def memory_lines(self) -> list[str]:
        lines = [f"{r.device}: {describe_device(r)}" for r in self.devices]
        note = _cuda_note(self.devices)
        if note:
            lines.append(f"cuda: {note}")
        return lines

    def __str__(self) -> str:
        head = ModelList.__str__(self)
        if len(self) > 0:
            head = f"{len(self)} model(s) loaded\n{head}"
        return head + "\n\nmemory:\n" + "\n".join("  " + line for line in self.memory_lines())

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td>{html.escape(r.device)}</td><td>{html.escape(describe_device(r))}</td></tr>" for r in self.devices
        )
        note = _cuda_note(self.devices)
        if note:
            rows += f"<tr><td>cuda</td><td>{html.escape(note)}</td></tr>"
        head = "<thead><tr><th>device</th><th>memory</th></tr></thead>"
        memory = f'<table class="nbmodels-memory">{head}<tbody>{rows}</tbody></table>'
        count = f"<p>{len(self)} model(s) loaded</p>" if len(self) else ""
        return f'<div class="nbmodels">{count}{ModelList._repr_html_(self)}{memory}</div>'


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


class ModelDetails(ModelInfo):
    """``%model_info``: a ModelInfo that shows itself as one field per line."""

    @classmethod
    def of(cls, info: ModelInfo) -> ModelDetails:
        return cls(**{f.name: getattr(info, f.name) for f in fields(info)})

    def items(self) -> list[tuple[str, str]]:
        def per_device(values: dict[str, int]) -> str:
            return ", ".join(f"{d} {format_bytes(n)}" for d, n in sorted(values.items())) or "-"

        return [
            ("name", self.name),
            ("source", self.source),
            ("class", self.class_name),
            ("device", ", ".join(self.devices) or "?"),
            ("dtype", ", ".join(self.dtypes) or "?"),
            ("parameters", self.params),
            ("size", f"{self.size} ({per_device(self.bytes_by_device)})"),
            *[("parts" if i == 0 else "", part.line()) for i, part in enumerate(self.parts)],
            ("RSS change at load", format_bytes(self.rss_delta)),
            ("CUDA allocated at load", per_device(self.cuda_allocated_delta)),
            ("load time", f"{self.load_seconds:.2f}s"),
            ("loaded at", _clock(self.loaded_at)),
            ("last used", _clock(self.last_used)),
            ("uses", str(self.hits)),
            ("pinned", "yes" if self.pinned else "no"),
            ("runs in", self.where + (f" ({self.worker_memory})" if self.worker_memory else "")),
            ("keep-alive", format_duration(self.keep_alive)),
            ("unloads", self.unloads if self.keep_alive is not None else "never (keep-alive is forever)"),
        ]

    def __str__(self) -> str:
        pairs = self.items()
        width = max(len(key) for key, _ in pairs)
        return "\n".join(f"{key.ljust(width)}  {value}" for key, value in pairs)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><th style='text-align:left'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in self.items()
        )
        return f'<table class="nbmodels-info"><tbody>{rows}</tbody></table>'


# The magics whose value is for assigning (``m = %load_model x``), never for the displayhook:
# each shows what it did itself.
ACTION_MAGICS = frozenset({"load_model", "unload_model", "model_cleanup"})


def _is_action_magic(node: ast.expr) -> bool:
    """``get_ipython().run_line_magic('load_model', ...)``: what IPython makes of ``%load_model ...``."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "run_line_magic"
        and isinstance(node.func.value, ast.Call)
        and isinstance(node.func.value.func, ast.Name)
        and node.func.value.func.id == "get_ipython"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value in ACTION_MAGICS
    )


class SilenceBareActions(ast.NodeTransformer):
    """Turns a bare ``%load_model x`` statement into one whose value is None.

    The displayhook shows nothing for None: no empty ``Out[N]:`` line in a
    terminal, no ``Out``/``_`` entry, nothing to hold. An assignment
    (``m = %load_model x``) is no bare statement and keeps its value.
    """

    def visit_Expr(self, node: ast.Expr) -> ast.Expr:
        if _is_action_magic(node.value):
            discard = ast.Tuple(elts=[node.value, ast.Constant(None)], ctx=ast.Load())
            node.value = ast.copy_location(ast.Subscript(value=discard, slice=ast.Constant(1), ctx=ast.Load()), node)
        return node


class EchoGuard:
    """Keeps an action magic's result on a cell's last line away from the displayhook.

    Each action shows what it did itself (its one line, its report) and returns
    the result for ``m = %load_model x``; :class:`SilenceBareActions` makes the
    bare form give the displayhook nothing, so nothing is shown twice and no
    ``Out[N]`` entry or empty ``Out[N]:`` line appears. What the user displays on
    purpose (``r = %unload_model x`` then ``r``) is shown as usual.
    """

    def __init__(self, shell: Any) -> None:
        self._shell = shell

    def install(self) -> Callable[[], None]:
        transformers = self._shell.ast_transformers
        silencer = SilenceBareActions()
        transformers.append(silencer)
        restore = self._guard_running_cell()

        def undo() -> None:
            if silencer in transformers:
                transformers.remove(silencer)
            restore()

        return undo

    def _guard_running_cell(self) -> Callable[[], None]:
        """Loaded by a cell that goes on to ``%load_model x`` (``%load_ext nbmodels`` above it): that cell was
        compiled before the silencer existed, so for the rest of it the displayhook skips an action's result.

        IPython restores its own displayhook when the cell ends, so this lasts one cell.
        """
        trap = getattr(self._shell, "display_trap", None)
        hook = getattr(trap, "hook", None)
        if trap is None or not getattr(trap, "is_active", False) or sys.displayhook is not hook:
            return lambda: None
        shown: Callable[[Any], None] = hook

        def displayhook(value: Any) -> None:
            if value is not None and is_action_result(value):
                return  # the action showed what it did itself; Out and _ stay as they were
            shown(value)

        sys.displayhook = displayhook

        def restore() -> None:
            if sys.displayhook is displayhook:
                sys.displayhook = shown

        return restore


_last_action: weakref.ref[Any] | None = None


def note_action_result(value: Any) -> None:
    """Remember (weakly) what an action magic returned last, for :meth:`EchoGuard._guard_running_cell`."""
    global _last_action
    try:
        _last_action = weakref.ref(value)
    except TypeError:
        _last_action = None


def is_action_result(value: Any) -> bool:
    """True when ``value`` is what an action magic returned last."""
    ref = _last_action
    return ref is not None and ref() is value


__all__ = ["ACTION_MAGICS", "EchoGuard", "ModelDetails", "ModelTable", "SilenceBareActions", "describe_device"]
