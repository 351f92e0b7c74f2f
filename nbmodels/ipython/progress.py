"""A progress bar for a ``%load_model`` that takes more than a second, in the notebook only.

A loader is opaque (nbmodels cannot know how far it got), so the bar says
what it can: which model, and for how long it has been loading. It appears
after ``delay`` seconds (fast loads show nothing), as a ``tqdm.auto`` bar
(a widget in a notebook), and is removed when the load ends: the magic's own
summary line says the rest.

The load runs on the cell's thread as before and its output is left alone, so
the loader's own bars (Hugging Face's "Loading checkpoint shards") show as
they always do; ours is a separate widget beside them, drawn from a helper
thread under the cell's parent message. In a terminal there is no bar: a text
bar drawn from another thread would garble the loader's own text bars.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

DELAY_S = 1.0
TICK_S = 0.5


def _notebook_bar_class() -> Any:
    """``tqdm.auto.tqdm`` when it is the notebook (widget) bar and a kernel can show it; else None."""
    try:
        from IPython import get_ipython
    except ImportError:
        return None
    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:
        return None
    try:
        from tqdm.auto import tqdm
        from tqdm.notebook import tqdm as notebook_tqdm
    except ImportError:
        return None
    return tqdm if issubclass(tqdm, notebook_tqdm) else None


@contextlib.contextmanager
def load_progress(name: str, *, delay: float = DELAY_S) -> Iterator[None]:
    """Show a "loading NAME: elapsed" bar in the running cell while the block takes longer than ``delay``."""
    bar_class = _notebook_bar_class()
    if bar_class is None:
        yield
        return
    from IPython import get_ipython

    shell = get_ipython()
    parent = shell.get_parent() if hasattr(shell, "get_parent") else None
    done = threading.Event()

    def draw() -> None:
        if done.wait(delay):
            return
        tokens = None
        if parent and hasattr(shell, "set_thread_parent"):
            tokens = shell.set_thread_parent(parent)  # the bar belongs to the cell that runs the load
        try:
            bar = bar_class(total=None, desc=f"loading {name}", bar_format="{desc}: {elapsed}", leave=False)
            try:
                while not done.wait(TICK_S):
                    bar.refresh()
            finally:
                bar.close()
        except Exception:  # a bar must never break a load
            pass
        finally:
            if tokens is not None:
                shell.reset_thread_parent(tokens)

    thread = threading.Thread(target=draw, name="nbmodels-load-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(5.0)


def with_progress(name: str, call: Callable[[], T]) -> Callable[[], T]:
    """``call`` wrapped in :func:`load_progress`: the one-line hook ``%load_model`` uses."""

    def run() -> T:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        with load_progress(name):
            return call()

    return run
