"""Whose memory a storage is: torch's allocator's, borrowed from another object, or mapped from a file.

Freeing a storage gives memory back only when torch's allocator owns it. A
storage made by ``torch.from_numpy(W)`` or ``torch.frombuffer(buf)`` is a view
of memory the array or buffer owns: it comes back when that object dies, not
the tensor. Weights mapped from a file (transformers and safetensors map
``model.safetensors``; ``torch.load(mmap=True)``) are page cache: the OS drops
those pages whenever it needs them, and unmapping them frees nothing.

Two facts tell them apart. The storage's deleter (the function its memory is
freed with) is the default CPU allocator's for everything torch allocates itself,
including what ``torch.load`` reads from a checkpoint; anything else was handed
to torch by someone else. Of those, a data pointer that lies in a region of
``/proc/self/maps`` naming a file is mapped from that file. Torch has no public
API for the deleter, so it is read from the storage's C++ object at an offset
found (and checked) at run time on storages whose origin is known; where that
fails every storage counts as owned, as before this module.
"""

from __future__ import annotations

import bisect
import ctypes
import functools
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("nbmodels")

Kind = Literal["owned", "borrowed", "mapped"]
OWNED: Kind = "owned"
BORROWED: Kind = "borrowed"
MAPPED: Kind = "mapped"

_WORDS = 8  # how much of the storage's C++ object the layout probe reads, in 8-byte words


@dataclass(frozen=True)
class Origin:
    """Whose memory a storage is; ``path`` names the file of a mapped one."""

    kind: Kind
    path: str = ""

    def words(self) -> str:
        """What the memory is, for a report: ``mapped from model.safetensors``."""
        if self.kind == MAPPED:
            return f"mapped from {os.path.basename(self.path) or self.path}"
        if self.kind == BORROWED:
            return "borrowed from a numpy array or buffer"
        return "owned by torch's allocator"

    def why(self) -> str:
        """Why freeing it gives nothing back now, in words."""
        if self.kind == MAPPED:
            return "the OS drops those pages when it needs them"
        if self.kind == BORROWED:
            return "it comes back when that array or buffer is freed"
        return ""


OWNED_ORIGIN = Origin(OWNED)
BORROWED_ORIGIN = Origin(BORROWED)


# --- /proc/self/maps: a function of text ------------------------------------------------------------


@dataclass(frozen=True)
class Region:
    """One mapping of ``/proc/PID/maps`` that names a path: ``[start, end)`` and the path."""

    start: int
    end: int
    path: str

    @property
    def from_file(self) -> bool:
        """A regular file's pages: not shared memory (``/dev/shm``, memfd) nor a file deleted since."""
        return self.path.startswith("/") and not self.path.startswith("/dev/") and not self.path.endswith(" (deleted)")


def parse_maps(text: str) -> tuple[Region, ...]:
    """The regions of a ``/proc/PID/maps`` text that name a path (``[heap]`` and anonymous ones left out)."""
    regions = []
    for line in text.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or not fields[5].startswith("/"):
            continue
        low, _, high = fields[0].partition("-")
        try:
            regions.append(Region(int(low, 16), int(high, 16), fields[5].rstrip("\n")))
        except ValueError:
            continue
    regions.sort(key=lambda region: region.start)
    return tuple(regions)


def region_at(regions: Sequence[Region], address: int) -> Region | None:
    """The region (from :func:`parse_maps`, sorted) holding ``address``, or None."""
    index = bisect.bisect_right([region.start for region in regions], address) - 1
    if index >= 0 and regions[index].start <= address < regions[index].end:
        return regions[index]
    return None


def read_maps() -> tuple[Region, ...]:
    """This process's regions that name a path; empty where ``/proc`` does not exist."""
    try:
        with open(f"/proc/{os.getpid()}/maps", encoding="utf-8", errors="replace") as file:
            return parse_maps(file.read())
    except OSError:
        return ()


# --- the deleter of a storage ------------------------------------------------------------------------


_word = ctypes.c_uint64.from_address


def _words(storage: Any) -> tuple[int, ...]:
    return tuple((ctypes.c_uint64 * _WORDS).from_address(int(storage._cdata)))


@functools.cache
def _layout() -> tuple[int, int] | None:
    """(word index of the deleter in a StorageImpl, the default CPU allocator's deleter); None when not found.

    Found on a storage torch allocated (its context pointer is its data pointer,
    beside the deleter), then checked on one over a bytearray (same data pointer
    word, another deleter) and on a second allocated one (the same deleter).
    """
    import torch

    own = torch.empty(64, dtype=torch.uint8).untyped_storage()
    other = torch.empty(4096, dtype=torch.uint8).untyped_storage()
    buffer = bytearray(64)
    borrowed = torch.frombuffer(buffer, dtype=torch.uint8).untyped_storage()
    words, pointer = _words(own), own.data_ptr()
    for index in range(1, _WORDS - 2):
        if words[index] != pointer:
            continue
        for deleter in (index + 1, index + 2):
            context = index + 1 if deleter == index + 2 else index + 2
            if words[context] != pointer or not words[deleter]:
                continue
            theirs, again = _words(borrowed), _words(other)
            if (
                theirs[index] == borrowed.data_ptr()
                and theirs[deleter] not in (0, words[deleter])
                and again[index] == other.data_ptr()
                and again[deleter] == words[deleter]
            ):
                return deleter, words[deleter]
    log.debug("the deleter of a torch storage could not be located; every storage counts as owned")
    return None


def allocator_owned(storage: Any) -> bool | None:
    """True when torch's default CPU allocator frees this CPU storage's memory; None when that cannot be read."""
    layout = _layout()
    if layout is None:
        return None
    index, default = layout
    return _word(int(storage._cdata) + 8 * index).value == default


def origins(storages: Iterable[Any]) -> list[Origin]:
    """The origin of each storage; ``/proc/self/maps`` is read once, and only when a storage is not torch's."""
    regions: tuple[Region, ...] | None = None
    found = []
    layout = _layout()
    if layout is None:
        return [OWNED_ORIGIN for _ in storages]
    index, default = layout
    offset = 8 * index
    for storage in storages:
        origin = OWNED_ORIGIN
        if _word(int(storage._cdata) + offset).value != default and storage.device.type == "cpu" and storage.nbytes():
            if regions is None:
                regions = read_maps()
            region = region_at(regions, int(storage.data_ptr()))
            if region is None:
                origin = BORROWED_ORIGIN
            elif region.from_file:
                origin = Origin(MAPPED, region.path)
            # else: shared memory (share_memory_, a worker's tensor): gone with its last user, as owned memory is
        found.append(origin)
    return found


def origin(storage: Any) -> Origin:
    """The origin of one storage (see :func:`origins`)."""
    return origins([storage])[0]


def not_owned_lines(by_origin: dict[Origin, int]) -> list[str]:
    """``63.3 MiB mapped from model.safetensors: the OS drops those pages when it needs them``, largest first."""
    from nbmodels.core.memory import format_bytes

    rows = sorted(((n, o) for o, n in by_origin.items() if o.kind != OWNED and n), key=lambda row: -row[0])
    return [f"{format_bytes(n)} {o.words()}: {o.why()}" for n, o in rows]


__all__ = [
    "BORROWED",
    "MAPPED",
    "OWNED",
    "Origin",
    "Region",
    "allocator_owned",
    "not_owned_lines",
    "origin",
    "origins",
    "parse_maps",
    "read_maps",
    "region_at",
]
