"""Text, rendered once for display: holder paths in the user's words, and commands that run as written.

The graph keeps key objects; only here do they become text. A path reads as
Python where it is Python (``results['run1']['hist'][2]``, ``trainer.model``,
``wrapper.encoder``) and in words where it is not (``sys.last_value →
traceback → local 'y' of evaluate()``). A command is offered only when it
compiles and names real objects: a key whose repr is no literal, a lambda or a
closure variable has no Python name, and then the action says it in words.
"""

from __future__ import annotations

import ast
import math
import sys
import types
from typing import Any

from nbmodels.core.holders.graph import Edge, Graph


def literal(key: Any) -> str | None:
    """``repr(key)`` when it is a Python literal that reads back as the same key, else None."""
    if not _literal_type(key):
        return None
    text = repr(key)
    try:
        back = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    return text if back == key and type(back) is type(key) else None


def _literal_type(key: Any) -> bool:
    if type(key) in (str, int, bool, bytes, type(None)):
        return True
    if type(key) is float:
        return math.isfinite(key)
    return type(key) is tuple and len(key) <= 16 and all(_literal_type(k) for k in key)


def key_text(key: Any) -> str:
    """How a key reads in a path: its literal, or what it is when it has none."""
    text = literal(key)
    if text is not None:
        return text
    return f"<a {type(key).__qualname__} key>"


def is_python(text: str, mode: str = "eval") -> bool:
    try:
        compile(text, "<nbmodels>", mode)
    except (SyntaxError, ValueError):
        return False
    return True


def qualname(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return name if isinstance(name, str) else type(obj).__name__


class Paths:
    """Paths of graph nodes from their site entries, in words and (where possible) as Python."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._memo: dict[int, tuple[str, str | None, str]] = {}

    def root(self, index: int) -> tuple[str, str | None, str]:
        """``(words, python, note)`` of a site entry: ``('Out[4]', 'Out[4]', '')``."""
        root = self.graph.roots[index]
        site = self.graph.sites[root.site]
        words, note = root.label, ""
        if words.endswith(")") and " (" in words:
            words, note = words[: words.rindex(" (")], words[words.rindex(" (") :]
        python = None
        if site.expr:
            try:
                candidate = site.expr.format(key=root.key)
            except (KeyError, IndexError, ValueError):
                candidate = ""
            python = candidate if candidate and is_python(candidate) else None
        return words, python, note

    def of(self, node: int) -> tuple[str, str | None, str]:
        """``(words, python, note)`` of the shortest way from a site entry to ``node``."""
        if node in self._memo:
            return self._memo[node]
        chain: list[Edge] = []
        current = node
        while True:
            edge = self.graph.tree[current]
            if edge is None:
                return (f"a {type(self.graph.objs[node]).__qualname__} object", None, "")
            chain.append(edge)
            if edge.parent < 0:
                break
            current = edge.parent
        words, python, note = self.root(~chain[-1].parent)
        for edge in reversed(chain[:-1]):
            words_step, python_step = self.step(edge)
            words += words_step
            python = python + python_step if python is not None and python_step is not None else None
        result = (words, python, note)
        self._memo[node] = result
        return result

    def root_of(self, node: int) -> int:
        """The index of the site entry the shortest way to ``node`` starts from (-1 when none)."""
        current = node
        for _ in range(len(self.graph.objs) + 1):
            edge = self.graph.tree[current]
            if edge is None:
                return -1
            if edge.parent < 0:
                return ~edge.parent
            current = edge.parent
        return -1

    def through(self, edge: Edge) -> tuple[str, str | None, str]:
        """The path of what ``edge`` points to, reached through ``edge``."""
        if edge.parent < 0:
            return self.root(~edge.parent)
        words, python, note = self.of(edge.parent)
        words_step, python_step = self.step(edge)
        python = python + python_step if python is not None and python_step is not None else None
        return words + words_step, python, note

    def step(self, edge: Edge) -> tuple[str, str | None]:
        """One step as ``(words, python)``; python is None where the step has no Python spelling."""
        parent = self.graph.objs[edge.parent]
        op, key = edge.op, edge.key
        if op == "item":
            if edge.parent >= 0 and id(parent) in self.graph.snapshots:
                return f" → local {key!r} of {self.graph.snapshots[id(parent)]}()", None
            text = literal(key)
            return f"[{key_text(key)}]", (f"[{text}]" if text is not None else None)
        if op in ("index", "arg"):
            prefix = ".args" if op == "arg" else ""
            return f"{prefix}[{key}]", f"{prefix}[{key}]"
        if op in ("field", "attr"):
            python = f".{key}" if isinstance(key, str) and key.isidentifier() else None
            return python or f".{key}", python
        if op == "child":
            python = _module_child(parent, key)
            return python or f".{key}", python
        if op == "kwarg":
            return f" → keyword {key!r} of partial {qualname(getattr(parent, 'func', parent))}", None
        if op == "exc":
            words = {"__traceback__": " → traceback", "__context__": " → the error it was raised during"}
            return words.get(key, " → its cause (raise from)"), f".{key}"
        if op == "tb":
            if key == "f_back":
                caller = getattr(getattr(parent, "f_back", None), "f_code", None)
                return f" → caller {getattr(caller, 'co_name', '?')}()", ".f_back"
            return "", (f".{key}" if key != "f_locals" else None)
        if op == "local":
            owner = parent.f_code.co_name if type(parent) is types.FrameType else qualname(parent)
            return f" → local {key!r} of {owner}()", None
        if op == "closure":
            return f" → closure variable {key!r} of {qualname(parent)}()", None
        if op == "default":
            return f" → default argument {key!r} of {qualname(parent)}()", None
        if op == "self":
            return f" → the object of bound method {qualname(parent.__func__)}", ".__self__"
        if op == "func":
            return f" → function {qualname(parent.__func__ if hasattr(parent, '__func__') else parent)}", ".__func__"
        if op == "cell":
            return "", ".cell_contents"
        if op == "dictkey":
            return " → a key of that dict", None
        if op == "mapping":
            return " → the dict behind it", None
        if op == "cache":
            return f" → the cache of {qualname(parent)}()", None
        if op == "finalizer":
            what = "the function" if key == "func" else f"argument {key!r}"
            return f" → {what} of the finalizer", None
        if op == "member":
            return " → an item of that set", None
        return f" → inside a {key}", None


def _module_child(module: Any, key: Any) -> str | None:
    """How a torch module's child reads: ``seq[1]``, ``blocks['enc']``, ``model.encoder``."""
    torch = sys.modules.get("torch")
    if torch is None or not isinstance(key, str):
        return None
    if isinstance(module, torch.nn.Sequential | torch.nn.ModuleList) and key.isdigit():
        return f"[{key}]"
    if isinstance(module, torch.nn.ModuleDict | torch.nn.ParameterDict):
        return f"[{key!r}]"
    return f".{key}" if key.isidentifier() else None


def summary(obj: Any) -> str:
    """A short description of what a wide cut removes besides the model: ``the tuple (<Sequential>, 0.9)``."""
    kind = type(obj)
    if issubclass(kind, types.FunctionType | types.MethodType):
        return f"the function {qualname(obj)}"
    if issubclass(kind, types.GeneratorType | types.CoroutineType):
        return f"the generator {qualname(obj)}"
    if issubclass(kind, BaseException):
        return f"the {kind.__name__} and its traceback"
    if issubclass(kind, tuple | list | set | frozenset):
        items = list(obj)[:4]
        inner = ", ".join(_short(item) for item in items) + (", ..." if len(obj) > 4 else "")
        brackets = {"tuple": "()", "list": "[]"}.get(kind.__name__, "{}")
        return f"the {kind.__name__} {brackets[0]}{inner}{brackets[1]}"
    return f"a {kind.__qualname__} object and everything else it holds"


def summary_of_value(value: Any) -> str:
    """A user's value in a few words: ``the list ['hand-checked', 3, 'May']``, ``3``, ``a Note object``."""
    if issubclass(type(value), tuple | list | set | frozenset):
        return summary(value)
    short = _short(value)
    return short if not short.startswith("<") else f"a {type(value).__qualname__} object"


def _short(value: Any) -> str:
    """An atom as its repr (cut short), anything else as ``<TypeName>``."""
    if type(value) in (int, float, bool, type(None)) or (type(value) in (str, bytes) and len(value) <= 24):
        return repr(value)
    if type(value) in (str, bytes):
        return repr(value[:21]) + "..."
    return f"<{type(value).__qualname__}>"


__all__ = ["Paths", "is_python", "key_text", "literal", "qualname", "summary"]
