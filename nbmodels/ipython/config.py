"""``NBModels``: the extension's settings, for ``%config``, ``ipython_config.py`` and ``NBMODELS_*``.

Precedence, lowest first: the built-in default, the ``NBMODELS_*`` environment
variable (read when the extension loads), ``c.NBModels.<trait>`` in an IPython
profile, and ``%config NBModels.<trait> = value`` in a running session. A bad
environment value never stops a kernel from starting: ``%load_ext`` shows a
warning for it once (:meth:`NBModels.problems`); a bad boolean or number is
ignored, and a bad default device or dtype is kept, so the load it spoils says
where it came from (:meth:`NBModels.origin`).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from traitlets import Bool, Float, Int, Unicode, default, validate
from traitlets.config import Configurable

from nbmodels.core.devices import dtype_name, parse_device_name
from nbmodels.errors import InvalidArgumentError

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
    "spare_workers": "NBMODELS_SPARE_WORKERS",
    "ray_address": "NBMODELS_RAY_ADDRESS",
}


TIMEOUT_RANGE = (0.05, 30.0)


def _read_bool(raw: str, fallback: bool) -> tuple[bool, str]:
    text = raw.strip().lower()
    if text in _TRUE:
        return True, ""
    if text in _FALSE:
        return False, ""
    return fallback, f"is not a boolean (use 1/0, true/false); using {fallback}"


def _read_timeout(raw: str, fallback: float) -> tuple[float, str]:
    if not raw.strip():
        return fallback, ""
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    low, high = TIMEOUT_RANGE
    if not low <= value <= high:
        return fallback, f"is not a number from {low:g} to {high:g}; using {fallback:g}"
    return value, ""


def _read_placement(check: Any, flag: str) -> Any:
    """A reader for a default device or dtype: a bad value is kept, and the loads it spoils say where it came from."""

    def read(raw: str, fallback: str) -> tuple[str, str]:
        text = raw.strip()
        if text:
            try:
                check(text)
            except InvalidArgumentError as exc:
                return text, f"is not usable ({exc}); %load_model of a new name fails until it is fixed or {flag} given"
        return text, ""

    return read


def _read_path(raw: str, fallback: str) -> tuple[str, str]:
    return raw.strip(), ""


SPARE_WORKERS_RANGE = (0, 8)


def _read_count(raw: str, fallback: int) -> tuple[int, str]:
    low, high = SPARE_WORKERS_RANGE
    try:
        value = int(raw.strip() or fallback)
    except ValueError:
        value = -1
    if not low <= value <= high:
        return fallback, f"is not a whole number from {low} to {high}; using {fallback}"
    return value, ""


_READERS: dict[str, Any] = {
    "default_device": _read_placement(parse_device_name, "--device"),
    "default_dtype": _read_placement(dtype_name, "--dtype"),
    "verbose": _read_bool,
    "shutdown_hook": _read_bool,
    "shutdown_log": _read_path,
    "shutdown_timeout": _read_timeout,
    "handle_sigterm": _read_bool,
    "spare_workers": _read_count,
    "ray_address": _read_path,
}


def read_environment(trait: str, fallback: Any) -> tuple[Any, str]:
    """``(value, problem)`` from the trait's ``NBMODELS_*`` variable; ``fallback`` when it is unset or unusable."""
    raw = os.environ.get(ENVIRONMENT[trait])
    if raw is None:
        return fallback, ""
    value, problem = _READERS[trait](raw, fallback)
    return value, (f"{ENVIRONMENT[trait]}={raw!r} {problem}" if problem else "")


def _env(trait: str, fallback: Any) -> Any:
    value, problem = read_environment(trait, fallback)
    if problem:
        log.warning("%s", problem)
    return value


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

    spare_workers = Int(
        0,
        help="Worker processes kept started (torch imported, nothing loaded) so that %load_model --isolate "
        "skips the start-up of a new one (0 to 8). Env: NBMODELS_SPARE_WORKERS.",
    ).tag(config=True)

    ray_address = Unicode(
        "",
        help="The Ray cluster for %load_model --runner ray ('' uses RAY_ADDRESS, else starts a local Ray). "
        "Env: NBMODELS_RAY_ADDRESS.",
    ).tag(config=True)

    @default("spare_workers")
    def _default_spare_workers(self) -> int:
        return int(_env("spare_workers", 0))

    @default("ray_address")
    def _default_ray_address(self) -> str:
        value: str = _env("ray_address", "")
        return value

    @validate("spare_workers")
    def _check_spare_workers(self, proposal: dict[str, Any]) -> int:
        """Clamp rather than refuse, as for the timeout: a typo in a profile must not stop the extension."""
        value = int(proposal["value"])
        low, high = SPARE_WORKERS_RANGE
        if not low <= value <= high:
            clamped = min(max(value, low), high)
            log.warning("NBModels.spare_workers=%r is outside %d..%d; using %d", value, low, high, clamped)
            return clamped
        return value

    @default("default_device")
    def _default_device(self) -> str:
        value: str = _env("default_device", "")
        return value

    @default("default_dtype")
    def _default_dtype(self) -> str:
        value: str = _env("default_dtype", "")
        return value

    @default("verbose")
    def _default_verbose(self) -> bool:
        return bool(_env("verbose", True))

    @default("shutdown_hook")
    def _default_shutdown_hook(self) -> bool:
        return bool(_env("shutdown_hook", True))

    @default("shutdown_log")
    def _default_shutdown_log(self) -> str:
        value: str = _env("shutdown_log", "")
        return value

    @default("shutdown_timeout")
    def _default_shutdown_timeout(self) -> float:
        return float(_env("shutdown_timeout", 2.0))

    @default("handle_sigterm")
    def _default_handle_sigterm(self) -> bool:
        return bool(_env("handle_sigterm", True))

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

    def origin(self, trait: str) -> str:
        """Where the value of ``trait`` came from, in the words a user would fix it with."""
        section = self.config.get(type(self).__name__, {})
        if trait not in section and os.environ.get(ENVIRONMENT[trait], "").strip():
            return f"{ENVIRONMENT[trait]} (NBModels.{trait})"
        return f"NBModels.{trait}"

    def problems(self) -> list[str]:
        """One line for each ``NBMODELS_*`` value that is unusable and not overridden by the profile or %config."""
        section = self.config.get(type(self).__name__, {})
        found = []
        for trait in ENVIRONMENT:
            _, problem = read_environment(trait, self.traits()[trait].default_value)
            if problem and trait not in section:
                found.append(problem)
        return found

    def load_defaults(self) -> dict[str, str]:
        """``device``/``dtype`` keywords to pass to a load when the user gave none."""
        found = {"device": self.default_device.strip(), "dtype": self.default_dtype.strip()}
        return {key: value for key, value in found.items() if value}


__all__ = ["ENVIRONMENT", "NBModels"]
