"""What a panel's background load prints or displays goes into the panel, not into a random cell.

A load started from the panel runs in a thread. In ipykernel, a thread that
never set a parent message writes with whatever message the kernel handled
last: the button click (whose output the front end has nowhere to put: it is
dropped) or whichever cell the user runs meanwhile (the output lands there).
So Hugging Face's own progress bars, warnings and prints from a loader were
swallowed or misplaced. Here the thread gets a parent message of its own, and
ipykernel's message hooks hand everything sent under that parent to the
panel's output area instead:

* displays (``tqdm.auto`` bars are widgets shown with ``display``) pass
  through the display publisher's hooks, which run on the publishing thread;
* prints and warnings pass through the stream's hooks, which run on the
  kernel's IO thread, where one hook (installed once) dispatches by parent.

Outside ipykernel (a terminal, plain Python) nothing is changed: output goes
where it always went.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Protocol

MessageHook = Any  # ipykernel's hooks take and return a message dict (or None to swallow it)


class Sink(Protocol):
    """Where captured output goes (the panel's output area)."""

    def stream(self, name: str, text: str) -> None: ...

    def display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None: ...

    def clear(self) -> None: ...


_sinks: dict[str, Sink] = {}  # parent msg_id -> sink, while a capture runs
_sinks_lock = threading.Lock()
_stream_hooks: dict[int, Any] = {}  # id(stream) -> the stream, once its IO-thread hook is installed


def _parent_id(msg: dict[str, Any]) -> str | None:
    parent = msg.get("parent_header") or {}
    msg_id = parent.get("msg_id") if isinstance(parent, dict) else None
    return msg_id if isinstance(msg_id, str) else None


def _dispatch_stream(msg: dict[str, Any]) -> dict[str, Any] | None:
    """The IO thread's stream hook: a captured parent's text goes to its sink, the rest is sent as usual."""
    msg_id = _parent_id(msg)
    if msg_id is None or not msg_id.startswith("nbmodels-"):
        return msg
    with _sinks_lock:
        sink = _sinks.get(msg_id)
    if sink is None:
        return msg
    content = msg.get("content") or {}
    sink.stream(str(content.get("name", "stdout")), str(content.get("text", "")))
    return None


def _install_stream_hooks() -> None:
    """Put the dispatching hook on sys.stdout and sys.stderr, in the IO thread where they flush (once)."""
    for stream in (sys.stdout, sys.stderr):
        register = getattr(stream, "register_hook", None)
        pub_thread = getattr(stream, "pub_thread", None)
        if register is None or pub_thread is None or id(stream) in _stream_hooks:
            continue
        _stream_hooks[id(stream)] = stream
        done = threading.Event()

        def install(register: Any = register, done: threading.Event = done) -> None:
            register(_dispatch_stream)
            done.set()

        pub_thread.schedule(install)
        done.wait(2.0)


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    return get_ipython()


@contextlib.contextmanager
def output_into(sink: Sink) -> Iterator[bool]:
    """While the block runs, this thread's prints and displays go to ``sink``; yields whether they do."""
    shell = _shell()
    display_pub = getattr(shell, "display_pub", None)
    set_parent = getattr(shell, "set_thread_parent", None)
    reset_parent = getattr(shell, "reset_thread_parent", None)
    if display_pub is None or not hasattr(display_pub, "register_hook") or set_parent is None or reset_parent is None:
        yield False
        return
    msg_id = f"nbmodels-{uuid.uuid4().hex}"
    parent = {
        "header": {
            "msg_id": msg_id,
            "msg_type": "nbmodels_background_load",
            "session": "",
            "username": "",
            "version": "5.3",
        },
        "metadata": {},
        "content": {},
    }

    def on_display(msg: dict[str, Any]) -> dict[str, Any] | None:
        if _parent_id(msg) != msg_id:
            return msg
        content = msg.get("content") or {}
        if msg.get("msg_type") == "display_data":
            sink.display(dict(content.get("data") or {}), dict(content.get("metadata") or {}))
        elif msg.get("msg_type") == "clear_output":
            sink.clear()
        return None  # update_display_data has no display id to update here: dropped, never misplaced

    with _sinks_lock:
        _sinks[msg_id] = sink
    _install_stream_hooks()
    tokens = set_parent(parent)
    display_pub.register_hook(on_display)
    try:
        yield True
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # waits for the IO thread, so the last lines still reach the sink
        display_pub.unregister_hook(on_display)
        reset_parent(tokens)
        with _sinks_lock:
            _sinks.pop(msg_id, None)


class OutputSink:
    """A :class:`Sink` writing into an ``ipywidgets.Output`` from any thread (consecutive text merged)."""

    def __init__(self, output: Any) -> None:
        self._output = output
        self._lock = threading.Lock()

    def stream(self, name: str, text: str) -> None:
        with self._lock:
            outputs = list(self._output.outputs)
            if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1].get("name") == name:
                outputs[-1] = {**outputs[-1], "text": outputs[-1]["text"] + text}
            else:
                outputs.append({"output_type": "stream", "name": name, "text": text})
            self._output.outputs = tuple(outputs)

    def display(self, data: dict[str, Any], metadata: dict[str, Any]) -> None:
        with self._lock:
            entry = {"output_type": "display_data", "data": data, "metadata": metadata}
            self._output.outputs = (*self._output.outputs, entry)

    def clear(self) -> None:
        with self._lock:
            self._output.outputs = ()
