"""The package imports cheaply and exposes its public API."""

import subprocess
import sys

import nbmodels


def test_import_does_not_load_torch_ipython_or_widgets() -> None:
    code = "import sys, nbmodels; print(sorted(m for m in ('torch', 'IPython', 'ipywidgets') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_get_manager_is_the_process_wide_instance() -> None:
    assert nbmodels.get_manager() is nbmodels.ModelManager.get_instance()
    assert nbmodels.get_manager() is nbmodels.get_manager()


def test_errors_also_inherit_the_builtin_a_caller_would_catch() -> None:
    assert issubclass(nbmodels.ModelNotFoundError, KeyError)
    assert issubclass(nbmodels.SourceError, ValueError)
    assert issubclass(nbmodels.UnsafeCheckpointError, nbmodels.SourceError)
    assert issubclass(nbmodels.ModelLoadError, nbmodels.NbModelsError)
