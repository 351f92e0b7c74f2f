"""The nbmodels magics: they parse a line and call the manager, nothing more.

Each magic is parsed with ``IPython.core.magic_arguments`` (so ``%magic?``
shows its usage), and every user mistake (a missing or unknown argument, a bad
device, dtype or ``--kw``, an unknown model) raises a one-line ``UsageError``
before the manager changes.

Actions (``%load_model``, ``%unload_model``, ``%model_cleanup``) show their
result and also return it; a bare magic on a cell's last line is not shown a
second time by the displayhook. Queries (``%list_models``, ``%model_info``)
return data, shown by the displayhook like ``%who_ls``.

To add a magic (the widget panel's ``%model_panel``, say), add a method with
``@line_magic`` to ``NBModelsMagics``: the extension registers and removes
every magic of the class.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import keyword
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from IPython.core import magic as _magic
from IPython.core import magic_arguments as _magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class

from nbmodels.core import ModelManager, ReleaseReport, get_manager
from nbmodels.errors import (
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    SourceError,
)
from nbmodels.ipython.config import NBModels
from nbmodels.ipython.handle import ModelHandle
from nbmodels.ipython.progress import with_progress
from nbmodels.ipython.views import EchoGuard, ModelDetails, ModelTable, display

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

# IPython's magic decorators are loosely typed; these typed views keep mypy strict on the magics.
_untyped: Any = _magic_arguments
_untyped_magic: Any = _magic


def line_magic(func: F) -> F:
    marked: F = _untyped_magic.line_magic(func)
    return marked


def named_line_magic(name: str) -> Callable[[F], F]:
    decorator: Callable[[F], F] = _untyped_magic.line_magic(name)
    return decorator


def magic_arguments() -> Callable[[F], F]:
    decorator: Callable[[F], F] = _untyped.magic_arguments()
    return decorator


def argument(*args: Any, **kwargs: Any) -> Callable[[F], F]:
    decorator: Callable[[F], F] = _untyped.argument(*args, **kwargs)
    return decorator


def parse_argstring(func: Callable[..., Any], line: str) -> argparse.Namespace:
    parsed: argparse.Namespace = _untyped.parse_argstring(func, line)
    return parsed


# Keywords the manager takes itself: they have flags of their own.
_RESERVED_KW = {
    "device": "--device",
    "dtype": "--dtype",
    "trust": "--trust",
    "pin": "--pin",
    "reload": "--reload",
    "on_release": "the Python API",
}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _usage(magic: str, message: str) -> NoReturn:
    raise UsageError(f"%{magic}: {message}")


def parse_line(func: Callable[..., Any], magic: str, line: str) -> argparse.Namespace:
    """Parse ``line`` for ``func``; any parse failure is a one-line UsageError naming the magic."""
    message = None
    try:
        return parse_argstring(func, line)
    except UsageError as exc:
        message = f"{one_line(exc)} (see %{magic}?)"
    except SystemExit:  # argparse exits on some errors; a magic must never end the kernel
        message = f"cannot parse {line.strip()!r} (see %{magic}?)"
    except ValueError as exc:  # shlex: unbalanced quotes
        message = f"cannot split {line.strip()!r}: {exc}"
    _usage(magic, message)


def literal(text: str) -> Any:
    """A Python literal when ``text`` is one (``64``, ``True``, ``'a b'``, ``[1, 2]``), else the text."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_keywords(groups: list[list[str]], magic: str = "load_model") -> dict[str, Any]:
    """``--kw a=1 b=x --kw c=[1,2]`` -> ``{'a': 1, 'b': 'x', 'c': [1, 2]}``."""
    keywords: dict[str, Any] = {}
    for item in (item for group in groups for item in group):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or keyword.iskeyword(key):
            _usage(magic, f"--kw {item!r} is not KEY=VALUE with KEY a Python name (e.g. --kw hidden=512)")
        if key in _RESERVED_KW:
            _usage(magic, f"--kw {key}=... is not a model keyword; use {_RESERVED_KW[key]}")
        if key in keywords:
            _usage(magic, f"--kw {key} is given twice")
        keywords[key] = literal(value)
    return keywords


def _bad_keyword(error: ModelLoadError) -> bool:
    """A loader that rejected the keywords it was called with: the user's mistake, not the loader's."""
    cause = error.__cause__
    return isinstance(cause, TypeError) and "argument" in str(cause)


@magics_class
class NBModelsMagics(Magics):
    """``%load_model``, ``%list_models`` (``%models``), ``%model_info``, ``%unload_model``, ``%model_cleanup``,
    ``%model_panel``."""

    def __init__(
        self,
        shell: Any = None,
        settings: NBModels | None = None,
        manager: Callable[[], ModelManager] = get_manager,
    ) -> None:
        super().__init__(shell)
        self.settings = settings if settings is not None else NBModels()
        self.echo = EchoGuard(shell)
        self._manager = manager

    @property
    def manager(self) -> ModelManager:
        return self._manager()

    # --- helpers ----------------------------------------------------------------

    def _call(self, magic: str, call: Callable[[], T], *, name: str | None = None) -> T:
        """Run a manager call; its errors that are the user's mistake become one-line UsageErrors.

        The UsageError is raised outside the ``except`` block so that it does not
        chain (and keep alive) the original exception and its frames.
        """
        try:
            return call()
        except ModelNotFoundError as exc:
            message = self._not_found(magic, name or exc.name)
        except ModelConflictError as exc:
            message = f"{one_line(exc)} (with the magic: --reload, or %unload_model {name} first)"
        except (InvalidArgumentError, SourceError) as exc:
            message = one_line(exc)
        except ModelLoadError as exc:
            if not _bad_keyword(exc):
                raise
            message = f"{one_line(exc)} (check the --kw names)"
        _usage(magic, message)

    def _not_found(self, magic: str, name: str) -> str:
        manager = self.manager
        loaded = [info.name for info in manager.list()]
        if magic == "load_model":
            registered = manager.registered()
            hint = f" (registered: {', '.join(registered)})" if registered else ""
            return f"no model or registration named {name!r}{hint}; give a source, e.g. %load_model {name} demo:mlp"
        return f"no model named {name!r} is loaded ({', '.join(loaded) if loaded else 'nothing is loaded'})"

    def _force(self, magic: str, method: Callable[..., Any], force: bool) -> dict[str, bool]:
        """``{'force': True}`` when asked for, and only then (older managers have no ``force``)."""
        if not force:
            return {}
        if "force" not in inspect.signature(method).parameters:
            _usage(magic, "--force needs the leak hunter, which this version of nbmodels lacks")
        return {"force": True}

    def _show_report(self, report: ReleaseReport) -> None:
        display(report)
        self.echo.shown(report)

    def _execution_count(self) -> int | None:
        return getattr(self.shell, "execution_count", None)

    # --- magics -----------------------------------------------------------------

    @line_magic
    @magic_arguments()
    @argument("name", help="the model's name (tab completes registered and loaded names)")
    @argument(
        "source",
        nargs="?",
        default=None,
        help="where to load it from: demo:mlp, demo:transformer, package.module:factory, a file or folder; "
        "leave out for a registered or loaded name",
    )
    @argument(
        "--device", default=None, help="cpu, cuda, cuda:N, mps or auto (a new name's default: NBModels.default_device)"
    )
    @argument("--dtype", default=None, help="float32, float16/fp16/half, bfloat16/bf16, float64")
    @argument("--pin", action="store_true", help="keep it loaded through eviction")
    @argument("--trust", action="store_true", help="allow pickled checkpoints (runs code from the file)")
    @argument("--reload", action="store_true", help="load again even if the name is loaded")
    @argument("--as", dest="var", metavar="VAR", default=None, help="also bind the handle to this variable")
    @argument(
        "--kw",
        nargs="+",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword arguments for the loader; VALUE is a Python literal when it parses as one, else a string",
    )
    def load_model(self, line: str) -> ModelHandle:
        """Load a model by name (or return the loaded one) and print one line about it.

        Returns a ModelHandle, not the model: it behaves like the model (calls,
        attributes, ``.to()``, ``isinstance``) but holds it through a weak
        reference, so neither ``m = %load_model x`` nor ``Out``/``_`` keeps the
        model alive after ``%unload_model x``. ``nbmodels.ipython.unwrap(m)``
        gives the model itself.

        Examples::

            %load_model clf demo:mlp --kw hidden=512
            m = %load_model lm demo:transformer --device cpu --dtype bf16
            %load_model clf --as model
        """
        args = parse_line(self.load_model, "load_model", line)
        keywords = parse_keywords(args.kw)
        if args.var is not None and (not args.var.isidentifier() or keyword.iskeyword(args.var)):
            _usage("load_model", f"--as {args.var!r} is not a Python variable name")
        manager = self.manager
        already = args.name in manager and not args.reload
        placement = {"device": args.device, "dtype": args.dtype}
        if args.name not in manager and args.name not in manager.registered():  # registrations carry their own
            for key, value in self.settings.load_defaults().items():
                placement[key] = placement[key] or value
        model = self._call(
            "load_model",
            with_progress(  # a bar in the notebook while a load takes more than a second
                args.name,
                lambda: manager.load(
                    args.name,
                    args.source,
                    trust=args.trust,
                    pin=args.pin,
                    reload=args.reload,
                    **placement,
                    **keywords,
                ),
            ),
            name=args.name,
        )
        handle = ModelHandle(args.name, model, manager, shown_in=self._execution_count())
        del model
        info = self._call("load_model", lambda: manager.info(args.name), name=args.name)
        if args.var is not None and self.shell is not None:
            self.shell.user_ns[args.var] = handle
        if self.settings.verbose:
            text = info.summary()
            if already:
                text += f" (already loaded, used {info.hits} time{'' if info.hits == 1 else 's'})"
            if args.var is not None:
                text += f" -> {args.var}"
            print(text)
        return handle

    @line_magic
    @magic_arguments()
    def list_models(self, line: str) -> ModelTable:
        """The loaded models with their cost, totals, and each device's memory right now.

        Shown as an HTML table in notebooks and text in terminals; assigned
        (``table = %list_models``) it is data: a list of ModelInfo with
        ``.devices`` (DeviceMemory readings: CPU RSS and system available; per
        CUDA device allocated, reserved, free, total and the context floor).
        """
        parse_line(self.list_models, "list_models", line)
        return ModelTable.current(self.manager.list())

    @named_line_magic("models")
    @magic_arguments()
    def models(self, line: str) -> ModelTable:
        """Alias of %list_models."""
        parse_line(self.models, "models", line)
        return ModelTable.current(self.manager.list())

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    def model_info(self, line: str) -> ModelDetails:
        """Everything nbmodels knows about one loaded model (a ModelInfo, shown one field per line)."""
        args = parse_line(self.model_info, "model_info", line)
        info = self._call("model_info", lambda: self.manager.info(args.name), name=args.name)
        return ModelDetails.of(info)

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    @argument("--force", action="store_true", help="also remove what still holds the model (the leak hunter)")
    def unload_model(self, line: str) -> ReleaseReport:
        """Release one model and show whether its memory really came back (a ReleaseReport).

        A model that something else still holds is listed with its holders.
        """
        args = parse_line(self.unload_model, "unload_model", line)
        manager = self.manager
        force = self._force("unload_model", manager.unload, args.force)
        report = self._call("unload_model", lambda: manager.unload(args.name, **force), name=args.name)
        self._show_report(report)
        return report

    @line_magic
    @magic_arguments()
    @argument("--force", action="store_true", help="also remove what still holds the models (the leak hunter)")
    @argument("--quiet", action="store_true", help="show the report only when something was not freed")
    def model_cleanup(self, line: str) -> ReleaseReport:
        """Release every model and show what came back (a ReleaseReport). Safe to run twice."""
        args = parse_line(self.model_cleanup, "model_cleanup", line)
        manager = self.manager
        force = self._force("model_cleanup", manager.cleanup, args.force)
        report = self._call("model_cleanup", lambda: manager.cleanup(**force))
        if args.quiet and report.ok:
            self.echo.shown(report)
        else:
            self._show_report(report)
        return report

    @line_magic
    @magic_arguments()
    @argument(
        "--refresh",
        type=float,
        default=None,
        metavar="SECONDS",
        help="seconds between live memory readings while shown (default 2; 0: only on changes)",
    )
    def model_panel(self, line: str) -> None:
        """Show the live model panel: memory per device, the loaded models, load, unload and clean-up buttons.

        Running the cell again replaces the panel it showed before (that one is
        closed and stops following the manager).
        """
        args = parse_line(self.model_panel, "model_panel", line)
        from traitlets import TraitError

        from nbmodels.widgets.panel import DEFAULT_REFRESH_S, ModelPanel  # ipywidgets is imported only now

        interval = DEFAULT_REFRESH_S if args.refresh is None else args.refresh
        try:
            panel = ModelPanel(self.manager, refresh_interval=interval)
        except TraitError as exc:  # a bad --refresh
            _usage("model_panel", f"--refresh: {one_line(exc)}")
        display(panel)  # a later run of this cell closes it (see nbmodels.widgets.cells)


__all__ = ["NBModelsMagics", "literal", "parse_keywords", "parse_line"]
