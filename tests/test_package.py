"""The package imports cheaply, exposes its public API, and its command line works from a built wheel."""

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import nbmodels

REPO = Path(__file__).resolve().parents[1]


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


def run_cli(*args: str, python: str = sys.executable, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "nbmodels", *args], capture_output=True, text=True, timeout=600, check=False, cwd=cwd
    )


def test_help_reads_as_plain_text() -> None:
    done = run_cli("--help")
    assert done.returncode == 0
    text = done.stdout
    assert text.startswith("usage: python -m nbmodels")
    assert "demo    run the quickstart notebook on a fresh Jupyter kernel" in text
    assert "examples:\n  python -m nbmodels demo\n" in text  # kept as written, not reflowed
    for markup in ("``", ":func:", ":mod:", "**"):
        assert markup not in text


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("/nonexistent/quick start.ipynb", "--notebook /nonexistent/quick start.ipynb: no such file"),
        (str(REPO / "nbmodels"), "is a folder; give a .ipynb file"),
        (str(REPO / "README.md"), "not a Jupyter notebook (Notebook does not appear to be JSON"),
    ],
)
def test_a_bad_notebook_is_one_line(argument: str, message: str) -> None:
    done = run_cli("demo", "--notebook", argument)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("python -m nbmodels: error: ")
    assert message in lines[0]


@pytest.mark.parametrize("args", [("demo", "--notebook"), ("demox",), ()])
def test_command_line_mistakes_are_one_line(args: tuple[str, ...]) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "(see python -m nbmodels --help)" in lines[0], done.stderr


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """Build the wheel, install it with the notebook extras into a fresh virtual environment (torch pinned
    by constraints.txt), and run ``python -m nbmodels demo`` from a folder that is not a checkout."""
    source = tmp_path / "source"
    source.mkdir()
    # The package, the server extension's config and the built JupyterLab extension (make builds it).
    for folder in ("nbmodels", "jupyter-config", "labextension/dist"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = dist.glob("nbmodels-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert "nbmodels/notebooks/quickstart.ipynb" in archive.namelist()
        assert "nbmodels/py.typed" in archive.namelist()
        data = "nbmodels-0.1.0.data/data/"
        assert f"{data}etc/jupyter/jupyter_server_config.d/nbmodels.json" in archive.namelist()
        assert f"{data}share/jupyter/labextensions/nbmodels/package.json" in archive.namelist()
        assert any(
            n.startswith(f"{data}share/jupyter/labextensions/nbmodels/static/remoteEntry.") for n in archive.namelist()
        )

    env_dir = tmp_path / "fresh env"  # a path with a space, as users have
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    python = str(env_dir / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-c", str(REPO / "constraints.txt"), f"{wheel}[notebook]"],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    # pip install alone enables the server extension and installs the JupyterLab extension.
    assert (env_dir / "etc" / "jupyter" / "jupyter_server_config.d" / "nbmodels.json").is_file()
    assert (env_dir / "share" / "jupyter" / "labextensions" / "nbmodels" / "install.json").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [python, "-c", "import nbmodels, torch; print(nbmodels.__file__); print(torch.__version__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
        check=True,
        timeout=120,
    ).stdout.splitlines()
    assert str(env_dir) in where[0], where  # the installed package, not the checkout
    assert where[1].startswith("2.13.0"), where  # the pinned CPU build

    done = run_cli("demo", python=python, cwd=elsewhere)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "running quickstart.ipynb on a Jupyter kernel" in done.stdout
    assert "released 1 model(s): clf" in done.stdout
    assert "the shutdown hook released tail" in done.stdout
    record = json.loads(done.stdout.strip().splitlines()[-1])
    assert record["reason"] == "shutdown" and record["released"] == ["tail"]
