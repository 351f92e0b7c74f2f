"""Reading the load form's options box (``size_mb=64, dtype=float16``) into keyword arguments.

Values are Python literals; a bare word is taken as a string, so
``auto_class=AutoModel`` works without quotes. Nothing is evaluated.
"""

from __future__ import annotations

import ast
import math
from typing import Any

from nbmodels.errors import InvalidArgumentError

_HINT = "write options as keyword=value pairs separated by commas, e.g. size_mb=64, dtype=float16"


def parse_options(text: str) -> dict[str, Any]:
    """``"size_mb=64, layers=3"`` -> ``{"size_mb": 64, "layers": 3}``; InvalidArgumentError otherwise."""
    text = text.strip()
    if not text:
        return {}
    code = f"f({text})"
    try:
        call = ast.parse(code, mode="eval").body
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
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise InvalidArgumentError(
                f"option {keyword.arg!r} must be a literal (number, string, True/False, list); {_HINT}"
            ) from None
        number = options[keyword.arg]
        if isinstance(number, float) and not math.isfinite(number):
            written = ast.get_source_segment(code, value) or str(number)
            raise InvalidArgumentError(f"option {keyword.arg}={written} is not a finite number")
    return options


# Keywords the form has a field for, or that only the Python API can give.
_FORM_FIELDS = {
    "name": "the name box",
    "source": "the source box",
    "device": "the device menu",
}
_API_ONLY = {"on_release": "a function, which only the Python API can pass"}


def check_form_options(options: dict[str, Any]) -> None:
    """Refuse options that clash with the form's own fields, naming the field to use instead."""
    for key in options:
        if key in _FORM_FIELDS:
            raise InvalidArgumentError(
                f"{key} is chosen with {_FORM_FIELDS[key]}, not in the options; remove {key}= from the options"
            )
        if key in _API_ONLY:
            raise InvalidArgumentError(f"option {key}= takes {_API_ONLY[key]}; remove it from the options")
