"""The figures the documentation quotes, checked against the stored benchmark run.

A figure in README.md or docs/ is written after a marker a reader does not see::

    the report takes <!-- bench force_heavy: heavy notebook: report of a held model -->43 ms

The marker names the benchmark module and the figure's name as ``python -m benchmarks`` prints
it; the quoted text is the value in the figure's unit (none for ratios and fractions), rounded
to as many decimals as the text shows. A figure measured somewhere the stored run cannot
reproduce (another machine, a GPU) is marked with why instead::

    <!-- bench elsewhere: one run on a 2-core machine under load (load average 4) -->318 ms

``python -m benchmarks.quoted`` lists the quoted figures that differ from
``benchmarks/stored-run.json`` (what ``make bench`` writes); ``--write`` rewrites them (``make
figures``); the test suite fails while any differ, so a page never quotes a figure the last
stored run did not measure.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
STORED_RUN = ROOT / "benchmarks" / "stored-run.json"
UNITLESS = frozenset({"ratio", "fraction"})
TIMES = frozenset({"s", "ms", "µs"})
ELSEWHERE = "elsewhere"

# <!-- bench MODULE: FIGURE NAME -->VALUE[ UNIT]
MARKER = re.compile(
    r"<!--\s*bench\s+(?P<module>[\w-]+)\s*:\s*(?P<name>.*?)\s*-->(?P<number>-?[0-9][0-9,]*(?:\.[0-9]+)?)"
)
LOOSE_MARKER = re.compile(r"<!--\s*bench\b")


@dataclass(frozen=True)
class Quote:
    """One quoted figure: where it is and what it says."""

    path: Path
    line: int
    module: str
    name: str
    number: str  # as written, thousands separators included
    after: str  # the text right after the number (where its unit is)
    start: int  # offsets of the number in the file's text
    end: int

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"

    @property
    def elsewhere(self) -> bool:
        return self.module == ELSEWHERE


def pages(root: Path = ROOT) -> list[Path]:
    """The pages a user reads: the README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def quotes_in(path: Path, text: str | None = None) -> Iterator[Quote]:
    """Every marked figure of one page."""
    text = path.read_text() if text is None else text
    for match in MARKER.finditer(text):
        yield Quote(
            path=path,
            line=text.count("\n", 0, match.start()) + 1,
            module=match["module"],
            name=match["name"],
            number=match["number"],
            after=text[match.end() : match.end() + 40],
            start=match.start("number"),
            end=match.end("number"),
        )


def malformed_markers(path: Path, text: str | None = None) -> list[str]:
    """``path:line`` of each marker that is not followed by a number (a typo hides a figure from the check)."""
    text = path.read_text() if text is None else text
    good = {match.start() for match in MARKER.finditer(text)}
    loose = [m.start() for m in LOOSE_MARKER.finditer(text) if m.start() not in good]
    return [f"{path.name}:{text.count(chr(10), 0, start) + 1}" for start in loose]


def load_stored(path: Path = STORED_RUN) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def figures_by_key(stored: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    # a name indented in the printed table ("  the same, 95th percentile") is quoted without its indent
    return {(f["module"], f["name"].strip()): f for f in stored["figures"]}


def decimals_of(number: str) -> int:
    return len(number.split(".", 1)[1]) if "." in number else 0


def render(value: float, decimals: int, *, thousands: bool) -> str:
    """``value`` rounded half-even to ``decimals`` places (as the page writes it)."""
    rounded = Decimal(repr(value)).quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_EVEN)
    if rounded.is_zero():
        rounded = abs(rounded)  # -0.00003 is "0", never "-0"
    return f"{rounded:,.{decimals}f}" if thousands else f"{rounded:.{decimals}f}"


def suggested(value: float) -> str:
    """How a figure is written when its quote must change precision: two significant digits, whole above 10."""
    magnitude = abs(value)
    decimals = 0 if magnitude >= 10 or value == 0 else max(1, 1 - math.floor(math.log10(magnitude)))
    return render(value, decimals, thousands=magnitude >= 10_000)


def expected_text(quote: Quote, figure: dict[str, Any]) -> str:
    """What the quote should say for ``figure``, at the precision the page chose."""
    value = float(figure["value"])
    text = render(value, decimals_of(quote.number), thousands="," in quote.number)
    if value != 0 and figure["unit"] in TIMES and not any(ch in "123456789" for ch in text):
        return suggested(value)  # a time the page's precision would print as 0 ms
    return text


def unit_problem(quote: Quote, figure: dict[str, Any]) -> str | None:
    unit = figure["unit"]
    if unit in UNITLESS:
        return None
    if not quote.after.startswith(f" {unit}") and not quote.after.startswith(unit):
        return f"{quote.where}: the figure is in {unit!r} but the page writes {quote.number}{quote.after[:12]!r}"
    return None


def problems(quotes: Iterable[Quote], stored: dict[str, Any]) -> list[str]:
    """Why each quote is not what the stored run measured (empty when every quote holds)."""
    figures = figures_by_key(stored)
    modules = stored.get("modules", {})
    found = []
    for quote in quotes:
        if quote.elsewhere:
            if len(quote.name) < 12:
                found.append(f"{quote.where}: a figure from elsewhere must say where it was measured ({quote.name!r})")
            continue
        figure = figures.get((quote.module, quote.name))
        if figure is None:
            names = [name for module, name in figures if module == quote.module]
            hint = f"; {quote.module} has: {', '.join(names)}" if names else f"; no module {quote.module!r} was stored"
            found.append(f"{quote.where}: no figure {quote.name!r} in the stored run{hint}")
            continue
        if modules.get(quote.module, {}).get("quick"):
            found.append(f"{quote.where}: {quote.module} was stored from a --quick run (not a published figure)")
        if not math.isfinite(float(figure["value"])):
            found.append(f"{quote.where}: {quote.name!r} has no value in the stored run ({figure['value']})")
            continue
        expected = expected_text(quote, figure)
        if quote.number != expected:
            said = f"{quote.name!r} is {expected} in the stored run, the page says {quote.number}"
            found.append(f"{quote.where}: {quote.module}: {said}")
        unit = unit_problem(quote, figure)
        if unit:
            found.append(unit)
    return found


def rewrite(path: Path, stored: dict[str, Any]) -> int:
    """Write the stored run's figures into ``path``'s quotes; how many changed."""
    text = path.read_text()
    figures = figures_by_key(stored)
    changed = 0
    for quote in sorted(quotes_in(path, text), key=lambda q: q.start, reverse=True):
        figure = figures.get((quote.module, quote.name))
        if figure is None or not math.isfinite(float(figure["value"])):
            continue
        expected = expected_text(quote, figure)
        if expected != quote.number:
            text = text[: quote.start] + expected + text[quote.end :]
            changed += 1
    if changed:
        path.write_text(text)
    return changed


def quoted_value(module: str, figure: dict[str, Any]) -> str:
    """A figure as a page quotes it: the marker, the value at two significant digits, the unit."""
    unit = "" if figure["unit"] in UNITLESS else f" {figure['unit']}"
    return f"<!-- bench {module}: {figure['name'].strip()} -->{suggested(float(figure['value']))}{unit}"


def table_rows(module: str, stored: dict[str, Any]) -> list[str]:
    """A Markdown table of one module's stored figures, each value marked: a start for a page's table."""
    rows = ["| figure | median | target |", "|---|---|---|"]
    for figure in stored["figures"]:
        if figure["module"] != module:
            continue
        described = figure["name"] + (f" ({figure['note']})" if figure["note"] else "")
        target = (
            "-" if figure.get("target") is None else f"{'≤' if figure['better'] == '<=' else '≥'} {figure['target']:g}"
        )
        rows.append(f"| {described} | {quoted_value(module, figure)} | {target} |")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quoted", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the quoted figures from the stored run")
    parser.add_argument("--stored", type=Path, default=STORED_RUN, help="the stored run (default: %(default)s)")
    parser.add_argument("--table", metavar="MODULE", help="print one module's figures as a marked Markdown table")
    args = parser.parse_args(argv)
    stored = load_stored(args.stored)
    if args.table:
        print("\n".join(table_rows(args.table, stored)))
        return 0
    if args.write:
        for path in pages():
            changed = rewrite(path, stored)
            if changed:
                print(f"{path.relative_to(ROOT)}: {changed} figure(s) rewritten")
    found = problems((q for path in pages() for q in quotes_in(path)), stored)
    found += [f"{where}: a bench marker without a number after it" for p in pages() for where in malformed_markers(p)]
    print("\n".join(found) if found else "every quoted figure is the stored run's")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
