"""Reading the sizes and durations a user writes: ``"8GiB"``, ``"512 MB"``, ``0.8``, ``"80%"``, ``"30m"``, ``-1``.

Sizes follow accelerate's ``max_memory`` conventions, so one spelling works in
both: ``GB`` is 10**9 bytes and ``GiB`` 2**30. A number from 0 to 1 (or a
percentage) is a fraction of the device's total memory; a whole number above 1
is bytes. Durations follow ollama's ``keep_alive``: seconds, or a number with
``s``, ``m``, ``h`` or ``d`` (``"1h30m"`` too); a negative value means forever.
Every mistake is an :class:`~nbmodels.errors.InvalidArgumentError` that shows a
spelling that works.
"""

from __future__ import annotations

import math
import re
from typing import Any

from nbmodels.errors import InvalidArgumentError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 2**10,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 2**20,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 2**30,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 2**40,
}
_SIZE = re.compile(r"^([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)$")
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)\s*([a-z]+)")
_SECONDS = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
_FOREVER_WORDS = frozenset({"forever", "never", "inf", "infinite", "none"})

SIZE_HINT = "give bytes (an int), a size such as '8GiB' or '512MB', or a fraction of the device such as 0.8 or '80%'"
MAX_DURATION = 10 * 365.25 * 86400  # 10 years: longer is a typo (1e10), and overflows the timers that wait for it
DURATION_HINT = "give seconds (300), a duration such as '30m', '1h' or '90s', 0 (unload when idle) or -1 (forever)"


def parse_size(value: Any, *, what: str = "size") -> int | float:
    """Bytes (an ``int``) or a fraction of the device's total (a ``float`` in (0, 1]).

    ``8 * 2**30``, ``"8GiB"``, ``"8 GB"``, ``"1.5g"``: bytes. ``0.8``, ``"0.8"``, ``"80%"``: a fraction.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidArgumentError(f"{what} {value!r} is not a size; {SIZE_HINT}")
    if isinstance(value, int):
        if value <= 0:
            raise InvalidArgumentError(f"{what} {value!r} must be more than 0 bytes; {SIZE_HINT}")
        return value
    if isinstance(value, float):
        return _fraction(value, what)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} {value!r} is a {type(value).__name__}, not a size; {SIZE_HINT}")
    text = value.strip().lower().replace("_", "")
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise InvalidArgumentError(f"{what} {value!r} is not a percentage; {SIZE_HINT}") from None
        return _fraction(percent / 100, what, shown=value)
    match = _SIZE.match(text)
    if match is None or match.group(2) not in _UNITS:
        raise InvalidArgumentError(f"{what} {value!r} is not a size; {SIZE_HINT}")
    number, unit = float(match.group(1)), match.group(2)
    if not unit and ("." in match.group(1) or "e" in match.group(1)) and number <= 1:
        return _fraction(number, what, shown=value)
    if not unit and not number.is_integer():
        raise InvalidArgumentError(f"{what} {value!r} is neither a whole number of bytes nor a fraction; {SIZE_HINT}")
    nbytes = number * _UNITS[unit]
    if not math.isfinite(nbytes) or nbytes < 1:
        raise InvalidArgumentError(f"{what} {value!r} must be at least 1 byte; {SIZE_HINT}")
    return int(nbytes)


def _fraction(value: float, what: str, shown: Any = None) -> float:
    shown = value if shown is None else shown
    if not math.isfinite(value) or not 0 < value <= 1:
        raise InvalidArgumentError(
            f"{what} {shown!r} is not a fraction from 0 to 1 of the device's memory; {SIZE_HINT}"
        )
    return float(value)


def parse_duration(value: Any, *, what: str = "keep_alive") -> float | None:
    """Seconds as a float, or None for forever (a negative value, ``"-1"``, ``"forever"``)."""
    if isinstance(value, bool) or value is None:
        raise InvalidArgumentError(f"{what} {value!r} is not a duration; {DURATION_HINT}")
    if isinstance(value, int | float):
        if math.isnan(value):
            raise InvalidArgumentError(f"{what} {value!r} is not a duration; {DURATION_HINT}")
        return None if value < 0 or math.isinf(value) else _at_most_ten_years(float(value), value, what)
    if not isinstance(value, str):
        raise InvalidArgumentError(f"{what} {value!r} is a {type(value).__name__}, not a duration; {DURATION_HINT}")
    text = value.strip().lower().replace(" ", "")
    if text in _FOREVER_WORDS:
        return None
    if _is_number(text):
        number = float(text)
        if math.isnan(number):
            raise InvalidArgumentError(f"{what} {value!r} is not a duration; {DURATION_HINT}")
        return None if number < 0 or math.isinf(number) else _at_most_ten_years(number, value, what)
    seconds = _sum_parts(text.removeprefix("-"))
    if seconds is None:
        raise InvalidArgumentError(f"{what} {value!r} is not a duration; {DURATION_HINT}")
    return None if text.startswith("-") else _at_most_ten_years(seconds, value, what)


def _at_most_ten_years(seconds: float, value: Any, what: str) -> float:
    if not seconds <= MAX_DURATION:  # NaN too
        raise InvalidArgumentError(
            f"{what} {value!r} is not a duration of at most 10 years; give -1 or 'forever' to keep it loaded forever"
        )
    return seconds


def _sum_parts(text: str) -> float | None:
    """``"1h30m"`` -> 5400.0; None when ``text`` is not made of number-unit parts only."""
    total, position = 0.0, 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position or match.group(2) not in _SECONDS:
            return None
        total += float(match.group(1)) * _SECONDS[match.group(2)]
        position = match.end()
    return total if text and position == len(text) else None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def format_duration(seconds: float | None) -> str:
    """``None`` -> ``"forever"``; ``0`` -> ``"0s"``; 90 -> ``"1m 30s"``; 7200 -> ``"2h"``."""
    if seconds is None:
        return "forever"
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s" if 0.05 <= seconds < 1 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m" + (f" {secs}s" if secs else "")
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h" + (f" {minutes}m" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days}d" + (f" {hours}h" if hours else "")


def format_size(value: int | float) -> str:
    """A budget as the user would write it back: bytes in binary units, a fraction as a percentage."""
    from nbmodels.core.memory import format_bytes

    return f"{value * 100:g}% of the device" if isinstance(value, float) else format_bytes(value)


__all__ = ["format_duration", "format_size", "parse_duration", "parse_size"]
