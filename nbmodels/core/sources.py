"""Turning a source (a callable, a "module:factory" string, "demo:NAME", a path or a
plug-in scheme) into something that loads a model.

Resolving is cheap and happens before the manager changes anything, so a bad
source fails at once: a missing module or file, a file that is empty or not
what its name says, a ``config.json`` or ``modules.json`` that does not parse,
a model folder without weights, a keyword the factory does not take. Loading
happens later, outside the manager's lock.

Two sources are the same when their ``key`` is: a factory is known by its
module and qualified name, so a notebook cell that defines ``make`` and loads
from it can run again and get the loaded model back.

Plug-ins register a scheme in the entry-point group ``nbmodels.sources``; the
entry point names a callable ``loader(target: str, **kwargs) -> model`` that is
called for sources written ``"scheme:target"``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import json
import keyword
import logging
import os
import pickle
import re
import struct
import sys
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nbmodels.core import folder_sources
from nbmodels.core.demo import DEMO_MODELS
from nbmodels.errors import InvalidArgumentError, SourceError, UnknownKeywordError, UnsafeCheckpointError

if TYPE_CHECKING:
    import importlib.metadata

log = logging.getLogger("nbmodels")

ENTRY_POINT_GROUP = "nbmodels.sources"
CHECKPOINT_SUFFIXES = frozenset({".pt", ".pth", ".bin", ".ckpt", ".ts", ".jit", ".torchscript"})
FILE_SUFFIXES = CHECKPOINT_SUFFIXES | {".safetensors"}
# Files from which transformers' from_pretrained can build a model (sharded ones have an index.json).
WEIGHT_SUFFIXES = frozenset({".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf"})
_DOTTED = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")

KeywordCheck = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Source:
    """A resolved source: how to show it, how to compare it, how to load it.

    ``check_keywords`` (when the loader's keywords are known) refuses keywords
    before anything changes; ``prepare`` imports the libraries the loader needs,
    so that the manager can do it before it reads the process's memory and a
    first load is not charged for ``import transformers``.
    """

    text: str
    key: object
    loader: Callable[..., Any]
    check_keywords: KeywordCheck | None = None
    prepare: Callable[[], None] | None = None
    origin: Any = field(default=None, compare=False, repr=False)  # the callable itself, for a worker to rebuild

    @property
    def portable(self) -> Any:
        """What a worker process is handed to rebuild the model: the callable, else the text."""
        return self.origin if self.origin is not None else self.text

    def load(self, *, trust: bool, kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        check_safety_keywords(kwargs, trust=trust)
        return self.loader(trust=bool(trust), **kwargs)


# Keywords that turn a loader's safety off, with the value that does: only ``trust`` may do that.
UNSAFE_KEYWORDS: dict[str, bool] = {
    "weights_only": False,  # torch.load: unpickle anything (runs code from the file)
    "trust_remote_code": True,  # transformers, sentence-transformers: run the folder's Python files
    "allow_pickle": True,  # numpy.load
    "use_safetensors": False,  # transformers: fall back to pickled .bin weights
}


def check_safety_keywords(kwargs: Mapping[str, Any], *, trust: bool) -> None:
    """Refuse (one line) a keyword that turns a safety off unless the user said trust.

    A keyword must never do quietly what ``--trust`` exists to make explicit, and
    no prompt (transformers asks on stdin) may decide it either.
    """
    if trust:
        return
    for key, unsafe in UNSAFE_KEYWORDS.items():
        value = kwargs.get(key)
        if value is not None and isinstance(value, bool | int) and bool(value) == unsafe:
            raise InvalidArgumentError(
                f"{key}={value!r} turns a safety off (the files could run code); "
                "pass --trust (trust=True) as well, only if you trust where they came from"
            )


def _without_unsafe_advice(text: str, name: str) -> str:
    """A loader's error in one line, without its advice to turn safety off (torch: "set weights_only=False")."""
    detail = " ".join(text.split())
    if "weights_only" in detail or "trust_remote_code" in detail:
        return (
            f"{name} cannot be loaded safely (it needs code from the file to run); pass --trust if you trust this file"
        )
    return detail


def resolve(source: Any) -> Source:
    """Resolve ``source`` without loading anything; raise SourceError when it cannot work."""
    if isinstance(source, Source):
        return source
    if isinstance(source, os.PathLike):
        return _path_source(Path(source))
    if callable(source):
        return _callable_source(source)
    if not isinstance(source, str):
        raise SourceError(
            f"cannot use {type(source).__name__} as a source; pass a callable, "
            "'package.module:factory', 'demo:NAME' or a path"
        )
    text = source.strip()
    if not text:
        raise SourceError("the source is empty; pass a callable, 'package.module:factory', 'demo:NAME' or a path")
    if len(text) > MAX_SOURCE_LENGTH:
        raise SourceError(
            f"the source is {len(text)} characters long; give a path or 'package.module:factory' "
            f"of at most {MAX_SOURCE_LENGTH}"
        )
    path = Path(os.path.expanduser(text))
    if _exists(path):
        return _path_source(path)
    if ":" in text:
        return _scheme_source(text)
    if _looks_like_path(text):
        raise SourceError(f"no such file or folder: {text!r}; check the path (relative to {os.getcwd()!r})")
    raise SourceError(
        f"cannot understand source {text!r}; use 'package.module:factory', 'demo:NAME' "
        f"({', '.join(sorted(DEMO_MODELS))}), a path to a checkpoint or model folder, or a callable"
    )


MAX_SOURCE_LENGTH = 4096  # PATH_MAX: longer is no path, and no 'module:factory' either


def _exists(path: Path) -> bool:
    """``path.exists()``, False for a name the system refuses (too long, NUL) rather than an OSError."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _refuse_builtin(module: Any, text: str) -> None:
    """``builtins:int``, ``print``: a Python builtin builds no model, whatever it returns."""
    if module == "builtins":
        raise SourceError(
            f"{text} is a Python builtin, not a model factory; use 'package.module:factory', 'demo:NAME' or a path"
        )


def from_namespace(source: Any, namespace: Mapping[str, Any]) -> Any:
    """A bare name bound in a notebook's namespace (``%load_model m make``) is that factory; else ``source``.

    A file or folder of that name wins, as it did before the name was bound. A
    name bound to something that builds no model (a model already built, a
    number) and a bare name bound to nothing are SourceErrors that say so.
    """
    if isinstance(source, str) and len(source.strip()) > MAX_SOURCE_LENGTH:
        return source  # resolve() refuses it in one line
    if not isinstance(source, str) or not source.isidentifier() or keyword.iskeyword(source):
        return source
    if os.path.exists(os.path.expanduser(source)):
        return source
    if source not in namespace:
        raise SourceError(
            f"cannot understand source {source!r}: no file, folder or notebook function has that name; use "
            f"'package.module:factory', 'demo:NAME' ({', '.join(sorted(DEMO_MODELS))}), a path, "
            f"or define {source}() in the notebook first"
        )
    value = namespace[source]
    torch = sys.modules.get("torch")
    built = torch is not None and isinstance(value, torch.nn.Module)
    # a class builds a model when called (a module, a pipeline holding models); a builtin type does not
    builds = not isinstance(value, type) or value.__module__ != "builtins"
    if built or not callable(value) or not builds:
        kind = "a model that is already built" if built else f"an object of type {type(value).__name__}"
        raise SourceError(
            f"{source!r} in the notebook is {kind}, not a function that builds one; give a function "
            f"(def make(): return ...; then the source make), 'package.module:factory', 'demo:NAME' or a path"
        )
    return value


def _looks_like_path(text: str) -> bool:
    return text.startswith(("/", ".", "~")) or "/" in text or Path(text).suffix.lower() in FILE_SUFFIXES


def _call(factory: Callable[..., Any]) -> Callable[..., Any]:
    def load(*, trust: bool, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        return factory(**kwargs)

    return load


def _callable_source(factory: Callable[..., Any]) -> Source:
    """A factory is known by where it is defined, so redefining it (a cell run again) is the same source."""
    module, qualname = getattr(factory, "__module__", None), getattr(factory, "__qualname__", None)
    _refuse_builtin(module, f"{module}:{qualname}")
    if isinstance(module, str) and isinstance(qualname, str):
        text = f"{module}:{qualname}"
        key: object = text  # the same key as the 'module:factory' text for it
    else:  # a functools.partial, an instance with __call__: only the object itself says what it is
        text, key = repr(factory), factory
    return Source(
        text=text, key=key, loader=_call(factory), check_keywords=keyword_check(factory, text), origin=factory
    )


def keyword_check(factory: Any, text: str) -> KeywordCheck | None:
    """A check that ``factory(**kwargs)`` binds, or None when its signature cannot tell (``**kwargs``, C code)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return None
    parameters = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    takes = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def check(kwargs: dict[str, Any]) -> None:
        unknown = [key for key in kwargs if key not in takes]
        if unknown:
            raise UnknownKeywordError(
                f"{text} takes no keyword {unknown[0]!r}; it takes {', '.join(takes) if takes else 'no keywords'}"
            )
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            raise InvalidArgumentError(f"{text} cannot be called with {keywords_text(kwargs)}: {exc}") from None

    return check


def keywords_text(kwargs: dict[str, Any]) -> str:
    """``hidden=8, name='x'`` (or "no keywords"): keywords as a message shows them."""
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items()) or "no keywords"


def _scheme_source(text: str) -> Source:
    scheme, _, target = text.partition(":")
    if scheme == "demo":
        factory = DEMO_MODELS.get(target)
        if factory is None:
            raise SourceError(f"no demo model {target!r}; the demo models are {', '.join(sorted(DEMO_MODELS))}")
        return Source(text=text, key=text, loader=_call(factory), check_keywords=keyword_check(factory, text))
    plugin = _plugin_loaders().get(scheme)
    if plugin is not None:
        return Source(text=text, key=text, loader=_plugin(plugin, target))
    if text.count(":") > 1:
        raise SourceError(
            f"source {text!r} has more than one ':'; write 'package.module:factory', 'demo:NAME' or 'scheme:target'"
        )
    if not (_DOTTED.match(scheme) and _DOTTED.match(target)):
        raise SourceError(
            f"source {text!r} is neither 'package.module:factory' nor a known scheme "
            f"(demo{''.join(', ' + s for s in sorted(_plugin_loaders()))})"
        )
    _refuse_builtin(scheme, text)
    _check_module_exists(scheme, text)
    check = None
    if scheme in sys.modules:  # already imported: check the factory and its keywords now, for free
        check = keyword_check(import_object(scheme, target), text)
    return Source(text=text, key=text, loader=_import_factory(scheme, target), check_keywords=check)


def _check_module_exists(module_name: str, text: str) -> None:
    """Fail at once on a misspelt top-level package, without importing anything."""
    top = module_name.partition(".")[0]
    if top not in sys.modules and importlib.util.find_spec(top) is None:
        raise SourceError(f"source {text!r}: no module named {top!r}; check the spelling or install it")


def _path_signature() -> tuple[tuple[str, int], ...]:
    """``sys.path`` with each folder's mtime: it changes when a package is installed there."""
    signature = []
    for entry in sys.path:
        try:
            signature.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            signature.append((entry, -1))
    return tuple(signature)


_plugin_cache: tuple[tuple[tuple[str, int], ...], dict[str, importlib.metadata.EntryPoint]] | None = None


def _plugin_loaders() -> dict[str, importlib.metadata.EntryPoint]:
    """The plug-in schemes, rescanned only when ``sys.path`` or a folder on it changed.

    A full scan of installed distributions costs milliseconds; a plug-in installed
    while the kernel runs changes its site-packages folder and is found on the next call.
    """
    global _plugin_cache
    signature = _path_signature()
    if _plugin_cache is None or _plugin_cache[0] != signature:
        import importlib.metadata  # here: reading the installed packages' metadata is slow to import

        found = {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
        _plugin_cache = (signature, found)
    return _plugin_cache[1]


def _plugin(entry_point: importlib.metadata.EntryPoint, target: str) -> Callable[..., Any]:
    def load(*, trust: bool, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        return entry_point.load()(target, **kwargs)

    return load


def import_object(module_name: str, attribute: str) -> Any:
    """Import ``module_name`` and follow the dotted ``attribute``; SourceError when either is missing."""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise SourceError(f"no module named {module_name!r}; check the spelling or install it") from exc
        raise SourceError(f"importing {module_name!r} failed: {exc}") from exc
    obj: Any = module
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise SourceError(f"module {module_name!r} has no attribute {attribute!r}") from None
    return obj


def _import_factory(module_name: str, attribute: str) -> Callable[..., Any]:
    def load(*, trust: bool, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        factory = import_object(module_name, attribute)
        if not callable(factory):
            raise SourceError(f"{module_name}:{attribute} is a {type(factory).__name__}, not a callable factory")
        return factory(**kwargs)

    return load


# --- files and folders ------------------------------------------------------------


def _path_source(path: Path) -> Source:
    path = path.expanduser().resolve()
    if not path.exists():
        raise SourceError(f"no such file or folder: {str(path)!r}")
    text = str(path)
    if path.is_dir():
        if (path / folder_sources.DIFFUSERS_INDEX).is_file():
            _read_json(path / folder_sources.DIFFUSERS_INDEX)
            loader = folder_sources.diffusers_pipeline(path)
            return Source(text, text, loader, prepare=folder_sources.prepare("diffusers"))
        if (path / folder_sources.ADAPTER_CONFIG).is_file() and not (path / "config.json").is_file():
            _read_json(path / folder_sources.ADAPTER_CONFIG)
            loader = folder_sources.peft_adapter(path, lambda base: _path_source(base).loader)
            return Source(text, text, loader, prepare=folder_sources.prepare("peft"))
        if (path / "modules.json").is_file():
            _check_modules_json(path)
            return Source(text, text, _sentence_transformer(path), prepare=_importer("sentence_transformers"))
        if (path / "config.json").is_file():
            config = _read_json(path / "config.json")
            _check_has_weights(path)
            return Source(text, text, _hugging_face(path), prepare=_transformers_importer(config))
        raise SourceError(
            f"folder {text!r} has neither config.json (a Hugging Face model), modules.json (a sentence-transformers "
            "model), model_index.json (a diffusers pipeline) nor adapter_config.json (a PEFT adapter)"
        )
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        _check_safetensors_header(path)
        return Source(text, text, _safetensors(path), _file_keywords(path), _importer("safetensors.torch"))
    if suffix in CHECKPOINT_SUFFIXES:
        _check_checkpoint_file(path)
        return Source(text, text, _checkpoint(path), _file_keywords(path))
    raise SourceError(
        f"cannot load {path.name!r}: unsupported file type {suffix or '(none)'!r}; "
        f"nbmodels reads {', '.join(sorted(FILE_SUFFIXES))} files and Hugging Face folders"
    )


# --- what can be checked before loading: cheap reads of a few bytes or one small JSON file --------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        detail = " ".join(str(exc).split())
        raise SourceError(f"{path.parent.name}/{path.name} is not valid JSON ({detail}); fix or re-save it") from None


def _check_modules_json(folder: Path) -> None:
    """Only what sentence-transformers itself cannot do without: a list of modules, each with its type.

    A module's folder may be missing (the published all-MiniLM-L6-v2 lists a
    ``2_Normalize`` that has none, and loads): whether a module needs one is the
    library's business, and its error becomes a one-line load error.
    """
    modules = _read_json(folder / "modules.json")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise SourceError(
            f"{folder.name}/modules.json is not a list of modules with a 'type' each; "
            "re-save the model with SentenceTransformer.save(folder)"
        )


def _check_has_weights(folder: Path) -> None:
    """A config.json alone builds no model: say so before anything loads."""
    for entry in folder.iterdir():
        if entry.suffix.lower() in WEIGHT_SUFFIXES or entry.name.endswith(".index.json"):
            return
    raise SourceError(
        f"folder {folder.name!r} has a config.json but no weights (no model.safetensors or pytorch_model.bin); "
        "save the whole model there with model.save_pretrained(folder)"
    )


def _check_safetensors_header(path: Path) -> None:
    """A safetensors file starts with the length of its JSON header, then the header."""
    size = path.stat().st_size
    problem = ""
    with path.open("rb") as file:
        head = file.read(8)
        if len(head) < 8:
            problem = "it is empty" if size == 0 else f"it has only {size} bytes"
        else:
            (length,) = struct.unpack("<Q", head)
            if length > size - 8:
                problem = "its header is longer than the file (truncated or not safetensors)"
            else:
                try:
                    header = json.loads(file.read(length))
                except (ValueError, UnicodeDecodeError):
                    header = None
                if not isinstance(header, dict):
                    problem = "its header is not the JSON a safetensors file starts with"
    if problem:
        raise SourceError(f"{path.name} is not a readable safetensors file: {problem}; check or re-save it")


def _check_checkpoint_file(path: Path) -> None:
    """torch.save writes a zip archive (a pickle in older formats); anything else cannot load."""
    with path.open("rb") as file:
        head = file.read(4)
    if not head:
        raise SourceError(f"{path.name} is empty (0 bytes); save the checkpoint again")
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (zipfile.BadZipFile, OSError) as exc:
            raise SourceError(f"{path.name} is not a readable checkpoint: a broken zip archive ({exc})") from None
    elif not head.startswith(b"\x80"):  # pickle protocol 2 and later: torch's legacy format
        raise SourceError(f"{path.name} is not a torch checkpoint (neither a zip archive nor a pickle)")


def _file_keywords(path: Path) -> KeywordCheck:
    """Checkpoint files take ``arch`` and the keywords that build it; keywords without arch fit nothing."""

    def check(kwargs: dict[str, Any]) -> None:
        extra = sorted(key for key in kwargs if key not in ("arch", "weights_only"))
        if extra and "arch" not in kwargs:
            raise InvalidArgumentError(
                f"{path.name} holds weights, not a factory; keywords {extra} need arch='package.module:factory'"
            )

    return check


def _importer(module_name: str) -> Callable[[], None]:
    def prepare() -> None:
        with contextlib.suppress(ImportError):  # the loader says what to install
            importlib.import_module(module_name)

    return prepare


def _transformers_importer(config: Any) -> Callable[[], None]:
    """Import transformers with the modules a from_pretrained of this config would import."""
    names = config.get("architectures") if isinstance(config, dict) else None
    class_name = names[0] if isinstance(names, list) and names and isinstance(names[0], str) else "AutoModel"

    def prepare() -> None:
        try:
            import transformers
        except ImportError:
            return
        for attribute in ("AutoConfig", "PreTrainedModel", class_name):
            getattr(transformers, attribute, None)  # transformers imports its submodules lazily, on access

    return prepare


def _build_arch(arch: Any, kwargs: dict[str, Any]) -> Any:
    if callable(arch):
        return arch(**kwargs)
    if isinstance(arch, str) and arch.count(":") == 1:
        module_name, attribute = arch.split(":")
        factory = import_object(module_name, attribute)
        return factory(**kwargs)
    raise InvalidArgumentError(f"arch={arch!r} must be 'package.module:factory' or a callable")


def _apply_state_dict(path: Path, state: dict[str, Any], arch: Any, kwargs: dict[str, Any]) -> Any:
    """Build ``arch`` and load ``state`` into it strictly; without arch, the tensors themselves."""
    if arch is None:
        if kwargs:
            raise InvalidArgumentError(
                f"{path.name} is a state dict; keywords {sorted(kwargs)} need arch='package.module:factory'"
            )
        return state
    model = _build_arch(arch, kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())  # torch spreads the key lists over several lines
        raise SourceError(f"the state dict in {path.name} does not fit arch {arch!r}: {detail}") from None
    return model


def _safetensors(path: Path) -> Callable[..., Any]:
    def load(*, trust: bool, arch: Any = None, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        kwargs.pop("weights_only", None)  # a safetensors file holds no pickle: nothing to switch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError) as exc:
            raise SourceError(f"{path.name} is not a readable safetensors file ({exc}); check or re-save it") from exc
        return _apply_state_dict(path, state, arch, kwargs)

    return load


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with ``code/`` and ``constants.pkl`` inside."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def _unpickling_detail(text: str) -> str:
    """The one line that matters of torch's long weights-only message ("Unsupported operand 32")."""
    _, found, rest = text.partition("WeightsUnpickler error:")
    detail = rest.split("Check the documentation")[0] if found else text
    return " ".join(detail.split()) or "unreadable pickle"


def _checkpoint(path: Path) -> Callable[..., Any]:
    def load(*, trust: bool, arch: Any = None, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        import torch

        if is_torchscript(path):
            if arch is not None or kwargs:
                raise InvalidArgumentError(f"{path.name} is a TorchScript archive; it takes no arch or keywords")
            return torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        weights_only = bool(kwargs.pop("weights_only", not trust)) or not trust
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=weights_only)
        except pickle.UnpicklingError as exc:
            text = str(exc)
            if not trust and "weights_only" in text.replace(" ", "_") and "global" in text.lower():
                raise UnsafeCheckpointError(
                    f"{path.name} holds pickled Python objects, and unpickling it can run code from the file; "
                    "load it with trust=True (--trust) only if you trust where it came from"
                ) from None
            detail = _without_unsafe_advice(_unpickling_detail(text), path.name)
            raise SourceError(f"{path.name} is not a readable torch checkpoint ({detail})") from None
        except (RuntimeError, EOFError, KeyError, ValueError, OSError) as exc:
            detail = _without_unsafe_advice(str(exc), path.name) or type(exc).__name__
            raise SourceError(f"{path.name} is not a readable torch checkpoint ({detail})") from exc
        if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
            return _apply_state_dict(path, obj, arch, kwargs)
        if arch is not None or kwargs:
            raise InvalidArgumentError(f"{path.name} holds a {type(obj).__name__}, not a state dict; drop arch")
        return obj

    return load


def _hugging_face(path: Path) -> Callable[..., Any]:
    def load(*, trust: bool, auto_class: str | None = None, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        try:
            import transformers
        except ImportError as exc:
            raise SourceError(
                f"{path.name} is a Hugging Face model folder; install transformers: pip install 'nbmodels[hf]'"
            ) from exc
        remote_code = bool(kwargs.pop("trust_remote_code", trust)) and bool(trust)  # never a prompt on stdin
        try:
            config = transformers.AutoConfig.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=remote_code
            )
        except ValueError as exc:
            if "trust_remote_code" in str(exc) or "custom code" in str(exc):
                raise UnsafeCheckpointError(
                    f"{path.name} names Python code of its own (auto_map in config.json), and loading it runs "
                    "that code; pass --trust only if you trust this folder"
                ) from None
            raise
        class_name = auto_class or next(iter(getattr(config, "architectures", None) or []), "AutoModel")
        model_class = getattr(transformers, class_name, None)
        auto_map = getattr(config, "auto_map", None)
        if model_class is None and not auto_class and isinstance(auto_map, dict) and auto_map:
            # a class of the folder's own code (trust_remote_code): the Auto class its config maps to it builds it
            autos = [key for key in auto_map if key.startswith("AutoModel")]
            model_class = getattr(transformers, autos[0] if autos else "AutoModel", None)
        if model_class is None:
            raise SourceError(f"transformers has no class {class_name!r} (named by {path.name}/config.json)")
        return model_class.from_pretrained(str(path), local_files_only=True, trust_remote_code=remote_code, **kwargs)

    return load


def _sentence_transformer(path: Path) -> Callable[..., Any]:
    def load(*, trust: bool, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise SourceError(
                f"{path.name} is a sentence-transformers folder; install it: pip install 'nbmodels[hf]'"
            ) from exc
        kwargs.setdefault("device", "cpu")
        remote_code = bool(kwargs.pop("trust_remote_code", trust)) and bool(trust)
        return SentenceTransformer(str(path), local_files_only=True, trust_remote_code=remote_code, **kwargs)

    return load
