"""``python -m nbmodels demo``: run the quickstart notebook on a real kernel and summarise it.

This is what ``make demo`` runs. The notebook executes cell by cell in a fresh
Jupyter kernel (this interpreter), its outputs are printed, and when the kernel
stops the shutdown hook's JSON line is read back and shown. The quickstart
notebook ships inside the package, so this works from an installed wheel.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NoReturn

QUICKSTART = Path(__file__).resolve().parent / "notebooks" / "quickstart.ipynb"
CELL_TIMEOUT = 300
PROG = "python -m nbmodels"
DESCRIPTION = """\
nbmodels: load models by name in Jupyter, see what they cost, and get the memory back.

commands:
  demo    run the quickstart notebook on a fresh Jupyter kernel (CPU demo models,
          nothing to download), print each cell's output, then the record the
          shutdown hook wrote when the kernel stopped
  ps      every Jupyter kernel on this machine: its notebook, memory and models
  free    ask one kernel (by kernel id prefix, pid or notebook) to release its models
"""
EPILOG = """\
examples:
  python -m nbmodels demo
  python -m nbmodels demo --notebook my-notebook.ipynb
  python -m nbmodels ps --json
  python -m nbmodels free train.ipynb

the demo needs the notebook extras: pip install 'nbmodels[notebook]'
"""


class UsageProblem(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with every mistake as one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _read_notebook(path: Path) -> Any:
    """The notebook at ``path``; a UsageProblem naming the problem when it is not one."""
    import nbformat

    if not path.exists():
        raise UsageProblem(f"--notebook {path}: no such file")
    if path.is_dir():
        raise UsageProblem(f"--notebook {path}: is a folder; give a .ipynb file")
    read: Any = nbformat.read  # untyped
    try:
        return read(path, as_version=4)
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageProblem(f"--notebook {path}: cannot read it ({exc.__class__.__name__}: {exc})") from None
    except Exception as exc:  # nbformat's reader: not JSON, or not a notebook
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageProblem(f"--notebook {path}: not a Jupyter notebook ({first})") from None


def _outputs_text(cell: Any) -> list[str]:
    """The text a reader would see under a cell (streams, results, displays, errors)."""
    texts: list[str] = []
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            texts.append(output.get("text", ""))
        elif kind in ("execute_result", "display_data"):
            texts.append(output.get("data", {}).get("text/plain", ""))
        elif kind == "error":
            texts.append(f"{output.get('ename')}: {output.get('evalue')}")
    return [t.rstrip("\n") for t in texts if t.strip()]


def _print_cells(nb: Any) -> None:
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        print(f"\n[{cell.get('execution_count') or ' '}] " + cell.source.replace("\n", "\n    "))
        for text in _outputs_text(cell):
            print("    | " + text.replace("\n", "\n    | "))


def _shutdown_records(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def _print_summary(record: dict[str, Any]) -> None:
    from nbmodels.core.memory import format_bytes

    freed = ", ".join(f"{device} {format_bytes(n)}" for device, n in sorted(record["freed_bytes"].items())) or "0 B"
    released = ", ".join(record["released"]) or "nothing"
    print(
        f"\nwhen the kernel stopped ({record['reason']}), the shutdown hook released {released} "
        f"({freed}) in {record['seconds'] * 1000:.1f} ms:"
    )
    print(json.dumps(record, sort_keys=True))


def demo(notebook: Path = QUICKSTART) -> int:
    """Execute ``notebook`` on a real kernel, print what happened, and the shutdown hook's record."""
    try:
        import nbformat  # noqa: F401  (read by _read_notebook; checked here with the other extras)
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError, CellTimeoutError
    except ImportError as exc:
        print(
            f"{PROG}: error: the demo needs the notebook extras ({exc.name} is missing): "
            "pip install 'nbmodels[notebook]'",
            file=sys.stderr,
        )
        return 2
    from nbmodels.ipython.kernels import KERNEL_NAME, kernel_manager_class

    nb = _read_notebook(notebook)
    with tempfile.TemporaryDirectory(prefix="nbmodels-demo-") as tmp:
        log_path = Path(tmp) / "shutdown.jsonl"
        kernel_log = Path(tmp) / "kernel.log"
        env = {**os.environ, "NBMODELS_SHUTDOWN_LOG": str(log_path)}
        client = NotebookClient(
            nb,
            timeout=CELL_TIMEOUT,
            kernel_name=KERNEL_NAME,
            kernel_manager_class=kernel_manager_class(asynchronous=True),
            shutdown_kernel="graceful",
            resources={"metadata": {"path": str(notebook.parent)}},
        )
        print(f"running {notebook.name} on a Jupyter kernel ({sys.executable})")
        started = time.perf_counter()
        status = 0
        try:
            with kernel_log.open("w") as kernel_output:  # the kernel's own chatter, shown only on failure
                client.execute(env=env, stdout=kernel_output, stderr=kernel_output)
        except (CellExecutionError, CellTimeoutError) as exc:
            status = 1
            failure = str(exc).strip().splitlines()
            print(f"\na cell failed: {failure[-1] if failure else type(exc).__name__}")
        except Exception as exc:  # the kernel died or never started
            status = 1
            print(f"\nthe kernel failed: {type(exc).__name__}: {exc}")
        _print_cells(nb)
        if status and kernel_log.exists():
            print("\nkernel output:\n" + kernel_log.read_text()[-4000:])
        print(f"\nnotebook ran in {time.perf_counter() - started:.1f}s")
        records = _shutdown_records(log_path)
    if not records:
        print("\nthe kernel left no shutdown record (was it killed with SIGKILL?)")
        return status or 1
    _print_summary(records[-1])
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("ps", "free"):  # the machine view: every kernel on this machine
        from nbmodels.machine.cli import main as machine_main

        return machine_main(argv)
    parser = _Parser(
        prog=PROG, description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "command", choices=["demo", "ps", "free"], help="what to run: demo, or ps / free (see ps --help)"
    )
    parser.add_argument(
        "--notebook",
        type=Path,
        default=QUICKSTART,
        metavar="PATH",
        help="the notebook the demo runs (default: the quickstart that ships with nbmodels)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    try:
        if args.command == "demo":
            return demo(args.notebook)
    except UsageProblem as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
