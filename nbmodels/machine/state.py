"""What a kernel publishes about itself: the state file's format, written atomically, read strictly.

One small JSON file per kernel process. A reader never sees half a file: the
writer writes a temporary file in the same directory and renames it over the
old one. The file carries a format name and version; a reader refuses any other
version with a one-line error rather than guessing at fields it does not know.
The file holds names and numbers only, never anything that could run code.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nbmodels.core.reports import ModelInfo
from nbmodels.machine.errors import StateFileError

FORMAT = "nbmodels-kernel-state"
VERSION = 1
MAX_STATE_BYTES = 1 << 20  # a kernel with thousands of models writes far less


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
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StateFileError(f"{where}: not valid JSON ({exc.msg}, line {exc.lineno}); truncated?") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise StateFileError(f"{where}: not an nbmodels kernel state file")
        version = data.get("version")
        if version != VERSION:
            raise StateFileError(
                f"{where}: state format version {version!r}, this nbmodels reads version {VERSION}; "
                "the kernel runs another nbmodels version (use the same one in both places)"
            )
        try:
            models = tuple(_model(item) for item in data["models"])
            return cls(
                pid=_int(data["pid"]),
                process_started=float(data["process_started"]),
                kernel_id=_optional_str(data["kernel_id"]),
                connection_file=_optional_str(data["connection_file"]),
                notebook=_optional_str(data["notebook"]),
                socket=_optional_str(data["socket"]),
                nbmodels_version=str(data["nbmodels_version"]),
                updated=float(data["updated"]),
                busy=bool(data["busy"]),
                activity=float(data["activity"]),
                models=models,
                loading=tuple(str(name) for name in data["loading"]),
                in_use=tuple(str(name) for name in data["in_use"]),
            )
        except KeyError as exc:
            raise StateFileError(f"{where}: the field {exc.args[0]!r} is missing") from None
        except (TypeError, ValueError) as exc:
            raise StateFileError(f"{where}: a field has the wrong type ({exc})") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _optional_str(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected a string or null, got {value!r}")
    return value


def _model(item: Mapping[str, Any]) -> ModelState:
    by_device = item["bytes_by_device"]
    if not isinstance(by_device, dict):
        raise TypeError(f"bytes_by_device must be an object, got {by_device!r}")
    parameters = item["parameters"]
    return ModelState(
        name=str(item["name"]),
        source=str(item["source"]),
        class_name=str(item["class_name"]),
        bytes_by_device={str(device): _int(n) for device, n in by_device.items()},
        parameters=None if parameters is None else _int(parameters),
        loaded_at=float(item["loaded_at"]),
        last_used=float(item["last_used"]),
        pinned=bool(item.get("pinned", False)),
    )


def read_state(path: Path) -> KernelState:
    """Read and check one state file (StateFileError when it is corrupt; OSError when it cannot be read)."""
    with path.open("rb") as handle:
        raw = handle.read(MAX_STATE_BYTES + 1)
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"{path}: larger than {MAX_STATE_BYTES} bytes; not a state file nbmodels wrote")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StateFileError(f"{path}: not valid JSON (not UTF-8 text)") from None
    return KernelState.from_json(text, where=str(path))


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old file or the new one, never a mix.

    Owner-only (0600). No fsync: the file describes a running process and is
    worthless after a crash, so durability is not worth a disk flush per event.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(fd, "wb") as handle:
        handle.write(text.encode("utf-8"))
    os.replace(temporary, path)


def model_states(infos: Iterable[ModelInfo]) -> tuple[ModelState, ...]:
    return tuple(ModelState.of(info) for info in infos)


__all__ = ["FORMAT", "VERSION", "KernelState", "ModelState", "model_states", "read_state", "write_atomically"]
