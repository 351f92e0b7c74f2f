"""``NBModels``: the extension's settings, for ``%config``, ``ipython_config.py`` and ``NBMODELS_*``.

Precedence, lowest first: the built-in default, the ``NBMODELS_*`` environment
variable (read when the extension loads), ``c.NBModels.<trait>`` in an IPython
profile, and ``%config NBModels.<trait> = value`` in a running session. A bad
environment value is logged and ignored, so a typo never stops a kernel from
starting.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from traitlets import Bool, Float, Unicode, default, validate
from traitlets.config import Configurable

log = logging.getLogger("nbmodels")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

# trait name -> environment variable: the table the README documents.
ENVIRONMENT: dict[str, str] = {
    "default_device": "NBMODELS_DEVICE",
    "default_dtype": "NBMODELS_DTYPE",
    "verbose": "NBMODELS_VERBOSE",
    "shutdown_hook": "NBMODELS_SHUTDOWN_HOOK",
    "shutdown_log": "NBMODELS_SHUTDOWN_LOG",
    "shutdown_timeout": "NBMODELS_SHUTDOWN_TIMEOUT",
    "handle_sigterm": "NBMODELS_HANDLE_SIGTERM",
}


def _env_bool(trait: str, fallback: bool) -> bool:
    raw = os.environ.get(ENVIRONMENT[trait])
    if raw is None:
        return fallback
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    log.warning("%s=%r is not a boolean (use 1/0, true/false); using %s", ENVIRONMENT[trait], raw, fallback)
    return fallback


def _env_float(trait: str, fallback: float, low: float, high: float) -> float:
    raw = os.environ.get(ENVIRONMENT[trait])
    if raw is None or not raw.strip():
        return fallback
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not low <= value <= high:
        log.warning("%s=%r is not a number from %g to %g; using %g", ENVIRONMENT[trait], raw, low, high, fallback)
        return fallback
    return value


def _env_text(trait: str) -> str:
    return os.environ.get(ENVIRONMENT[trait], "").strip()


TIMEOUT_RANGE = (0.05, 30.0)


class NBModels(Configurable):
    """Settings of the nbmodels IPython extension (``%config NBModels`` lists them)."""

    default_device = Unicode(
        "",
        help="Device for %load_model when --device is not given ('' leaves the model where its loader put it). "
        "Env: NBMODELS_DEVICE.",
    ).tag(config=True)

    default_dtype = Unicode(
        "",
        help="dtype for %load_model when --dtype is not given ('' keeps the loader's). Env: NBMODELS_DTYPE.",
    ).tag(config=True)

    verbose = Bool(True, help="Print the one-line summary after %load_model. Env: NBMODELS_VERBOSE (1/0).").tag(
        config=True
    )

    shutdown_hook = Bool(
        True,
        help="Release every model when the kernel shuts down, restarts or gets SIGTERM. "
        "Env: NBMODELS_SHUTDOWN_HOOK (1/0).",
    ).tag(config=True)

    shutdown_log = Unicode(
        "",
        help="File to which the shutdown hook appends one JSON line per process ('' for none). "
        "Env: NBMODELS_SHUTDOWN_LOG.",
    ).tag(config=True)

    shutdown_timeout = Float(
        2.0,
        help="Seconds the shutdown hook may spend releasing models before it gives up and lets the process end; "
        "keep it under 2.5 (jupyter_client sends SIGTERM then). Env: NBMODELS_SHUTDOWN_TIMEOUT.",
    ).tag(config=True)

    handle_sigterm = Bool(
        True,
        help="Install a SIGTERM handler that releases models, then lets SIGTERM end the process as before. "
        "Env: NBMODELS_HANDLE_SIGTERM (1/0).",
    ).tag(config=True)

    @default("default_device")
    def _default_device(self) -> str:
        return _env_text("default_device")

    @default("default_dtype")
    def _default_dtype(self) -> str:
        return _env_text("default_dtype")

    @default("verbose")
    def _default_verbose(self) -> bool:
        return _env_bool("verbose", True)

    @default("shutdown_hook")
    def _default_shutdown_hook(self) -> bool:
        return _env_bool("shutdown_hook", True)

    @default("shutdown_log")
    def _default_shutdown_log(self) -> str:
        return _env_text("shutdown_log")

    @default("shutdown_timeout")
    def _default_shutdown_timeout(self) -> float:
        return _env_float("shutdown_timeout", 2.0, *TIMEOUT_RANGE)

    @default("handle_sigterm")
    def _default_handle_sigterm(self) -> bool:
        return _env_bool("handle_sigterm", True)

    @validate("shutdown_timeout")
    def _check_timeout(self, proposal: dict[str, Any]) -> float:
        """Clamp rather than refuse: a bad value in a profile must not stop the extension from loading."""
        value = float(proposal["value"])
        low, high = TIMEOUT_RANGE
        if not low <= value <= high:
            clamped = min(max(value, low), high) if value == value else 2.0
            log.warning("NBModels.shutdown_timeout=%r is outside %g..%g s; using %g", value, low, high, clamped)
            return clamped
        return value

    def load_defaults(self) -> dict[str, str]:
        """``device``/``dtype`` keywords to pass to a load when the user gave none."""
        found = {"device": self.default_device.strip(), "dtype": self.default_dtype.strip()}
        return {key: value for key, value in found.items() if value}


__all__ = ["ENVIRONMENT", "NBModels"]
