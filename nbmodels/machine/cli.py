"""``python -m nbmodels ps`` and ``python -m nbmodels free KERNEL``: the machine view from a terminal.

Errors are one line on stderr and a non-zero exit status, never a traceback:
1 for a problem with the machine or the kernel, 2 for a mistake on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nbmodels.machine.errors import MachineError
from nbmodels.machine.files import printable
from nbmodels.machine.free import DEFAULT_TIMEOUT, free_kernel
from nbmodels.machine.scan import scan
from nbmodels.machine.view import as_dict, text_table

COMMANDS = ("ps", "free")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message}\n")


def parser() -> argparse.ArgumentParser:
    top = _Parser(prog="python -m nbmodels", description="Every Jupyter kernel on this machine and its models.")
    commands = top.add_subparsers(dest="command", required=True, parser_class=_Parser)
    ps = commands.add_parser(
        "ps",
        help="list every Jupyter kernel: notebook, RSS, GPU memory, models, idle time",
        description="Every Jupyter kernel process on this machine, largest GPU user first, then by RSS.",
    )
    ps.add_argument("--json", action="store_true", help="print JSON for scripts instead of the table")
    free = commands.add_parser(
        "free",
        help="ask a kernel to release its models (it keeps running)",
        description="Ask one kernel to release every model it holds, even while a cell runs.",
    )
    free.add_argument("kernel", help="a pid, a kernel id prefix, or a notebook name (as nbmodels ps shows them)")
    free.add_argument("--json", action="store_true", help="print the kernel's answer as JSON")
    free.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the answer")
    for command in (ps, free):
        command.add_argument("--runtime-dir", type=Path, default=None, help="the Jupyter runtime directory to read")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "ps":
            view = scan(args.runtime_dir)
            for warning in view.warnings:
                print(f"nbmodels ps: warning: {printable(warning, 400)}", file=sys.stderr)
            print(json.dumps(as_dict(view), indent=2) if args.json else text_table(view))
            return 0
        result = free_kernel(args.kernel, runtime_dir=args.runtime_dir, timeout=args.timeout)
        print(json.dumps(result.reply, indent=2, sort_keys=True) if args.json else str(result))
        return 0
    except MachineError as exc:
        print(f"nbmodels {args.command}: {printable(str(exc), 400)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"nbmodels {args.command}: interrupted", file=sys.stderr)
        return 130


__all__ = ["COMMANDS", "main", "parser"]
