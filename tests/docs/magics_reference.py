"""The reference part of docs/magics.md, rendered from the magics' own parsers.

``python -m tests.docs.magics_reference`` prints it; ``test_magics_reference`` checks that the page holds
exactly this text, so a flag added, renamed or re-worded in ``magics.py`` fails the suite until the page
says it too.
"""

from __future__ import annotations

import argparse

from nbmodels.ipython.magics import NBModelsMagics
from nbmodels.ipython.memory import MemoryMagics

CLASSES = (NBModelsMagics, MemoryMagics)  # every Magics class %load_ext nbmodels registers

# In the order the page documents them; an alias points at the magic it repeats.
MAGICS = (
    "load_model",
    "list_models",
    "models",
    "model_info",
    "unload_model",
    "model_cleanup",
    "model_pin",
    "model_unpin",
    "model_offload",
    "model_to",
    "model_panel",
    "memory",
)


def _parser(name: str) -> argparse.ArgumentParser:
    (magic,) = [getattr(cls, name) for cls in CLASSES if name in cls.magics["line"]]
    parser: argparse.ArgumentParser = getattr(magic, "parser")  # noqa: B009
    return parser


def _usage(name: str) -> str:
    usage = _parser(name).format_usage().replace("::", "").strip()
    return " ".join(usage.split())


def _arguments(name: str) -> list[tuple[str, str]]:
    rows = []
    for action in _parser(name)._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            flag = action.option_strings[0]
            if action.metavar:
                flag += f" {action.metavar}"
            elif action.choices:
                flag += " {" + ",".join(action.choices) + "}"
            elif action.nargs != 0:
                flag += f" {action.dest.upper()}"
        else:
            flag = action.dest.upper() if action.nargs is None else f"[{action.dest.upper()}]"
        rows.append((flag, " ".join((action.help or "").replace("%%", "%").split())))
    return rows


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(name: str) -> str:
    """One magic's section: heading, what it does (its docstring's first line), usage, and every argument."""
    doc = " ".join((_parser(name).description or "").strip().split("\n\n")[0].split())
    lines = [f"### %{name}", "", doc, "", "```text", _usage(name), "```", ""]
    rows = _arguments(name)
    if rows:
        lines += ["| argument | meaning |", "|---|---|"]
        lines += [f"| `{flag}` | {_cell(help_)} |" for flag, help_ in rows]
        lines.append("")
    return "\n".join(lines)


def render_all() -> str:
    return "\n".join(render(name) for name in MAGICS)


if __name__ == "__main__":
    print(render_all())
