"""Find the examples in Markdown pages, run them in a real IPython shell, and compare what they print.

An example is a fenced ``python`` block, or a ``text`` block that is an IPython session (its first line
starts ``In [N]:``). An HTML comment right before a block, which the rendered page does not show, changes
how it is run:

- ``<!-- example: skip REASON -->``: not run here (a GPU, a Ray cluster, a terminal); the test is skipped
  with the reason, so the count of such blocks shows in every run;
- ``<!-- example: loose -->``: timings (a number followed by s, ms or µs), and every number on a line that
  reads RSS, the system's available memory or a worker (its pid, its memory), match any number; whether a
  release needed a gc pass (``, with a gc pass`` after its time) depends on what the collector already did;
- ``<!-- example: setup ... -->``: the Python between ``setup`` and ``-->`` runs first, unseen (files the
  example reads, a function it calls).

In the expected output, a line ``...`` matches any number of lines and ``...`` inside a line any text,
as doctest's ELLIPSIS does. Runs of spaces count as one space and runs of dashes as one run, so a table
whose columns widen with other numbers still matches.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from IPython.core.interactiveshell import InteractiveShell

_FENCE = re.compile(r"^```(\w*)\s*$")
_MARKER = re.compile(r"<!--\s*example:\s*(skip|loose|setup)\b(.*?)-->", re.S)
_IN = re.compile(r"^In \[(\d+)\]: ?(.*)$")
_CONTINUATION = re.compile(r"^\s+\.\.\.: ?(.*)$")
_TIME = re.compile(r"\d[\d,]*(?:\.\d+)?(?=\s?(?:s|ms|µs)\b)")
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")
_VOLATILE_LINE = re.compile(r"RSS|available|worker")


@dataclass
class Cell:
    number: int
    source: str
    expected: list[str] = field(default_factory=list)


@dataclass
class Example:
    page: Path
    line: int  # of the opening fence, 1-based
    kind: str  # "python" or "session"
    body: str
    skip: str = ""
    loose: bool = False
    setup: str = ""

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"

    def cells(self) -> list[Cell]:
        """The session's cells: each ``In [N]:`` line with its ``...:`` continuations, and the output after it."""
        cells: list[Cell] = []
        for text in self.body.splitlines():
            start = _IN.match(text)
            more = _CONTINUATION.match(text)
            if start:
                cells.append(Cell(int(start.group(1)), start.group(2)))
            elif more and cells and not cells[-1].expected:
                cells[-1].source += "\n" + more.group(1)
            elif cells:
                cells[-1].expected.append(text)
        return cells


def find_examples(page: Path) -> list[Example]:
    """Every example of a page, in order, with the markers of the comment right before each."""
    lines = page.read_text(encoding="utf-8").splitlines()
    examples = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = "\n".join(lines[i + 1 : end])
        before = "\n".join(lines[max(0, i - 40) : i])
        marker = _last_marker(before)
        language = fence.group(1)
        session = language == "text" and bool(_IN.match(lines[i + 1] if i + 1 < end else ""))
        if language == "python" or session or marker:
            example = Example(page, i + 1, "python" if language == "python" else "session", body)
            for kind, rest in marker:
                if kind == "skip":
                    example.skip = " ".join(rest.split()) or "(no reason given)"
                elif kind == "loose":
                    example.loose = True
                else:
                    example.setup = rest
            if not (language == "python" or session) and not example.skip:
                example.skip = "(a marker on a block that is neither Python nor an IPython session)"
            examples.append(example)
        i = end + 1
    return examples


def _last_marker(before: str) -> list[tuple[str, str]]:
    """The markers in the HTML comments that end right before a fence (blank lines between allowed)."""
    found: list[tuple[str, str]] = []
    text = before.rstrip()
    while text.endswith("-->"):
        start = text.rfind("<!--")
        match = _MARKER.fullmatch(text[start:])
        if match is None:
            break
        found.append((match.group(1), match.group(2)))
        text = text[:start].rstrip()
    return found


def run_cell(shell: InteractiveShell, source: str, number: int | None = None, hidden: bool = False) -> tuple[str, bool]:
    """Run one cell as a notebook would (stored in the history, numbered as the page numbers it); a hidden
    setup cell is kept out of the history, so the page's own numbers stay free."""
    if number is not None:
        shell.execution_count = number
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out), warnings.catch_warnings():
        # As in a notebook, a library's warning is shown, not raised (the suite makes warnings errors).
        warnings.simplefilter("default")
        result = shell.run_cell(source, store_history=not hidden)
    return out.getvalue(), result.success


def _normalize(line: str) -> str:
    line = re.sub(r"-{3,}", "---", line.rstrip())
    return re.sub(r"\s+", " ", line).strip()


def _pattern(line: str, loose: bool) -> str:
    parts = line.split("...")
    escaped = []
    for part in parts:
        text = re.escape(part)
        if loose:
            numbers = _NUMBER if _VOLATILE_LINE.search(line) else _TIME
            text = ""
            last = 0
            for match in numbers.finditer(part):
                text += re.escape(part[last : match.start()]) + r"\d[\d,.]*"
                last = match.end()
            text += re.escape(part[last:])
        escaped.append(text)
    return ".*".join(escaped)


def matches(expected: list[str], actual: str, loose: bool) -> bool:
    """Whether the printed text is what the page shows (blank lines and spacing aside)."""
    if loose:
        actual = actual.replace(", with a gc pass", "")
        expected = [line.replace(", with a gc pass", "") for line in expected]
    want = [_normalize(line) for line in expected if line.strip()]
    got = [_normalize(line) for line in actual.splitlines() if line.strip()]
    regex = ""
    for line in want:
        regex += r"(?:[^\n]*\n)*?" if line == "..." else _pattern(line, loose) + r"\n"
    return re.fullmatch(regex, "".join(g + "\n" for g in got)) is not None
