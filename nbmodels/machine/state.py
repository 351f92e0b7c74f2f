"""What a kernel publishes about itself: the state file's format, written atomically, read strictly.

One small JSON file per kernel process. A reader never sees half a file: the
writer writes a temporary file in the same directory and renames it over the
old one. The file carries a format name and version; a reader refuses any other
version with a one-line error rather than guessing at fields it does not know.
The file holds names and numbers only, never anything that could run code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbmodels.core.reports import ModelInfo
from nbmodels.machine.errors import StateFileError
from nbmodels.machine.files import read_private_file, write_private_file

FORMAT = "nbmodels-kernel-state"
VERSION = 1
MAX_STATE_BYTES = 1 << 20  # a kernel with thousands of models writes far less
MAX_DEPTH = 8  # the format nests 4 deep: state -> models -> model -> bytes_by_device
MAX_NUMBER_CHARS = 40  # a byte count or a timestamp has at most 20 digits; 401 is a forgery
MAX_INT = 1 << 63
MAX_TEXT = 4096  # a name, a path: longer is not a file nbmodels wrote
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


@dataclass(frozen=True)
class ModelState:
    """One loaded model as another process sees it: no model, only its name and what it costs."""

    name: str
    source: str
    class_name: str
    bytes_by_device: dict[str, int] = field(hash=False)
    parameters: int | None
    loaded_at: float
    last_used: float
    pinned: bool = False

    @classmethod
    def of(cls, info: ModelInfo) -> ModelState:
        return cls(
            name=info.name,
            source=info.source,
            class_name=info.class_name,
            bytes_by_device=dict(info.bytes_by_device),
            parameters=info.parameters,
            loaded_at=info.loaded_at,
            last_used=info.last_used,
            pinned=info.pinned,
        )

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_device.values())


@dataclass(frozen=True)
class KernelState:
    """A kernel's published state.

    ``process_started`` is the process's start time, so a reader can tell the
    kernel from a later process that got the same pid. ``busy`` and ``activity``
    say whether a cell runs and since when the kernel is busy or idle.
    ``in_use`` lists models released (by an unload or a free request) that
    something in the kernel still holds, such as a running cell.
    """

    pid: int
    process_started: float
    kernel_id: str | None
    connection_file: str | None
    notebook: str | None
    socket: str | None
    nbmodels_version: str
    updated: float
    busy: bool
    activity: float
    models: tuple[ModelState, ...] = ()
    loading: tuple[str, ...] = ()
    in_use: tuple[str, ...] = ()

    def to_json(self) -> str:
        data = {"format": FORMAT, "version": VERSION, **asdict(self)}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, where: str = "state file") -> KernelState:
        """Parse and check a state file's text; a StateFileError names what is wrong in one line."""
        depth = _depth(text)
        if depth > MAX_DEPTH:
            raise StateFileError(f"{where}: nested {depth} deep; not a state file nbmodels wrote")
        try:
            data = json.loads(text, parse_int=_bounded_int, parse_float=_bounded_float, parse_constant=_no_constant)
        except json.JSONDecodeError as exc:
            raise StateFileError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno}); truncated?") from None
        except (ValueError, RecursionError) as exc:
            raise StateFileError(f"{where}: {exc}; not a state file nbmodels wrote") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateFileError(f"{where}: not an nbmodels kernel state file")
        version = data.get("version")
        if version != VERSION:
            raise StateFileError(
                f"{where}: state format version {version!r}, this nbmodels reads version {VERSION}; "
                "the kernel runs another nbmodels version (use the same one in both places)"
            )
        try:
            models = tuple(_model(item) for item in _list(data["models"]))
            return cls(
                pid=_int(data["pid"]),
                process_started=_float(data["process_started"]),
                kernel_id=_optional_str(data["kernel_id"]),
                connection_file=_optional_str(data["connection_file"]),
                notebook=_optional_str(data["notebook"]),
                socket=_optional_str(data["socket"]),
                nbmodels_version=_str(data["nbmodels_version"]),
                updated=_float(data["updated"]),
                busy=bool(data["busy"]),
                activity=_float(data["activity"]),
                models=models,
                loading=tuple(_str(name) for name in _list(data["loading"])),
                in_use=tuple(_str(name) for name in _list(data["in_use"])),
            )
        except KeyError as exc:
            raise StateFileError(f"{where}: the field {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            raise StateFileError(f"{where}: a field has the wrong type ({_short(exc)})") from None


def _depth(text: str) -> int:
    """How deep the JSON in ``text`` nests, counted without recursion (strings skipped)."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _bounded_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} digits")
    return int(text)


def _bounded_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} characters")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a number a state file holds")


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 120 else text[:119] + "…"


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    if not 0 <= value < MAX_INT:
        raise ValueError("an integer out of range")
    return value


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError("a number out of range")
    return number


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_TEXT:
        raise ValueError(f"a text of {len(value)} characters")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _optional_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _model(item: Mapping[str, Any]) -> ModelState:
    if not isinstance(item, dict):
        raise TypeError(f"a model must be an object, got {type(item).__name__}")
    by_device = item["bytes_by_device"]
    if not isinstance(by_device, dict):
        raise TypeError(f"bytes_by_device must be an object, got {by_device!r}")
    parameters = item["parameters"]
    return ModelState(
        name=_str(item["name"]),
        source=_str(item["source"]),
        class_name=_str(item["class_name"]),
        bytes_by_device={_str(device): _int(n) for device, n in by_device.items()},
        parameters=None if parameters is None else _int(parameters),
        loaded_at=_float(item["loaded_at"]),
        last_used=_float(item["last_used"]),
        pinned=bool(item.get("pinned", False)),
    )


def read_state(path: Path) -> KernelState:
    """Read and check one state file: this user's regular file, bounded in size, depth and numbers.

    StateFileError (one line) when it is not one nbmodels wrote, or is corrupt;
    FileNotFoundError when it is not there. Never blocks and never follows a symlink.
    """
    raw = read_private_file(path, MAX_STATE_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileError(f"{path}: not valid JSON (not UTF-8 text)") from None
    return KernelState.from_json(text, where=str(path))


def write_atomically(path: Path, text: str, *, durable: bool = False) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new one, never a mix.

    Owner-only (0600), in a folder that is this user's alone, through a fresh
    random temporary name nobody can plant a symlink at (see
    :func:`~nbmodels.machine.files.write_private_file`). No fsync by default: the
    file describes a running process and is worthless after a crash.
    """
    write_private_file(path, text.encode("utf-8"), durable=durable)


def model_states(infos: Iterable[ModelInfo]) -> tuple[ModelState, ...]:
    return tuple(ModelState.of(info) for info in infos)


__all__ = ["FORMAT", "VERSION", "KernelState", "ModelState", "model_states", "read_state", "write_atomically"]
