"""The benchmark harness runs, prints its table and writes every figure with a value.

Quick mode shrinks sizes and rounds: this checks the harness and that each benchmark
really measures something, never how fast anything is (speed lives in ``make bench``).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.__main__ import discover, merged, table
from benchmarks.common import Figure, percentile
from benchmarks.quoted import malformed_markers, problems, quotes_in, rewrite

ROOT = Path(__file__).resolve().parent.parent


def bench(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_core_run_prints_the_table_and_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench" / "figures.json"
    done = bench("core", "--quick", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr

    data = json.loads(out.read_text())
    assert data["quick"] is True
    assert data["errors"] == {}
    figures = data["figures"]
    names = [f["name"] for f in figures]
    assert len(figures) >= 7
    assert len(set(names)) == len(names)
    for figure in figures:
        assert figure["module"] == "core"
        assert isinstance(figure["value"], float | int) and math.isfinite(figure["value"]), figure
        assert figure["unit"], figure
        if figure["target"] is not None:
            assert figure["meets_target"] in (True, False), figure
    for expected in ("load()", "get()", "list() with", "unload()", "cleanup()", "during", "RSS given back"):
        assert any(expected in name for name in names), (expected, names)
    # A ratio and a fraction measured for real are positive; the RSS fraction was read in a subprocess.
    assert all(f["value"] > 0 for f in figures if f["unit"] in ("ratio", "fraction", "µs"))

    lines = done.stdout.splitlines()
    assert lines[0].split() == ["figure", "median", "unit", "target", "meets", "note"]
    for name in names:
        assert any(line.startswith(name) for line in lines), name
    assert "quick run" in lines[-1]


@pytest.mark.slow
def test_quick_reliability_run_counts_real_trials_and_meets_every_target(tmp_path: Path) -> None:
    out = tmp_path / "reliability.json"
    done = bench("reliability", "--quick", "--check", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr

    data = json.loads(out.read_text())
    assert data["errors"] == {}
    figures = {f["name"]: f for f in data["figures"]}
    assert len(figures) == 7
    sigkill = [f for name, f in figures.items() if "SIGKILL" in name]
    assert len(sigkill) == 1 and sigkill[0]["target"] is None
    assert sigkill[0]["value"] == 0 and sigkill[0]["note"].startswith("0/1 lines written")
    targeted = [f for f in figures.values() if f["target"] is not None]
    assert len(targeted) == 6
    for figure in targeted:  # trials that came out right "of N", with the counts in the note
        assert figure["unit"] == f"of {figure['target']}" and figure["better"] == ">=", figure
        assert figure["value"] == figure["target"] >= 1 and figure["meets_target"] is True, figure
        assert "first failure" not in figure["note"], figure
    for case in ("shutdown_kernel(now=False)", "restart_kernel(now=False)", "time.sleep(60)", "SIGTERM"):
        assert any(case in name and "1/1 kernels right" in f["note"] for name, f in figures.items()), case


def test_list_names_the_benchmark_modules_with_core_first() -> None:
    done = bench("--list", timeout=60)
    assert done.returncode == 0, done.stderr
    modules = done.stdout.split()
    assert modules == discover()
    assert modules[0] == "core"
    assert "common" not in modules


def test_an_unknown_module_is_a_usage_error() -> None:
    done = bench("nosuchbenchmark", timeout=60)
    assert done.returncode == 2
    assert "no benchmark module nosuchbenchmark" in done.stderr


def test_table_marks_a_missed_target_and_a_figure_without_one() -> None:
    rows = [
        ("core", Figure("fast enough", 0.5, "ms", target=1.0)),
        ("core", Figure("too slow", 2.0, "ms", target=1.0, note="why")),
        ("core", Figure("given back", 0.9, "fraction", target=0.98, better=">=")),
        ("core", Figure("informative", 3.0, "ms")),
    ]
    lines = table(rows).splitlines()
    cells = {line.split("  ")[0]: line for line in lines[2:]}
    assert " yes" in cells["fast enough"]
    assert " NO " in cells["too slow"] and cells["too slow"].endswith("why")
    assert ">= 0.98" in cells["given back"] and " NO" in cells["given back"]
    assert "yes" not in cells["informative"] and "NO" not in cells["informative"]


def test_percentile_returns_a_measured_sample() -> None:
    samples = [float(i) for i in range(1, 101)]
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 0.5) == 50.0
    assert percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 0.5)


def stored_run(*figures: tuple[str, str, float, str], quick_modules: tuple[str, ...] = ()) -> dict[str, Any]:
    modules = {module for module, *_ in figures}
    return {
        "modules": {m: {"quick": m in quick_modules, "started": "2026-12-06T05:00:00+00:00"} for m in modules},
        "figures": [{"module": m, "name": n, "value": v, "unit": u} for m, n, v, u in figures],
        "errors": {},
    }


def test_a_quoted_figure_is_checked_at_the_precision_the_page_writes(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "report <!-- bench core: report -->43 ms, get <!-- bench core: get() -->0.41 µs,\n"
        "ratio <!-- bench core: load() / direct -->0.997 and <!-- bench force_heavy: objects -->436,144 objects\n"
    )
    stored = stored_run(
        ("core", "report", 43.4, "ms"),
        ("core", "get()", 0.4149, "µs"),
        ("core", "load() / direct", 0.99712, "ratio"),
        ("force_heavy", "objects", 436144, "objects"),
    )
    quotes = list(quotes_in(page))
    assert [q.number for q in quotes] == ["43", "0.41", "0.997", "436,144"]
    assert problems(quotes, stored) == []


def test_a_figure_that_changed_is_reported_with_both_numbers_and_rewritten(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "| a | <!-- bench core: report -->43 ms | ≤ 150 ms |\n| b | <!-- bench core: tiny -->0.5 ms |\n"
        "| c | <!-- bench core: naive -->0 |\n"
    )
    stored = stored_run(
        ("core", "report", 51.6, "ms"), ("core", "tiny", 0.031, "ms"), ("core", "naive", -2.6e-5, "fraction")
    )
    found = problems(quotes_in(page), stored)
    assert len(found) == 2
    assert "'report' is 52 in the stored run, the page says 43" in found[0]
    assert "'tiny' is 0.031 in the stored run, the page says 0.5" in found[1]  # never printed as 0.0

    assert rewrite(page, stored) == 2
    assert page.read_text() == (
        "| a | <!-- bench core: report -->52 ms | ≤ 150 ms |\n| b | <!-- bench core: tiny -->0.031 ms |\n"
        "| c | <!-- bench core: naive -->0 |\n"  # a fraction that rounds to 0 is 0 (never "-0")
    )
    assert problems(quotes_in(page), stored) == []


def test_a_quote_with_the_wrong_unit_an_unknown_figure_or_a_quick_run_is_refused(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- bench core: report -->43 µs\n<!-- bench core: reprot -->43 ms\n<!-- bench policy: wake -->0 wake-ups\n"
        "<!-- bench elsewhere: gpu -->9 ms\n<!-- bench elsewhere: an H100 run of scripts/gpu_check.py -->9 ms\n"
    )
    stored = stored_run(("core", "report", 43.0, "ms"), ("policy", "wake", 0, "wake-ups"), quick_modules=("policy",))
    found = problems(quotes_in(page), stored)
    assert len(found) == 4, found
    assert "the figure is in 'ms' but the page writes 43" in found[0]
    assert "no figure 'reprot' in the stored run; core has: report" in found[1]
    assert "policy was stored from a --quick run" in found[2]
    assert "must say where it was measured" in found[3]


def test_a_marker_without_a_number_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("fine <!-- bench core: report -->43 ms\nbroken <!-- bench core: report --> 43 ms\n")
    assert malformed_markers(page) == ["page.md:2"]


def test_update_replaces_the_modules_run_now_and_keeps_the_others() -> None:
    stored = {
        "modules": {"core": {"quick": False, "seconds": 10.0}, "policy": {"quick": False, "seconds": 20.0}},
        "figures": [
            {"module": "core", "name": "get()", "value": 0.4},
            {"module": "policy", "name": "wake", "value": 0},
        ],
        "errors": {"policy": "old failure"},
    }
    new = {
        "command": "python -m benchmarks policy",
        "modules": {"policy": {"quick": False, "seconds": 25.0}},
        "figures": [{"module": "policy", "name": "wake", "value": 1}],
        "errors": {"lab": "RuntimeError: no browser"},
    }
    result = merged(stored, new)
    assert result["figures"] == [
        {"module": "core", "name": "get()", "value": 0.4},
        {"module": "policy", "name": "wake", "value": 1},
    ]
    assert list(result["modules"]) == ["core", "policy"] and result["seconds"] == 35.0
    assert result["errors"] == {"lab": "RuntimeError: no browser"}
