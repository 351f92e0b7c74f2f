"""How hard the property tests search: a short search in ``make test``, the full soak in ``make bench``.

``make test`` must stay within minutes on two cores, and a random search's value grows slowly with its
length, so the suite runs a fifth of the examples each time (hypothesis keeps the failures it found in
its database and replays them first); ``NBMODELS_SOAK=1`` (``make bench``) runs them all.
"""

from __future__ import annotations

import os

SOAK = os.environ.get("NBMODELS_SOAK", "") not in ("", "0")


def examples(full: int) -> int:
    """``full`` examples in a soak, a fifth of them (at least 5) otherwise."""
    return full if SOAK else max(5, full // 5)
