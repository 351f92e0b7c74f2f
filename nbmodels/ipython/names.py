"""Which variable names ``--as`` may bind: never one that Python, IPython or nbmodels itself relies on.

``--as get_ipython`` broke every later magic and ``--as __builtins__`` broke
``print(len([1]))``: binding a handle over a builtin, a keyword, IPython's own
names (``In``, ``Out``, ``_``, ``_i3``, ``exit``...) or a dunder name is refused
in one line, and nothing is bound.
"""

from __future__ import annotations

import builtins
import keyword
import re
from typing import Any

MAX_NAME = 200
_IPYTHON_NAMES = frozenset(
    {"get_ipython", "In", "Out", "_oh", "_ih", "_dh", "exit", "quit", "_", "__", "___", "_i", "_ii", "_iii"}
)
_HISTORY_NAME = re.compile(r"^_i?\d+$")  # _3 (output 3), _i3 (input 3)


def variable_problem(name: str, shell: Any = None) -> str:
    """Why ``name`` may not be bound by ``--as`` ("" when it may)."""
    if len(name) > MAX_NAME:
        return f"--as takes a variable name of at most {MAX_NAME} characters, not {len(name)}"
    if not name.isidentifier() or keyword.iskeyword(name) or keyword.issoftkeyword(name):
        return f"--as {name!r} is not a Python variable name"
    hidden = getattr(shell, "user_ns_hidden", None) or {}
    if name in _IPYTHON_NAMES or _HISTORY_NAME.match(name) or name in hidden:
        return f"--as {name!r} would hide IPython's own {name!r} (its history, output or shell); choose another name"
    if name.startswith("__") and name.endswith("__"):
        return f"--as {name!r}: names with double underscores on both sides belong to Python; choose another name"
    if hasattr(builtins, name):
        return f"--as {name!r} would hide Python's builtin {name!r}; choose another name"
    return ""


__all__ = ["MAX_NAME", "variable_problem"]
