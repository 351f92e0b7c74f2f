"""Tab completion of model names after ``%load_model``, ``%unload_model``, ``%model_info`` and the policy magics.

Uses IPython's matcher API v2 (``context_matcher``): the matcher sees the line
up to the cursor and, when the cursor is on a magic's first argument, offers
names and suppresses the other matchers (files, Python names) there.
``%load_model`` offers registered and loaded names; the others loaded names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from IPython.core.completer import CompletionContext, SimpleCompletion, SimpleMatcherResult, context_matcher

from nbmodels.core import ModelManager, get_manager

IDENTIFIER = "nbmodels.model_names"

# The magic, optionally after an assignment (``m = %load_model``), then the first argument being typed.
_FIRST_ARGUMENT = re.compile(
    r"(?:^|[=;]\s*)%?(load_model|unload_model|model_info|model_pin|model_unpin|model_offload|model_to)\s+(\S*)$"
)


def candidate_names(manager: ModelManager, magic: str) -> list[str]:
    loaded = [info.name for info in manager.list()]
    if magic != "load_model":
        return loaded
    return list(dict.fromkeys([*loaded, *manager.registered()]))


def make_matcher(manager: Callable[[], ModelManager] = get_manager) -> Callable[[CompletionContext], Any]:
    """A v2 matcher bound to ``manager``; append it to ``shell.Completer.custom_matchers``."""

    def complete_model_names(context: CompletionContext) -> SimpleMatcherResult:
        found = _FIRST_ARGUMENT.search(context.text_until_cursor.lstrip())
        if found is None:
            return {"completions": []}
        magic, prefix = found.group(1), found.group(2)
        names = sorted(n for n in candidate_names(manager(), magic) if n.startswith(prefix))
        token = context.token
        if token.endswith(prefix):
            # The token covers the whole argument (and maybe more): replace just the argument.
            texts, fragment = names, prefix
        elif prefix.endswith(token):
            # The splitter cut the argument at a delimiter (':' in 'demo:x'): complete past the token.
            cut = len(prefix) - len(token)
            texts, fragment = [n[cut:] for n in names], token
        else:
            return {"completions": []}
        return {
            "completions": [SimpleCompletion(text, type="model") for text in texts],
            "matched_fragment": fragment,
            "suppress": bool(texts),
        }

    matcher: Callable[[CompletionContext], Any] = context_matcher(identifier=IDENTIFIER)(complete_model_names)
    return matcher


def install(shell: Any, manager: Callable[[], ModelManager] = get_manager) -> Callable[[], None]:
    """Register the matcher with ``shell``'s completer; returns the function that removes it."""
    completer = getattr(shell, "Completer", None)
    if completer is None:
        return lambda: None
    matcher = make_matcher(manager)
    completer.custom_matchers.append(matcher)

    def undo() -> None:
        if matcher in completer.custom_matchers:
            completer.custom_matchers.remove(matcher)

    return undo


__all__ = ["IDENTIFIER", "candidate_names", "install", "make_matcher"]
