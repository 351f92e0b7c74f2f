"""What the panel draws, checked as text: memory bars (CUDA ones from recorded readings),
cells, escaping, status lines and the options box."""

from __future__ import annotations

import re

import pytest

from nbmodels import InvalidArgumentError, ModelManager
from nbmodels.core.holders import Action, RemovalPlan
from nbmodels.core.memory import DeviceMemory, device_readings
from nbmodels.core.reports import ReleaseReport, StillAlive
from nbmodels.widgets import render
from nbmodels.widgets.options import parse_options

GIB = 1024**3
MIB = 1024**2


def widths(html: str, segment: str) -> list[float]:
    return [float(w) for w in re.findall(rf'nbm-seg-{segment}[^"]*" style="width:([\d.]+)%"', html)]


def test_the_cpu_bar_shows_this_process_against_the_machine() -> None:
    cpu = DeviceMemory("cpu", used=2 * GIB, total=16 * GIB, available=10 * GIB)
    html = render.memory_bars([cpu], {"cpu": 1 * GIB})
    assert 'data-used="2147483648"' in html
    assert widths(html, "models") == [6.25]  # 1 GiB of 16
    assert widths(html, "process") == [6.25]  # the other 1 GiB of the RSS
    assert widths(html, "other") == [25.0]  # 6 GiB - 2 GiB of this process
    assert "RSS <b>2.0 GiB</b> · models 1.0 GiB · machine 6.0 GiB / 16.0 GiB used" in html
    assert "context floor" not in html


def test_a_cuda_bar_marks_the_context_floor() -> None:
    # A reading as device_readings() returns it on an 80 GiB card with a 0.5 GiB context.
    gpu = DeviceMemory(
        "cuda:0",
        used=4 * GIB,
        total=80 * GIB,
        available=80 * GIB - 6 * GIB - 512 * MIB,
        reserved=6 * GIB,
        context_floor=512 * MIB,
    )
    cpu = DeviceMemory("cpu", used=GIB, total=16 * GIB, available=8 * GIB)
    html = render.memory_bars([cpu, gpu], {"cuda:0": 3 * GIB}, cuda_devices=1)
    assert 'class="nbm-bar-row nbmodels-bar-cuda-0" data-device="cuda:0"' in html
    assert f'data-used="{4 * GIB}" data-reserved="{6 * GIB}" data-floor="{512 * MIB}"' in html
    assert widths(html, "floor") == [0.62]
    assert widths(html, "gpu-models") == [3.75]
    assert widths(html, "allocated") == [1.25]
    assert widths(html, "reserved") == [2.5]
    assert 'class="nbm-floor-mark" style="left:0.62%"' in html
    assert "allocated <b>4.0 GiB</b> · reserved 6.0 GiB · context floor 512.0 MiB" in html
    assert "CUDA context floor (not returnable)" in html


def test_a_gpu_without_a_context_is_named_not_drawn() -> None:
    cpu = DeviceMemory("cpu", used=GIB, total=16 * GIB, available=8 * GIB)
    html = render.memory_bars([cpu], {}, cuda_devices=2)
    assert html.count("no CUDA context in this process yet") == 2
    assert "nbmodels-bar-cuda-1" in html


def test_real_readings_render() -> None:
    html = render.memory_bars(device_readings(), {})
    assert "nbmodels-bar-cpu" in html


def test_names_are_escaped_and_made_safe_for_css() -> None:
    manager = ModelManager()
    try:
        manager.load("<b>x</b>", "demo:mlp", hidden=8)
        cells = render.row_cells(manager.info("<b>x</b>"), largest=1)
        assert "<b>x</b>" not in cells.replace("<b>&lt;b&gt;x&lt;/b&gt;</b>", "")
        assert "&lt;b&gt;x&lt;/b&gt;" in cells
        assert render.css_name("<b>x</b>") == "-b-x--b-"
        assert render.css_name("org/model.v2:latest") == "org-model-v2-latest"
    finally:
        manager.cleanup()


def test_compact_parameter_counts() -> None:
    assert render.compact_count(None) == "?"
    assert render.compact_count(999) == "999"
    assert render.compact_count(924_928) == "925K"
    assert render.compact_count(33_987_466) == "34M"
    assert render.compact_count(7_241_732_096) == "7.24B"


def test_the_summary_adds_up_per_device() -> None:
    assert render.summary([], []) == "no models loaded"
    assert render.summary([], ["lm"]) == "0 models · loading lm"


def _report(still_alive: tuple[StillAlive, ...] = ()) -> ReleaseReport:
    return ReleaseReport(
        released=("m",),
        freed_bytes={} if still_alive else {"cpu": 8 * MIB},
        rss_before=100 * MIB,
        rss_after=92 * MIB,
        cuda_allocated_before={},
        cuda_allocated_after={},
        still_alive=still_alive,
        errors={},
        seconds=0.004,
        gc_collected=False,
        cuda_cache_emptied=False,
    )


def test_a_report_with_a_survivor_is_a_warning_that_names_the_holder() -> None:
    text, kind = render.report_text(_report())
    assert kind == "ok"
    assert text.startswith("released 1 model(s): m · freed (storages that died): cpu 8.0 MiB")
    plan = RemovalPlan("m", "the model", (Action("Out[3]", "output", "the model", "remove Out[3]", "del Out[3]"),))
    text, kind = render.report_text(_report((StillAlive("m", plan),)))
    assert kind == "warn"
    assert "m is still alive, held by: Out[3]" in text
    assert 'data-kind="warn"' in render.status_line(text, kind)


def test_status_lines_escape_messages() -> None:
    assert "&lt;script&gt;" in render.status_line("<script>", "error")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("  ", {}),
        ("size_mb=64", {"size_mb": 64}),
        ("size_mb=64, layers=3", {"size_mb": 64, "layers": 3}),
        ("dtype=float16, pin=True", {"dtype": "float16", "pin": True}),
        ("name='a b', sizes=[1, 2]", {"name": "a b", "sizes": [1, 2]}),
        ("scale=-0.5", {"scale": -0.5}),
    ],
)
def test_options_are_literals(text: str, expected: dict[str, object]) -> None:
    assert parse_options(text) == expected


@pytest.mark.parametrize(
    "text", ["64", "size_mb=", "a=1), print(2", "x=__import__('os').system('true')", "**kw", "a=1, a=2"]
)
def test_options_that_are_not_keyword_literals_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgumentError):
        parse_options(text)


def test_packed_weights_it_cannot_measure_show_as_unknown_not_as_a_count() -> None:
    import warnings

    import torch

    def lstm() -> torch.nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = torch.nn.Sequential(torch.nn.LSTM(16, 16))
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.LSTM}, dtype=torch.qint8)

    manager = ModelManager()
    try:
        manager.load("rnn", lstm)
        cells = render.row_cells(manager.info("rnn"), largest=1)
        assert 'title="not counted: packed weights">?</div>' in cells
        assert "size unknown: packed weights" in cells
    finally:
        manager.cleanup()
