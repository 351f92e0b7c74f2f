"""``python -m nbmodels demo``: the main job on built-in demo models, on the CPU."""

from __future__ import annotations

import argparse
import logging
import sys

from nbmodels.core import get_manager
from nbmodels.core.memory import format_bytes, process_rss


def demo() -> int:
    """Load two demo models, list them, unload one, clean up, and show the memory coming back."""
    manager = get_manager()
    start = process_rss()
    print(f"process RSS at start: {format_bytes(start)}")
    manager.load("mlp", "demo:mlp", size_mb=100)
    manager.load("lm", "demo:transformer", d_model=256, layers=4, vocab=8000)
    print("\nloaded:")
    print(manager.list())
    print(f"\nprocess RSS with both loaded: {format_bytes(process_rss())}")
    print("\nunload('mlp'):")
    print(manager.unload("mlp"))
    print("\ncleanup():")
    print(manager.cleanup())
    print(f"\nprocess RSS at the end: {format_bytes(process_rss())} (started at {format_bytes(start)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbmodels", description=__doc__)
    parser.add_argument("command", choices=["demo"], help="what to run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s: %(message)s")
    if args.command == "demo":
        return demo()
    return 2


if __name__ == "__main__":
    sys.exit(main())
