"""The nbmodels magics: they parse a line and call the manager, nothing more.

Each magic is parsed with ``IPython.core.magic_arguments`` (so ``%magic?``
shows its usage); the line is split as a shell does it (``shlex``, as IPython's
own ``%run`` and ``%cd``), so ``"my model.pt"`` and ``--kw label="a b"`` are one
argument each. Every user mistake (a missing or unknown argument, a bad device,
dtype or ``--kw``, an unknown model, a file or folder that cannot load, a loader
that rejects its keywords) raises a one-line ``UsageError`` naming the model,
the source and the cause; the manager changes nothing it did not have to, and
``%tb`` shows a failed loader's whole traceback.

Actions (``%load_model``, ``%unload_model``, ``%model_cleanup``) show their
result and also return it (``m = %load_model x``); on a cell's last line they
leave nothing for the displayhook (see ``views.EchoGuard``). Queries
(``%list_models``, ``%model_info``) return data, shown by the displayhook like
``%who_ls``.

To add a magic (the widget panel's ``%model_panel``, say), add a method with
``@line_magic`` to ``NBModelsMagics``: the extension registers and removes
every magic of the class.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import keyword
import os
import shlex
import traceback
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, TypeVar

from IPython.core import magic as _magic
from IPython.core import magic_arguments as _magic_arguments
from IPython.core.error import UsageError
from IPython.core.magic import Magics, magics_class

from nbmodels.core import Event, ModelManager, ReleaseReport, get_manager, memory
from nbmodels.core.devices import normalize_device, normalize_dtype
from nbmodels.core.manager import check_name
from nbmodels.core.memory import format_bytes
from nbmodels.core.sources import Source, from_namespace
from nbmodels.errors import (
    InvalidArgumentError,
    ModelConflictError,
    ModelLoadError,
    ModelNotFoundError,
    NbModelsError,
    SourceError,
    UnknownKeywordError,
)
from nbmodels.ipython.config import NBModels
from nbmodels.ipython.handle import ModelHandle
from nbmodels.ipython.names import variable_problem
from nbmodels.ipython.progress import with_progress
from nbmodels.ipython.views import EchoGuard, ModelDetails, ModelTable, display, note_action_result

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


def split_line(line: str) -> list[str]:
    """Split a magic's line as a shell does (quotes group, backslashes escape), as IPython's ``%run`` does.

    IPython's ``parse_argstring`` splits without shell rules and keeps the quotes in
    the words (``"my file.pt"`` stays quoted); on Windows, where a backslash is a
    path separator, quotes only group. A ``# comment`` after the arguments is a
    comment, as in a shell and in Python (IPython hands it to the magic): a ``#``
    inside a word or in quotes is not.
    """
    line = _without_comment(line)
    if os.name == "posix":
        return shlex.split(line, posix=True)
    words = shlex.split(line, posix=False)
    return [w[1:-1] if len(w) >= 2 and w[0] == w[-1] and w[0] in "\"'" else w for w in words]


def _without_comment(line: str) -> str:
    """``line`` up to a ``#`` that starts a word outside quotes (shlex's own comments also cut ``run#2``)."""
    quote = ""
    escaped = False
    for index, char in enumerate(line):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index]
    return line


# Keywords the manager takes itself: they have flags of their own.
_RESERVED_KW = {
    "device": "--device",
    "dtype": "--dtype",
    "trust": "--trust",
    "pin": "--pin",
    "keep_alive": "--keep-alive",
    "reload": "--reload",
    "runner": "--runner (or --isolate)",
    "on_release": "the Python API",
}


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def _usage(magic: str, message: str) -> NoReturn:
    raise UsageError(f"%{magic}: {message}")


def parse_line(func: Callable[..., Any], magic: str, line: str) -> argparse.Namespace:
    """Parse ``line`` for ``func``; any parse failure is a one-line UsageError naming the magic."""
    try:
        words = split_line(line)
    except ValueError as exc:  # an unbalanced quote
        _usage(magic, f'cannot split {line.strip()!r}: {exc}; close the quote (or put a \' inside "...")')
    parser: Any = getattr(func, "parser")  # noqa: B009  (set by @magic_arguments, unknown to mypy)
    try:
        parsed: argparse.Namespace = parser.parse_args(words)
        return parsed
    except UsageError as exc:
        message = f"{one_line(exc)}{_quote_hint(magic, words, str(exc))} (see %{magic}?)"
    except SystemExit:  # argparse exits on some errors; a magic must never end the kernel
        message = f"cannot parse {line.strip()!r} (see %{magic}?)"
    _usage(magic, message)


def _quote_hint(magic: str, words: list[str], error: str) -> str:
    """``; a path with spaces must be quoted: %load_model clf "models/tiny bert"``, when words look split.

    A path with spaces, pasted in by ``{model_dir}`` (papermill parameters), splits
    into words argparse does not expect.
    """
    if "unrecognized arguments" not in error:
        return ""
    for start in range(len(words)):
        for end in range(len(words), start + 1, -1):
            joined = " ".join(words[start:end])
            if not joined.startswith("-") and os.path.exists(os.path.expanduser(joined)):
                quoted = [*words[:start], shlex.quote(joined), *words[end:]]
                return f"; a path with spaces must be quoted: %{magic} {' '.join(quoted)}"
    if any("/" in word or os.sep in word for word in words):
        return '; if a path has spaces, quote it ("...")'
    return ""


_NOT_PARSED = object()


def _parse_literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return _NOT_PARSED


def literal(text: str) -> Any:
    """A Python literal when ``text`` is one (``64``, ``True``, ``'a b'``, ``[1, 2]``), else the text."""
    value = _parse_literal(text)
    return text if value is _NOT_PARSED else value


def parse_keywords(groups: list[list[str]], magic: str = "load_model") -> dict[str, Any]:
    """``--kw a=1 b=x "c=['p', 'q']"`` -> ``{'a': 1, 'b': 'x', 'c': ['p', 'q']}``.

    The line was split as a shell splits it, so quotes are gone by now: a value
    that opens a list, tuple or dict but does not parse lost its inner quotes
    (``names=['a','b']`` arrives as ``names=[a,b]``) and is refused with how to
    quote it, rather than passed on as a string nobody meant.
    """
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
        parsed = _parse_literal(value)
        if parsed is _NOT_PARSED and value.lstrip().startswith(("[", "(", "{")):
            _usage(
                magic,
                f"--kw {key}={value} is not a Python literal: the line is split as a shell splits it, which "
                f"takes quotes away; quote the whole item, e.g. --kw \"{key}=['a', 'b']\"",
            )
        keywords[key] = value if parsed is _NOT_PARSED else parsed
    return keywords


def _refuse_meta(magic: str, device: Any) -> None:
    """``meta`` holds no data: a model put there loses its weights, and a move there is no success."""
    if isinstance(device, str) and device.strip().lower() in ("meta", "meta:0"):
        _usage(magic, "meta is not a place for a loaded model (its weights would be thrown away); use cpu or cuda")


def _wrong_keyword_name(error: BaseException) -> bool:
    """A loader that was given a keyword it does not take: the user's mistake, so point at --kw."""
    if isinstance(error, UnknownKeywordError):
        return True
    cause = error.__cause__
    return isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause)


def _raised_in_loader(error: BaseException) -> bool:
    """True when ``error`` (or the error it wraps) came out of a loader: its traceback passes ``Source.load``."""
    seen: BaseException | None = error
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code is Source.load.__code__:
                return True
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return False


def _forget_locals(error: BaseException) -> None:
    """Clear the finished frames of ``error`` and of the errors it wraps, so that their locals
    (a half-built model) die now rather than with the last reference to the error."""
    seen: BaseException | None = error
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            try:
                frame.clear()
            except RuntimeError:  # still running: the magic's own frames
                pass
            else:
                frame.f_locals  # noqa: B018  (Python < 3.13 keeps a snapshot of the locals until they are read again)
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__


class LoaderUsageError(UsageError):
    """A user mistake that a loader found: one line in the cell, and the loader's traceback for ``%tb``.

    IPython shows a plain UsageError as one line, and ``%tb`` then shows that
    line again. This one shows the same line in its own cell; afterwards (``%tb``)
    it shows the traceback of the failure behind it, kept as text: the frames are
    cleared, so a half-built model in them is not kept alive.
    """

    def __init__(self, message: str, details: list[str], shown_in: int | None) -> None:
        super().__init__(message)
        self.details = details
        self._shown_in = shown_in

    def _render_traceback_(self) -> list[str]:
        from IPython import get_ipython

        shell = get_ipython()
        if shell is None or shell.execution_count == self._shown_in:
            return [f"UsageError: {self}"]
        return [*self.details, f"UsageError: {self}"]


@magics_class
class NBModelsMagics(Magics):
    """``%load_model``, ``%list_models`` (``%models``), ``%model_info``, ``%unload_model``, ``%model_cleanup``,
    ``%model_pin``, ``%model_unpin``, ``%model_offload``, ``%model_to``, ``%model_panel``."""

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
        """Run a manager call; every nbmodels error becomes a one-line UsageError naming the magic.

        The UsageError is raised outside the ``except`` block so that it does not
        chain (and keep alive) the original exception and its frames; a loader's
        traceback is kept as text for ``%tb`` (see :class:`LoaderUsageError`).
        """
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        details: list[str] = []
        try:
            return call()
        except ModelNotFoundError as exc:
            message = self._not_found(magic, name or exc.name)
        except ModelConflictError as exc:
            differences = "; ".join(exc.differences) or one_line(exc)
            message = (
                f"{name!r} is already loaded and is not what this asks for: {differences}; "
                f"add --reload to load it again, or %unload_model {name} first"
            )
        except NbModelsError as exc:  # a bad argument or source, or a loader that failed
            message = one_line(exc)
            if _wrong_keyword_name(exc):
                message += " (check the --kw names)"
            elif isinstance(exc, ModelLoadError):
                message += " (%tb shows the traceback)"
            if _raised_in_loader(exc):
                details = self._keep_traceback(exc)
        if details:
            raise LoaderUsageError(f"%{magic}: {message}", details, self._execution_count())
        _usage(magic, message)

    def _keep_traceback(self, error: BaseException) -> list[str]:
        """The traceback as IPython would show it, as text; then the frames' locals are let go."""
        interactive_tb = getattr(self.shell, "InteractiveTB", None)
        try:
            if interactive_tb is not None:
                lines: list[str] = interactive_tb.structured_traceback(type(error), error, error.__traceback__)
            else:
                lines = traceback.format_exception(error)
        except Exception:  # formatting must never hide the error itself
            lines = traceback.format_exception(error)
        _forget_locals(error)
        return lines

    def _not_found(self, magic: str, name: str) -> str:
        manager = self.manager
        loaded = [info.name for info in manager.list()]
        known = f"loaded: {', '.join(loaded)}" if loaded else "nothing is loaded"
        if not name.strip():
            return f"the model name is empty ({known})"
        if name in manager.loading():
            return (
                f"{name!r} is still loading; %load_model {name} waits for it, "
                f"then %{magic} {name} works (%model_cleanup --wait waits for every load)"
            )
        if magic == "load_model":
            registered = manager.registered()
            hint = f" (registered: {', '.join(registered)})" if registered else ""
            return f"no model or registration named {name!r}{hint}; give a source, e.g. %load_model {name} demo:mlp"
        return f"no model named {name!r} is loaded ({known})"

    @staticmethod
    def _release_options(magic: str, args: argparse.Namespace) -> dict[str, Any]:
        """``force``, ``allow`` and ``dry_run`` for the manager; ``--allow`` means nothing without force."""
        if args.allow and not (args.force or args.dry_run):
            _usage(magic, "--allow names holders that force may remove; add --force (or --dry-run to see the plan)")
        return {"force": args.force, "allow": tuple(args.allow), "dry_run": args.dry_run}

    def _default_placement(self, manager: ModelManager, name: str, given: dict[str, Any]) -> dict[str, str]:
        """NBModels.default_device/dtype where the line gives none, for a name that is new (not loaded,
        loading or registered).

        A bad default is a UsageError that says where it came from, so a typo in
        NBMODELS_DEVICE never reads like a typo in the magic's line.
        """
        if name in manager or name in manager.registered() or name in manager.loading():
            return {}
        defaults = {key: value for key, value in self.settings.load_defaults().items() if given.get(key) is None}
        for key, value in defaults.items():
            trait = f"default_{key}"
            try:
                (normalize_device if key == "device" else normalize_dtype)(value)
            except InvalidArgumentError as exc:
                _usage(
                    "load_model",
                    f"{one_line(exc)}; that is the default {key}, from {self.settings.origin(trait)}: "
                    f"fix it (%config NBModels.{trait} = '') or give --{key}",
                )
        return defaults

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
        help="where to load it from: demo:mlp, demo:transformer, package.module:factory, a file or folder, "
        "or the name of a function defined in the notebook; leave out for a registered or loaded name",
    )
    @argument(
        "--device", default=None, help="cpu, cuda, cuda:N, mps or auto (a new name's default: NBModels.default_device)"
    )
    @argument("--dtype", default=None, help="float32, float16/fp16/half, bfloat16/bf16, float64")
    @argument("--pin", action="store_true", help="keep it loaded: no budget evicts it, keep-alive never unloads it")
    @argument(
        "--keep-alive",
        dest="keep_alive",
        default=None,
        metavar="DURATION",
        help="unload it after this long idle: seconds, 30m, 1h; 0: when the cell that used it ends; -1: never "
        "(default NBModels.keep_alive)",
    )
    @argument("--trust", action="store_true", help="allow pickled checkpoints (runs code from the file)")
    @argument("--reload", action="store_true", help="load again even if the name is loaded")
    @argument(
        "--isolate",
        action="store_true",
        help="run it in a worker process of its own (= --runner process): unload ends the process, so all of "
        "its memory comes back, the CUDA context included, and a crash stays there",
    )
    @argument(
        "--runner",
        default=None,
        choices=["kernel", "process", "ray"],
        help="where it runs: kernel (here, the default), process (a worker process) or ray (a Ray actor)",
    )
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
            %load_model mine make --kw hidden=64          # make() defined in the notebook
            m = %load_model lm demo:transformer --device cpu --dtype bf16
            %load_model clf --as model
            %load_model big mypkg.models:build --isolate --device cuda
        """
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        args = parse_line(self.load_model, "load_model", line)
        keywords = parse_keywords(args.kw)
        if args.var is not None and variable_problem(args.var, self.shell):
            _usage("load_model", variable_problem(args.var, self.shell))
        _refuse_meta("load_model", args.device)
        manager = self.manager
        already = args.name in manager and not args.reload
        waited = args.name in manager.loading() and args.source is None
        if args.isolate and args.runner not in (None, "process"):
            _usage("load_model", f"--isolate means --runner process; it cannot go with --runner {args.runner}")
        runner = "process" if args.isolate else args.runner
        namespace = self.shell.user_ns if self.shell is not None else {}
        try:
            source = from_namespace(args.source, namespace)
        except SourceError as exc:
            _usage("load_model", one_line(exc))
        placement = {"device": args.device, "dtype": args.dtype}
        placement.update(self._default_placement(manager, args.name, placement))
        _refuse_meta("load_model", placement.get("device"))  # NBModels.default_device = 'meta' too

        def load() -> Any:
            __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
            return manager.load(
                args.name,
                source,
                trust=args.trust,
                pin=args.pin,
                reload=args.reload,
                runner=runner,
                keep_alive=args.keep_alive,
                **placement,
                **keywords,
            )

        with _evictions_for(manager, args.name) as evicted:
            # a bar in the notebook while a load takes more than a second
            model = self._call("load_model", with_progress(args.name, load), name=args.name)
            del load
        for line in evicted:  # another model left to make room: the user must hear of it, verbose or not
            print(line)
        handle = ModelHandle(args.name, model, manager)
        del model
        info = self._call("load_model", lambda: manager.info(args.name), name=args.name)
        if args.var is not None and self.shell is not None:
            self.shell.user_ns[args.var] = handle
        if self.settings.verbose:
            text = info.summary()
            if already:
                text += f" (already loaded, used {info.hits} time{'' if info.hits == 1 else 's'})"
            elif waited:
                text += " (it was loading: this waited for that load)"
            if args.var is not None:
                text += f" -> {args.var}"
            print(text)
        note_action_result(handle)
        return handle

    @line_magic
    @magic_arguments()
    @argument("--all", action="store_true", help="every Jupyter kernel on this machine, as python -m nbmodels ps")
    def list_models(self, line: str) -> Any:
        """The loaded models with their cost, totals, and each device's memory right now.

        Shown as an HTML table in notebooks and text in terminals; assigned
        (``table = %list_models``) it is data: a list of ModelInfo with
        ``.devices`` (DeviceMemory readings: CPU RSS and system available; per
        CUDA device allocated, reserved, free, total and the context floor).
        ``--all`` shows every Jupyter kernel on this machine instead (see nbmodels.machine).
        """
        if parse_line(self.list_models, "list_models", line).all:
            from nbmodels.ipython.machine import list_all  # the machine view, imported only now

            return list_all(self.shell)
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
    @argument(
        "--force",
        action="store_true",
        help="also remove what still holds the model: the smallest thing that frees it, as the report shows",
    )
    @argument(
        "--allow",
        action="append",
        default=[],
        metavar="HOLDER",
        help="a holder force may remove although it holds more than the model (a tuple, a closure), as named in the "
        "report; repeat for several",
    )
    @argument("--dry-run", action="store_true", help="show what unload (and --force) would do; change nothing")
    def unload_model(self, line: str) -> ReleaseReport:
        """Release one model and show whether its memory really came back (a ReleaseReport).

        A model that something else still holds is listed with its holders and
        the plan of what ``--force`` would remove (``del cache['m']``,
        ``history[2] = None``, ``del Out[4]``): never a container or object that
        also holds anything else, unless named with ``--allow``.
        """
        args = parse_line(self.unload_model, "unload_model", line)
        manager = self.manager
        self._call("unload_model", lambda: check_name(args.name), name=args.name)
        options = self._release_options("unload_model", args)
        report = self._call("unload_model", lambda: manager.unload(args.name, **options), name=args.name)
        display(report)
        note_action_result(report)
        return report

    @line_magic
    @magic_arguments()
    @argument("--force", action="store_true", help="also remove what still holds the models, as the report shows")
    @argument(
        "--allow",
        action="append",
        default=[],
        metavar="HOLDER",
        help="a holder force may remove although it holds more than a model, as named in the report",
    )
    @argument("--dry-run", action="store_true", help="show what cleanup (and --force) would do; change nothing")
    @argument("--quiet", action="store_true", help="show the report only when something was not freed")
    @argument("--wait", action="store_true", help="first wait for the loads in flight, then release them too")
    def model_cleanup(self, line: str) -> ReleaseReport:
        """Release every model and show what came back (a ReleaseReport). Safe to run twice.

        Loads still in flight are left to finish and listed; ``--wait`` waits for
        them and releases them too.
        """
        args = parse_line(self.model_cleanup, "model_cleanup", line)
        manager = self.manager
        options = self._release_options("model_cleanup", args)
        report = self._call("model_cleanup", lambda: manager.cleanup(**options, wait=args.wait))
        if not (args.quiet and report.ok and not report.pending):
            display(report)
        if report.pending:
            print(f"(%model_cleanup --wait waits for {', '.join(report.pending)} and releases it too)")
        note_action_result(report)
        return report

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    def model_pin(self, line: str) -> None:
        """Pin a loaded model: no budget evicts it and keep-alive never unloads it (%unload_model still does)."""
        args = parse_line(self.model_pin, "model_pin", line)
        info = self._call("model_pin", lambda: self.manager.pin(args.name), name=args.name)
        print(f"{info.name}: pinned ({format_bytes(info.total_bytes)}); %model_unpin {info.name} lets it go again")

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    def model_unpin(self, line: str) -> None:
        """Unpin a model: budgets may evict it again, and its keep-alive runs."""
        args = parse_line(self.model_unpin, "model_unpin", line)
        info = self._call("model_unpin", lambda: self.manager.unpin(args.name), name=args.name)
        print(f"{info.name}: unpinned ({format_bytes(info.total_bytes)})")

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    def model_offload(self, line: str) -> None:
        """Move a loaded model to the CPU: its GPU memory comes back and it stays loaded (%model_to moves it back)."""
        args = parse_line(self.model_offload, "model_offload", line)
        self._move("model_offload", args.name, "cpu")

    @line_magic
    @magic_arguments()
    @argument("name", help="a loaded model")
    @argument("device", help="cpu, cuda, cuda:N, mps or auto (the CUDA device with the most room)")
    def model_to(self, line: str) -> None:
        """Move a loaded model to a device; under a budget there, idle models there leave first."""
        args = parse_line(self.model_to, "model_to", line)
        _refuse_meta("model_to", args.device)
        self._move("model_to", args.name, args.device)

    def _move(self, magic: str, name: str, device: str) -> None:
        manager = self.manager
        before = memory.cuda_allocated()
        with _evictions_for(manager, name) as evicted:
            info = self._call(magic, lambda: manager.to(name, device), name=name)
        after = memory.cuda_allocated()
        for line in evicted:
            print(line)
        text = f"{info.name}: on {', '.join(info.devices) or '?'} ({format_bytes(info.total_bytes)})"
        measured = [
            f"{d} allocated {format_bytes(before.get(d, 0))} -> {format_bytes(n)}" for d, n in sorted(after.items())
        ]
        print(text + (f"; measured: {'; '.join(measured)}" if measured else ""))

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
            namespace = self.shell.user_ns if self.shell is not None else None
            panel = ModelPanel(self.manager, refresh_interval=interval, namespace=namespace)
        except TraitError as exc:  # a bad --refresh
            _usage("model_panel", f"--refresh: {one_line(exc)}")
        display(panel)  # a later run of this cell closes it (see nbmodels.widgets.cells)


@contextlib.contextmanager
def _evictions_for(manager: ModelManager, name: str) -> Iterator[list[str]]:
    """The lines of the evictions made for ``name`` while the block runs (other threads' are not collected)."""
    lines: list[str] = []

    def collect(event: Event) -> None:
        if event.kind == "evicted" and event.cause == name and event.reason:
            lines.append(event.reason)

    unsubscribe = manager.subscribe(collect)
    try:
        yield lines
    finally:
        unsubscribe()


__all__ = ["LoaderUsageError", "NBModelsMagics", "literal", "parse_keywords", "parse_line", "split_line"]
