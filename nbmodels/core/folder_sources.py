"""Two more kinds of model folder: diffusers pipelines and PEFT adapters.

- A folder with ``model_index.json`` is a diffusers pipeline: it loads with
  ``DiffusionPipeline.from_pretrained`` and is a composite model (its
  ``components`` are its parts: unet, vae, text encoder...).
- A folder with ``adapter_config.json`` is a PEFT adapter: the base model its
  config names (``base_model_name_or_path``, a local folder, or ``base=PATH``
  given as a keyword) loads as any source does, the adapter goes on it with
  ``PeftModel.from_pretrained``, and ``merge=True`` merges it in
  (``merge_and_unload()``).

Both libraries are optional (``pip install 'nbmodels[diffusers]'`` /
``'nbmodels[peft]'``); without them the load is a one-line error that says what
to install. Nothing here is checked before loading beyond a readable JSON file:
what the library loads, nbmodels loads.
"""

from __future__ import annotations

import contextlib
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nbmodels.errors import SourceError

DIFFUSERS_INDEX = "model_index.json"
ADAPTER_CONFIG = "adapter_config.json"


def _missing(kind: str, package: str, extra: str) -> SourceError:
    return SourceError(f"{kind}; install {package}: pip install {package} (or 'nbmodels[{extra}]')")


def prepare(module_name: str) -> Callable[[], None]:
    """Import ``module_name`` ahead of the load, so that the load's memory reading is not charged for it."""

    def run() -> None:
        with contextlib.suppress(ImportError):
            importlib.import_module(module_name)

    return run


# --- diffusers ----------------------------------------------------------------------------------------


def _dtype_keyword() -> str:
    """diffusers took ``torch_dtype`` and takes ``dtype`` since it deprecated the old name."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


def diffusers_pipeline(path: Path) -> Callable[..., Any]:
    """The loader of a diffusers pipeline folder (keywords go to ``from_pretrained``)."""

    def load(*, trust: bool, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        try:
            from diffusers import DiffusionPipeline
        except ImportError as exc:
            raise _missing(f"{path.name} is a diffusers pipeline folder", "diffusers", "diffusers") from exc
        if "dtype" in kwargs and _dtype_keyword() != "dtype":
            kwargs["torch_dtype"] = kwargs.pop("dtype")
        return DiffusionPipeline.from_pretrained(  # type: ignore[no-untyped-call]
            str(path), local_files_only=True, trust_remote_code=trust, **kwargs
        )

    return load


# --- PEFT adapters ------------------------------------------------------------------------------------


def adapter_base(path: Path, config: Any, given: Any) -> Path:
    """The base model's folder: ``base=`` when given, else the one ``adapter_config.json`` names."""
    named = given
    if named is None and isinstance(config, dict):
        named = config.get("base_model_name_or_path")
    if not named:
        raise SourceError(
            f"{path.name}/{ADAPTER_CONFIG} names no base model; give its folder with --kw base=PATH "
            "(base=... in Python)"
        )
    base = Path(str(named)).expanduser()
    if not base.is_absolute() and given is None:
        beside = (path / base).resolve()
        base = beside if beside.exists() else base
    if not base.exists():
        source = "--kw base" if given is not None else f"{path.name}/{ADAPTER_CONFIG}"
        raise SourceError(
            f"the base model {str(named)!r} that {source} names is not a folder here (nbmodels loads no hub "
            "models); give the base model's folder with --kw base=PATH"
        )
    return base.resolve()


def peft_adapter(path: Path, load_base: Callable[[Path], Callable[..., Any]]) -> Callable[..., Any]:
    """The loader of a PEFT adapter folder; ``load_base`` turns the base's folder into its loader."""

    def load(*, trust: bool, base: Any = None, merge: bool = False, **kwargs: Any) -> Any:
        __tracebackhide__ = True  # IPython leaves nbmodels' own frames out of the user's traceback
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise _missing(f"{path.name} is a PEFT adapter folder", "peft", "peft") from exc
        try:
            config = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            detail = " ".join(str(exc).split())
            raise SourceError(f"{path.name}/{ADAPTER_CONFIG} is not valid JSON ({detail}); fix or re-save it") from None
        base_model = load_base(adapter_base(path, config, base))(trust=trust, **kwargs)
        model = PeftModel.from_pretrained(base_model, str(path), local_files_only=True)
        del base_model
        return model.merge_and_unload() if merge else model

    return load


__all__ = ["ADAPTER_CONFIG", "DIFFUSERS_INDEX", "adapter_base", "diffusers_pipeline", "peft_adapter", "prepare"]
