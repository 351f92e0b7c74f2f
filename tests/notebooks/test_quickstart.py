"""The quickstart notebook (shipped in the wheel) runs on a real kernel (nbclient), and ``python -m nbmodels demo``
summarises it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.notebooks.running import execute, shown_by_source

MIB = 1024 * 1024


@pytest.mark.slow
def test_the_quickstart_runs_and_the_memory_comes_back(tmp_path: Path) -> None:
    log = tmp_path / "shutdown.jsonl"
    notebook = execute("quickstart.ipynb", tmp_path, NBMODELS_SHUTDOWN_LOG=str(log))
    shown = shown_by_source(notebook)
    loads = next(text for source, text in shown.items() if source.startswith("%load_model clf"))
    assert re.search(r"^clf: Sequential on cpu, [\d,]+ params, 64\.0 MiB", loads, re.M)
    assert re.search(r"^lm: DemoTransformer on cpu", loads, re.M)
    assert "torch.Size([1, 16, 4000]) True" in shown[next(s for s in shown if "inference_mode" in s)]
    listing = shown["table = %list_models\ntable"]
    assert "2 model(s) loaded" in listing and "total" in listing and "process RSS" in listing
    assert "parameters" in shown["%model_info clf"]
    assert "released 1 model(s): clf" in shown["%unload_model clf"]
    assert "released 1 model(s): lm" in shown["report = %model_cleanup"]
    assert "nothing to release" in shown["%model_cleanup"]
    back = re.search(r"\(([\d,]+) bytes back\)", shown[next(s for s in shown if "bytes back" in s)])
    assert back is not None and int(back.group(1).replace(",", "")) >= 0.8 * 64 * MIB

    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) == 1
    assert records[0]["reason"] == "shutdown" and records[0]["released"] == ["tail"]


@pytest.mark.slow
def test_the_demo_command_prints_the_walk_through_and_the_shutdown_record() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "nbmodels", "demo"], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "released 1 model(s): clf" in out and "nothing to release" in out
    assert "the shutdown hook released tail" in out
    record = json.loads(out.strip().splitlines()[-1])
    assert record["reason"] == "shutdown" and record["released"] == ["tail"] and record["pid"] > 0
