"""``NBModels``: the extension's settings, for ``%config``, ``ipython_config.py`` and ``NBMODELS_*``.

Precedence, lowest first: the built-in default, the ``NBMODELS_*`` environment
variable (read when the extension loads), ``c.NBModels.<trait>`` in an IPython
profile, and ``%config NBModels.<trait> = value`` in a running session. A bad
environment value never stops a kernel from starting: ``%load_ext`` shows a
warning for it once (:meth:`NBModels.problems`); a bad boolean or number is
ignored, and a bad default device or dtype is kept, so the load it spoils says
where it came from (:meth:`NBModels.origin`). A bad value in an IPython profile
(``c.NBModels.spare_workers = 100``) is refused by the same checks: one warning
names it and the extension loads with the value it would have without it
(:func:`settings_for`).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

from traitlets import Bool, Dict, Float, Int, TraitError, Unicode, Union, default, validate
from traitlets.config import Config, Configurable

from nbmodels.core.devices import dtype_name, parse_device_name
from nbmodels.core.isolation import check_ray_address
from nbmodels.core.policy.budget import check_count, parse_budgets
from nbmodels.core.policy.sizes import parse_duration
from nbmodels.errors import InvalidArgumentError

log = logging.getLogger("nbmodels")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})

# trait name -> environment variable: the table docs/configuration.md documents (tests/docs checks it).
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
    "max_memory": "NBMODELS_MAX_MEMORY",
    "max_loaded_models": "NBMODELS_MAX_LOADED_MODELS",
    "keep_alive": "NBMODELS_KEEP_ALIVE",
    "evict": "NBMODELS_EVICT",
}

# The settings of the memory policy, handed to the manager (see nbmodels.ipython.policy).
POLICY_TRAITS = ("max_memory", "max_loaded_models", "keep_alive", "evict")
EVICT_MODES = ("unload", "offload")


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


def check_spare_workers(value: Any) -> int:
    """A whole number of spare workers from 0 to 8 (each is a started interpreter with torch imported)."""
    low, high = SPARE_WORKERS_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidArgumentError(f"spare_workers must be a whole number from {low} to {high}, not {value!r}")
    return value


def check_shutdown_log(value: Any) -> str:
    """A shutdown log whose file can be appended to ('' for none); the problem in one line otherwise."""
    from nbmodels.ipython.shutdown import log_path_problem

    if not isinstance(value, str):
        raise InvalidArgumentError(f"shutdown_log must be a path, not {type(value).__name__}")
    problem = log_path_problem(value)
    if problem:
        raise InvalidArgumentError(problem)
    return value


def _read_count(raw: str, fallback: int) -> tuple[int, str]:
    low, high = SPARE_WORKERS_RANGE
    try:
        return check_spare_workers(int(raw.strip() or fallback)), ""
    except (ValueError, InvalidArgumentError):
        return fallback, f"is not a whole number from {low} to {high}; using {fallback}"


def _read_checked(check: Any, what: str, using: str) -> Any:
    """A reader for a policy setting: the text when ``check`` accepts it, else the fallback and why."""

    def read(raw: str, fallback: Any) -> tuple[Any, str]:
        text = raw.strip()
        try:
            check(text)
        except InvalidArgumentError as exc:
            return fallback, f"is not {what} ({exc}); using {using}"
        return text, ""

    return read


def _read_model_count(raw: str, fallback: int) -> tuple[int, str]:
    text = raw.strip()
    if not text:
        return fallback, ""
    try:
        return check_count(int(text)), ""
    except (ValueError, InvalidArgumentError):
        return fallback, f"is not a whole number of models (0: no limit); using {fallback}"


def check_evict(value: Any) -> str:
    if value not in EVICT_MODES:
        raise InvalidArgumentError(f"evict must be 'unload' or 'offload', not {value!r}")
    return str(value)


_READERS: dict[str, Any] = {
    "default_device": _read_placement(parse_device_name, "--device"),
    "default_dtype": _read_placement(dtype_name, "--dtype"),
    "verbose": _read_bool,
    "shutdown_hook": _read_bool,
    "shutdown_log": _read_path,
    "shutdown_timeout": _read_timeout,
    "handle_sigterm": _read_bool,
    "spare_workers": _read_count,
    "ray_address": _read_checked(check_ray_address, "a Ray address ('auto', 'ray://host:port', 'host:port')", "''"),
    "max_memory": _read_checked(parse_budgets, "a budget such as 'cpu=8GiB,cuda:0=0.8'", "no budget"),
    "max_loaded_models": _read_model_count,
    "keep_alive": _read_checked(parse_duration, "a duration such as '30m' or -1", "-1 (forever)"),
    "evict": _read_checked(check_evict, "'unload' or 'offload'", "'unload'"),
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
    def _check_spare_workers(self, proposal: dict[str, Any]) -> Any:
        """Refused in one line, as the environment's value is: 100 would start 100 interpreters."""
        return _checked(check_spare_workers, proposal["value"])

    @validate("ray_address")
    def _check_ray_address(self, proposal: dict[str, Any]) -> Any:
        return _checked(check_ray_address, proposal["value"])

    @validate("shutdown_log")
    def _check_shutdown_log(self, proposal: dict[str, Any]) -> Any:
        """The check the environment's value gets; that one is kept and warned about at load (it cannot be refused)."""
        value = proposal["value"]
        if isinstance(value, str) and value == os.environ.get(ENVIRONMENT["shutdown_log"], "").strip():
            return value
        return _checked(check_shutdown_log, value)

    max_memory = Union(
        [Unicode(), Dict()],
        default_value="",
        help="Memory budget per device for the loaded models: 'cpu=8GiB,cuda:0=0.8' or {'cpu': '8GiB', 'cuda:0': 0.8} "
        "(bytes, sizes with GB = 10**9 and GiB = 2**30, or fractions of the device). A load that would exceed it "
        "unloads the least recently used unpinned models there first. '' for none. Env: NBMODELS_MAX_MEMORY.",
    ).tag(config=True)

    max_loaded_models = Int(
        0,
        help="How many models may be loaded at once (0: no limit); one more evicts the least recently used. "
        "Env: NBMODELS_MAX_LOADED_MODELS.",
    ).tag(config=True)

    keep_alive = Union(
        [Float(), Unicode()],
        default_value="-1",
        help="How long a model stays loaded while idle when %load_model gives no --keep-alive: seconds, '30m', "
        "'1h'; 0 unloads it when the cell that used it ends; -1 keeps it (the default). Env: NBMODELS_KEEP_ALIVE.",
    ).tag(config=True)

    evict = Unicode(
        "unload",
        help="What eviction does to a model on a GPU: 'unload' it, or 'offload' it to the CPU when the CPU's budget "
        "allows. Env: NBMODELS_EVICT.",
    ).tag(config=True)

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

    @default("max_memory")
    def _default_max_memory(self) -> str:
        return str(_env("max_memory", ""))

    @default("max_loaded_models")
    def _default_max_loaded_models(self) -> int:
        return int(_env("max_loaded_models", 0))

    @default("keep_alive")
    def _default_keep_alive(self) -> str:
        return str(_env("keep_alive", "-1"))

    @default("evict")
    def _default_evict(self) -> str:
        return str(_env("evict", "unload"))

    @validate("max_memory")
    def _check_max_memory(self, proposal: dict[str, Any]) -> Any:
        return _checked(parse_budgets, proposal["value"])

    @validate("max_loaded_models")
    def _check_max_loaded_models(self, proposal: dict[str, Any]) -> Any:
        return _checked(check_count, proposal["value"])

    @validate("keep_alive")
    def _check_keep_alive(self, proposal: dict[str, Any]) -> Any:
        return _checked(parse_duration, proposal["value"])

    @validate("evict")
    def _check_evict(self, proposal: dict[str, Any]) -> Any:
        return _checked(check_evict, proposal["value"])

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

    refused: list[str]  # profile values left out by settings_for(), one line each

    def problems(self) -> list[str]:
        """One line for each profile value refused and each ``NBMODELS_*`` value that is unusable and not
        overridden by the profile or %config."""
        section = self.config.get(type(self).__name__, {})
        found = list(getattr(self, "refused", []))
        for trait in ENVIRONMENT:
            _, problem = read_environment(trait, self.traits()[trait].default_value)
            if problem and trait not in section:
                found.append(problem)
        return found

    def policy(self) -> dict[str, Any]:
        """The memory policy for the manager: ``max_memory``, ``max_loaded_models``, ``keep_alive``, ``evict``."""
        return {
            "max_memory": parse_budgets(self.max_memory),
            "max_loaded_models": check_count(self.max_loaded_models),
            "keep_alive": parse_duration(self.keep_alive),
            "evict": check_evict(self.evict),
        }

    def load_defaults(self) -> dict[str, str]:
        """``device``/``dtype`` keywords to pass to a load when the user gave none."""
        found = {"device": self.default_device.strip(), "dtype": self.default_dtype.strip()}
        return {key: value for key, value in found.items() if value}


def _checked(check: Any, value: Any) -> Any:
    """``value`` when ``check`` accepts it; a TraitError with its message otherwise (``%config`` shows it, one line)."""
    try:
        check(value)
    except InvalidArgumentError as exc:
        raise TraitError(str(exc)) from None
    return value


def settings_for(shell: Any) -> NBModels:
    """The settings from ``shell``'s configuration; an entry the checks refuse is left out, with one warning.

    traitlets raises while it builds the settings, which would stop ``%load_ext`` (and with it the shutdown
    hook) over one bad line of a profile. The shell's own configuration is not changed.
    """
    try:
        return NBModels(parent=shell)
    except TraitError:
        pass
    config = copy.deepcopy(shell.config)
    section = config.NBModels
    refused: dict[str, tuple[Any, str]] = {}
    for name, value in list(section.items()):
        try:
            NBModels(config=Config({"NBModels": {name: value}}))
        except TraitError as exc:
            refused[name] = (value, str(exc))
            del section[name]
    settings = NBModels(config=config)  # %config still reaches it: the extension adds it to shell.configurables
    settings.refused = [
        f"NBModels.{name} = {value!r} in the IPython configuration is refused ({problem}); "
        f"using {getattr(settings, name)!r}"
        for name, (value, problem) in refused.items()
    ]
    return settings


__all__ = ["ENVIRONMENT", "POLICY_TRAITS", "NBModels", "settings_for"]
