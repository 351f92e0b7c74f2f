"""IPython's hidden holders, as sites for the holder search, and how force removes their entries.

IPython keeps results and errors in places a user never assigned: the output
history (``Out[7]``, ``_7``, ``_``, ``__``, ``___``, each also copied into
``user_ns_hidden``, and the display hook's own ``_``/``__``/``___``), the
last cell's result, the last exception (``sys.last_*``, ``InteractiveTB.tb``)
and the debugger ``%debug`` leaves behind (``InteractiveTB.pdb``). Widget
callbacks hold what their closures captured. :class:`IPythonHolders` names
these places as sites for the core search (``nbmodels.core.holders``).

Force cuts *entries* of these places (``del Out[4]``, ``del _4``,
``displayhook._ = None``), never the places themselves: ``Out``, ``_oh`` and
``user_ns_hidden`` stay, with every entry that does not lead to the model.
This is ``InteractiveShell.del_var``'s idea (delete by identity from every
namespace, ``Out``, the last execution result and the display hook) with its
gaps closed: the hidden ``user_ns_hidden['_']`` that even ``%reset -f out``
leaves, tracebacks, ``%debug`` and widget callbacks.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any

from nbmodels.core.holders import Boundary, HolderKind, Site, remove_item, remove_key, set_none
from nbmodels.core.manager import ModelManager, get_manager

_OUTPUT = re.compile(r"_\d+|_{1,3}")
_RESULT_KEYS = frozenset({"result", "error_in_exec", "error_before_exec"})
_DISPLAYHOOK_KEYS = frozenset({"_", "__", "___"})
_TRACEBACK_KEYS = frozenset({"tb", "pdb"})
_SHELL = "get_ipython()"


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class IPythonHolders:
    """A holder finder for one shell: its namespaces, output history, last error and widget callbacks.

    Called by the manager on each holder search (only when a released model
    survived); returns fresh sites every time, so it sees the shell as it is now.
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self) -> list[Site | Boundary]:
        shell = self.shell
        places: list[Site | Boundary] = [Boundary(shell)]
        places += self._namespaces(shell)
        places += self._results(shell)
        places += self._errors(shell)
        places += _widget_callbacks(shell.user_ns)
        return places

    @staticmethod
    def fix_command(name: str, allow: Sequence[str] = ()) -> str:
        """``%unload_model NAME --force``, with ``--allow HOLDER`` for each holder that needs naming."""
        extra = "".join(f" --allow {shlex.quote(holder)}" for holder in allow)
        return f"%unload_model {shlex.quote(name)} --force{extra}"

    @staticmethod
    def _namespaces(shell: Any) -> list[Site]:
        user_ns: dict[str, Any] = shell.user_ns
        hidden: dict[str, Any] = shell.user_ns_hidden
        outputs = frozenset(key for key in list(user_ns) if _OUTPUT.fullmatch(key))
        # IPython's own names (In, Out, _oh, get_ipython, exit...): the same object in user_ns_hidden
        own = frozenset(
            key for key in list(hidden) if key not in outputs and key in user_ns and user_ns[key] is hidden[key]
        )
        sites = [
            Site(
                user_ns,
                remove=remove_key,
                command="del {key}",
                special={key: (key, "output") for key in outputs},
                unit_keys=outputs,
                skip=own | {"__builtins__"},
                keep=dict.fromkeys(names_in_use(user_ns), _IN_USE),
            ),
            Site(
                hidden,
                label="{key} (IPython's hidden copy in user_ns_hidden)",
                kind="output",
                remove=remove_key,
                command=f"del {_SHELL}.user_ns_hidden[{{key!r}}]",
                expr=f"{_SHELL}.user_ns_hidden[{{key!r}}]",
                unit=True,
                skip=frozenset(key for key in list(hidden) if not _OUTPUT.fullmatch(key)),
            ),
        ]
        history = getattr(shell, "history_manager", None)
        out = getattr(history, "output_hist", None)
        if out is None:
            out = user_ns.get("_oh")
        if isinstance(out, dict):
            sites.append(
                Site(
                    out,
                    label="Out[{key}]",
                    kind="output",
                    remove=remove_key,
                    command="del Out[{key}]",
                    expr="Out[{key}]",
                    unit=True,
                )
            )
        for module in list(getattr(shell, "_main_mod_cache", {}).values()):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict) and namespace is not user_ns:
                where = _escape(str(namespace.get("__file__", "a %run script")))
                sites.append(
                    Site(
                        namespace,
                        label="{key} (a variable of %run " + where + ")",
                        remove=remove_key,
                        expr="",
                        skip=frozenset({"__builtins__"}),
                    )
                )
        return sites

    @staticmethod
    def _results(shell: Any) -> list[Site]:
        sites = []
        displayhook = getattr(shell, "displayhook", None)
        if displayhook is not None:
            sites.append(
                Site(
                    displayhook,
                    label="{key} (kept by IPython's display hook)",
                    kind="output",
                    remove=set_none,
                    command=f"{_SHELL}.displayhook.{{key}} = None",
                    expr=f"{_SHELL}.displayhook.{{key}}",
                    keys=_DISPLAYHOOK_KEYS,
                    unit=True,
                )
            )
        seen: set[int] = set()
        for owner, result in (
            ("last_execution_result", getattr(shell, "last_execution_result", None)),
            ("displayhook.exec_result", getattr(displayhook, "exec_result", None)),
        ):
            if result is None or id(result) in seen:
                continue
            seen.add(id(result))
            error: tuple[str, HolderKind] = (f"{owner}.{{key}} (the last cell's error)", "exception")
            sites.append(
                Site(
                    result,
                    label=f"{owner}.{{key}} (what IPython keeps of the last cell)",
                    kind="output",
                    remove=set_none,
                    command=f"{_SHELL}.{owner}.{{key}} = None",
                    expr=f"{_SHELL}.{owner}.{{key}}",
                    keys=_RESULT_KEYS,
                    unit=True,
                    special={
                        "error_in_exec": (error[0].format(key="error_in_exec"), "exception"),
                        "error_before_exec": (error[0].format(key="error_before_exec"), "exception"),
                    },
                )
            )
        return sites

    @staticmethod
    def _errors(shell: Any) -> list[Site]:
        handler = getattr(shell, "InteractiveTB", None)
        if handler is None:
            return []
        return [
            Site(
                handler,
                remove=set_none,
                command=f"{_SHELL}.InteractiveTB.{{key}} = None",
                expr=f"{_SHELL}.InteractiveTB.{{key}}",
                keys=_TRACEBACK_KEYS,
                unit=True,
                special={
                    "tb": ("InteractiveTB.tb (the traceback IPython keeps for %debug)", "exception"),
                    "pdb": ("InteractiveTB.pdb (the debugger %debug left behind)", "debugger"),
                },
            )
        ]


_IN_USE = "the cell running now uses this name; its memory comes back once the cell lets go of it"


def names_in_use(user_ns: dict[str, Any]) -> set[str]:
    """The notebook names that code running now reads or writes (a cell, and functions it calls).

    Force called from inside a cell (a cleanup in a training loop) must not
    delete ``net`` or ``opt`` under the loop's feet: the next line would fail.
    Only frames whose globals are the notebook's namespace count; nbmodels' own
    and the libraries' frames are not the user's code.
    """
    used: set[str] = set()
    tops = list(sys._current_frames().values())
    try:
        for top in tops:
            frame: Any = top
            while frame is not None:
                if frame.f_globals is user_ns:
                    used |= _names_of(frame.f_code)
                frame = frame.f_back
    finally:
        del tops, top, frame  # a frame kept in a local makes a cycle that keeps every caller alive
    return used


def _names_of(code: Any) -> set[str]:
    """Global and local names a code object and the functions and classes defined in it use."""
    names = set(code.co_names) | set(code.co_varnames)
    for const in code.co_consts:
        if type(const) is type(code):
            names |= _names_of(const)
    return names


_DISPATCHERS = {
    "_click_handlers": "on_click",
    "_submission_callbacks": "on_submit",
    "_msg_callbacks": "on_msg",
    "_display_callbacks": "on_displayed",
}


def _widget_callbacks(user_ns: dict[str, Any]) -> list[Site]:
    """Every callback list of every live widget, named after the widget's variable where it has one.

    The entry to remove is the callback, what ``button.on_click(f, remove=True)``
    and ``widget.unobserve(f)`` do: the widget itself stays. The command is
    offered only when both the widget and the callback have notebook names;
    otherwise the report says it in words and force does it.
    """
    module = sys.modules.get("ipywidgets.widgets.widget")
    if module is None:
        return []
    instances = getattr(module, "_instances", None)
    dispatcher_class = getattr(module, "CallbackDispatcher", None)
    if not isinstance(instances, dict) or dispatcher_class is None or not instances:
        return []
    names = {id(v): k for k, v in list(user_ns.items()) if not k.startswith("_") and k.isidentifier()}
    sites: list[Site] = []
    for widget in list(instances.values()):
        sites += _callbacks_of(widget, names.get(id(widget)), dispatcher_class)
    return sites


def _callbacks_of(widget: Any, variable: str | None, dispatcher_class: type) -> list[Site]:
    """One widget's callback lists and observers.

    Types are tested on ``type(value)``: ``isinstance`` on a dead ``weakref.proxy``
    (tqdm's notebook bar keeps one to its widget) raises ``ReferenceError``, which
    once made the whole IPython finder fail, so ``Out``, ``_`` and
    ``user_ns_hidden`` went unsearched and force freed nothing.
    """
    sites: list[Site] = []
    who = _escape(variable or f"a {type(widget).__name__} widget with no variable")
    try:
        attributes = list(object.__getattribute__(widget, "__dict__").items())
    except Exception:
        return sites
    for attribute, value in attributes:
        if issubclass(type(value), dispatcher_class):
            method = _DISPATCHERS.get(attribute, attribute)
            sites.append(
                Site(
                    value.callbacks,
                    label=f"the {method} callback #{{key}} of {who}",
                    kind="callback",
                    remove=remove_item,
                    command=f"{variable}.{method}({{value}}, remove=True)" if variable else "",
                    expr="",
                    unit=True,
                )
            )
    notifiers = dict(attributes).get("_trait_notifiers")
    for trait, by_type in list(notifiers.items()) if type(notifiers) is dict else ():
        for handlers in list(by_type.values()) if type(by_type) is dict else ():
            if type(handlers) is list:
                trait_text = _escape(repr(trait))
                sites.append(
                    Site(
                        handlers,
                        label=f"the observer #{{key}} of {who}.{_escape(str(trait))}",
                        kind="callback",
                        remove=remove_item,
                        command=f"{variable}.unobserve({{value}}, names={trait_text})" if variable else "",
                        expr="",
                        unit=True,
                    )
                )
    return sites


def register(shell: Any, manager: ModelManager | None = None) -> Callable[[], None]:
    """Teach the manager IPython's holders (``%load_ext nbmodels`` calls this); returns the undo."""
    return (manager if manager is not None else get_manager()).add_holder_finder(IPythonHolders(shell))


__all__ = ["IPythonHolders", "register"]
