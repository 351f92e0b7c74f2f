"""Reading the load form's options box (``size_mb=64, dtype=float16``) into keyword arguments.

Values are Python literals; a bare word is taken as a string, so
``auto_class=AutoModel`` works without quotes. Nothing is evaluated.
"""

from __future__ import annotations

import ast
from typing import Any

from nbmodels.errors import InvalidArgumentError

_HINT = "write options as keyword=value pairs separated by commas, e.g. size_mb=64, dtype=float16"


def parse_options(text: str) -> dict[str, Any]:
    """``"size_mb=64, layers=3"`` -> ``{"size_mb": 64, "layers": 3}``; InvalidArgumentError otherwise."""
    text = text.strip()
    if not text:
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError:
        raise InvalidArgumentError(f"cannot read options {text!r}; {_HINT}") from None
    if not isinstance(call, ast.Call) or call.args or any(k.arg is None for k in call.keywords):
        raise InvalidArgumentError(f"cannot read options {text!r}; {_HINT}")
    options: dict[str, Any] = {}
    for keyword in call.keywords:
        assert keyword.arg is not None
        if keyword.arg in options:
            raise InvalidArgumentError(f"option {keyword.arg!r} is given twice; {_HINT}")
        value = keyword.value
        if isinstance(value, ast.Name):
            options[keyword.arg] = value.id
            continue
        try:
            options[keyword.arg] = ast.literal_eval(value)
        except ValueError:
            raise InvalidArgumentError(
                f"option {keyword.arg!r} must be a literal (number, string, True/False, list); {_HINT}"
            ) from None
    return options
