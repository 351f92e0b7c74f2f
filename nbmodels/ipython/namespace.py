"""IPython's hidden holders, named for the leak hunter, and how force removes them.

IPython keeps results and errors in places a user never assigned: the output
history (``Out[7]``, ``_7``, ``_``, ``__``, ``___``, each also copied into
``user_ns_hidden``, and the display hook's own ``_``/``__``/``___``), the
last cell's result, the last exception (``sys.last_*``, ``InteractiveTB.tb``)
and the debugger ``%debug`` leaves behind (``InteractiveTB.pdb``). Widget
callbacks hold what their closures captured. :class:`IPythonHolders` names
these places as sites for the core search (``nbmodels.core.refs``); force
then removes exactly the entries that lead to a released model.

This is ``InteractiveShell.del_var``'s idea (delete by identity from every
namespace, ``Out``, the last execution result and the display hook) with its
gaps closed: entries that hold the model inside a container, the hidden
``user_ns_hidden['_']`` that even ``%reset -f out`` leaves, tracebacks,
``%debug`` and widget callbacks.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import Any

from nbmodels.core.manager import ModelManager, get_manager
from nbmodels.core.refs import HolderKind, Site, remove_item, remove_key, set_none

_OUTPUT = re.compile(r"_\d+|_{1,3}")
_RESULT_KEYS = frozenset({"result", "error_in_exec", "error_before_exec"})
_DISPLAYHOOK_KEYS = frozenset({"_", "__", "___"})
_TRACEBACK_KEYS = frozenset({"tb", "pdb"})


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


class IPythonHolders:
    """A holder finder for one shell: its namespaces, output history, last error and widget callbacks.

    Called by the manager on each holder search (only when a released model
    survived); returns fresh sites every time, so it sees the shell as it is now.
    """

    magics = True  # the shell has the nbmodels magics: reports suggest %unload_model X --force

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def __call__(self) -> list[Site]:
        shell = self.shell
        sites = self._namespaces(shell)
        sites += self._results(shell)
        sites += self._errors(shell)
        sites += _widget_callbacks(shell.user_ns)
        return sites

    @staticmethod
    def _namespaces(shell: Any) -> list[Site]:
        user_ns: dict[str, Any] = shell.user_ns
        hidden: dict[str, Any] = shell.user_ns_hidden
        outputs: dict[str, tuple[str, HolderKind]] = {}
        for key in list(user_ns):
            if _OUTPUT.fullmatch(key) and key in hidden and hidden[key] is user_ns[key]:
                outputs[key] = (key, "output")
        sites = [
            Site(user_ns, remove=remove_key, action="del {key}", special=outputs),
            Site(
                hidden,
                label="{key} (IPython's hidden copy in user_ns_hidden)",
                kind="variable",
                remove=remove_key,
                action="del user_ns_hidden[{key!r}]",
                special={
                    k: (f"{k} (IPython's hidden copy in user_ns_hidden)", "output")
                    for k in hidden
                    if _OUTPUT.fullmatch(k)
                },
            ),
        ]
        history = getattr(shell, "history_manager", None)
        out = getattr(history, "output_hist", None)
        if out is None:
            out = user_ns.get("_oh")
        if isinstance(out, dict):
            sites.append(Site(out, label="Out[{key}]", kind="output", remove=remove_key, action="del Out[{key}]"))
        for module in list(getattr(shell, "_main_mod_cache", {}).values()):
            namespace = getattr(module, "__dict__", None)
            if isinstance(namespace, dict) and namespace is not user_ns:
                where = _escape(str(namespace.get("__file__", "a %run script")))
                sites.append(
                    Site(
                        namespace,
                        label="{key} (a variable of %run " + where + ")",
                        remove=remove_key,
                        action="del {key} (in the namespace of %run " + where + ")",
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
                    action="get_ipython().displayhook.{key} = None",
                    keys=_DISPLAYHOOK_KEYS,
                )
            )
        seen: set[int] = set()
        for result in (getattr(shell, "last_execution_result", None), getattr(displayhook, "exec_result", None)):
            if result is None or id(result) in seen:
                continue
            seen.add(id(result))
            sites.append(
                Site(
                    result,
                    label="last_execution_result.{key} (what IPython keeps of the last cell)",
                    kind="output",
                    remove=set_none,
                    action="last_execution_result.{key} = None",
                    keys=_RESULT_KEYS,
                    special={
                        "error_in_exec": ("last_execution_result.error_in_exec (the last cell's error)", "exception"),
                        "error_before_exec": (
                            "last_execution_result.error_before_exec (the last cell's error)",
                            "exception",
                        ),
                    },
                )
            )
        return sites

    @staticmethod
    def _errors(shell: Any) -> list[Site]:
        sites = []
        handler = getattr(shell, "InteractiveTB", None)
        if handler is not None:
            sites.append(
                Site(
                    handler,
                    remove=set_none,
                    action="get_ipython().InteractiveTB.{key} = None",
                    keys=_TRACEBACK_KEYS,
                    special={
                        "tb": ("InteractiveTB.tb (the traceback IPython keeps for %debug)", "exception"),
                        "pdb": ("InteractiveTB.pdb (the debugger %debug left behind)", "debugger"),
                    },
                )
            )
        return sites


_DISPATCHERS = {
    "_click_handlers": "on_click",
    "_submission_callbacks": "on_submit",
    "_msg_callbacks": "on_msg",
    "_display_callbacks": "on_displayed",
}


def _widget_callbacks(user_ns: dict[str, Any]) -> list[Site]:
    """Every callback list of every live widget, named after the widget's variable where it has one.

    The entry to remove is the callback, what ``button.on_click(f, remove=True)``
    and ``widget.unobserve(f)`` do: the widget itself stays, and what holds the
    widget (its variable, the widget registry, the comm) no longer matters.
    """
    module = sys.modules.get("ipywidgets.widgets.widget")
    if module is None:
        return []
    instances = getattr(module, "_instances", None)
    dispatcher_class = getattr(module, "CallbackDispatcher", None)
    if not isinstance(instances, dict) or dispatcher_class is None or not instances:
        return []
    names = {id(v): k for k, v in list(user_ns.items()) if not k.startswith("_")}
    sites: list[Site] = []
    for widget in list(instances.values()):
        variable = names.get(id(widget))
        who = _escape(variable or f"a {type(widget).__name__} widget")
        registry = f"ipywidgets.widgets.widget._instances[{_escape(repr(getattr(widget, 'model_id', '?')))}]"
        call = _escape(variable) if variable else registry
        for attribute, value in list(vars(widget).items()):
            if isinstance(value, dispatcher_class):
                method = _DISPATCHERS.get(attribute, attribute)
                sites.append(
                    Site(
                        value.callbacks,
                        label=f"{method} callback {{key}} of {who}",
                        kind="callback",
                        remove=remove_item,
                        action=f"{call}.{method}({{value}}, remove=True)",
                    )
                )
        notifiers = getattr(widget, "_trait_notifiers", None)
        for trait, by_type in list(notifiers.items()) if isinstance(notifiers, dict) else ():
            for handlers in list(by_type.values()) if isinstance(by_type, dict) else ():
                if isinstance(handlers, list):
                    trait_text = _escape(repr(trait))
                    sites.append(
                        Site(
                            handlers,
                            label=f"observer {{key}} of {who}.{_escape(str(trait))}",
                            kind="callback",
                            remove=remove_item,
                            action=f"{call}.unobserve({{value}}, names={trait_text})",
                        )
                    )
    return sites


def register(shell: Any, manager: ModelManager | None = None) -> Callable[[], None]:
    """Teach the manager IPython's holders (``%load_ext nbmodels`` calls this); returns the undo."""
    return (manager if manager is not None else get_manager()).add_holder_finder(IPythonHolders(shell))


__all__ = ["IPythonHolders", "register"]
