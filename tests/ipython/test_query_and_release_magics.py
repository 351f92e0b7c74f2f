"""%list_models, %model_info, %unload_model, %model_cleanup and %magic? on a real InteractiveShell."""

from __future__ import annotations

from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelInfo, ModelManager, ReleaseReport
from nbmodels.core.memory import DeviceMemory
from nbmodels.ipython.magics import NBModelsMagics
from nbmodels.ipython.views import ModelDetails, ModelTable
from tests.ipython.conftest import run


def load_two(ip: InteractiveShell) -> None:
    ip.run_line_magic("load_model", "clf demo:mlp")
    ip.run_line_magic("load_model", "lm demo:transformer")


def test_list_models_assigned_is_data_with_device_memory(ip: InteractiveShell, mgr: ModelManager) -> None:
    load_two(ip)
    run(ip, "table = %list_models")
    table = ip.user_ns["table"]
    assert isinstance(table, ModelTable)
    assert [info.name for info in table] == ["clf", "lm"]
    assert all(isinstance(info, ModelInfo) for info in table)
    cpu = table.devices[0]
    assert cpu.device == "cpu" and cpu.used > 0 and cpu.total and cpu.available
    assert cpu.available <= cpu.total


def test_list_models_shows_text_in_terminals_and_html_in_notebooks(ip: InteractiveShell) -> None:
    load_two(ip)
    table = ip.run_line_magic("models", "")  # the alias
    data, _ = ip.display_formatter.format(table)
    text, page = data["text/plain"], data["text/html"]
    for shown in (text, page):
        assert "clf" in shown and "lm" in shown and "total" in shown
        assert "process RSS" in shown and "available of" in shown
    assert page.count("<table") == 2  # the models and the memory


def test_cuda_devices_show_allocated_reserved_free_total_and_the_context_floor() -> None:
    gib = 1024**3
    cpu = DeviceMemory("cpu", used=2 * gib, total=64 * gib, available=40 * gib)
    cuda = DeviceMemory(
        "cuda:0", used=3 * gib, total=80 * gib, available=70 * gib, reserved=4 * gib, context_floor=gib // 2
    )
    table = ModelTable([], [cpu, cuda])
    text, page = str(table), table._repr_html_()
    for shown in (text, page):
        assert "cuda:0" in shown
        assert "allocated 3.0 GiB" in shown and "reserved 4.0 GiB" in shown
        assert "free 70.0 GiB of 80.0 GiB" in shown and "512.0 MiB" in shown and "CUDA context" in shown
        assert "process RSS 2.0 GiB" in shown and "40.0 GiB available of 64.0 GiB" in shown


def test_bare_list_models_is_shown_by_the_displayhook(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    load_two(ip)
    capsys.readouterr()
    run(ip, "%list_models")
    out = capsys.readouterr().out
    assert "2 model(s) loaded" in out and "memory:" in out


def test_model_info_gives_every_field(ip: InteractiveShell, mgr: ModelManager) -> None:
    ip.run_line_magic("load_model", "clf demo:mlp")
    details = ip.run_line_magic("model_info", "clf")
    assert isinstance(details, ModelDetails) and isinstance(details, ModelInfo)
    assert details.parameters == mgr.info("clf").parameters
    text = str(details)
    for key in ("source", "class", "device", "dtype", "parameters", "size", "load time", "uses", "pinned"):
        assert key in text
    assert "demo:mlp" in text and "Sequential" in details._repr_html_()


def test_unload_shows_the_report_once_and_returns_it(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    load_two(ip)
    capsys.readouterr()
    assert run(ip, "%unload_model clf") is None  # bare: shown by the magic, nothing for Out
    out = capsys.readouterr().out
    assert out.count("released 1 model(s): clf") == 1 and "Out[" not in out
    assert "freed (storages that died): cpu" in out
    assert "clf" not in mgr and "lm" in mgr
    run(ip, "r = %unload_model lm")
    report = ip.user_ns["r"]
    assert isinstance(report, ReleaseReport) and report.released == ("lm",) and report.ok  # still data
    assert capsys.readouterr().out.count("released 1 model(s): lm") == 1
    run(ip, "r")  # and shown on purpose, as any value
    assert "released 1 model(s): lm" in capsys.readouterr().out


def test_cleanup_releases_everything_and_is_idempotent(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    load_two(ip)
    capsys.readouterr()
    run(ip, "r = %model_cleanup")
    assert set(ip.user_ns["r"].released) == {"clf", "lm"} and len(mgr) == 0
    assert "released 2 model(s)" in capsys.readouterr().out
    run(ip, "%model_cleanup")
    assert "nothing to release" in capsys.readouterr().out


def test_cleanup_quiet_shows_nothing_when_all_is_freed(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    load_two(ip)
    capsys.readouterr()
    run(ip, "report = %model_cleanup --quiet")
    report = ip.user_ns["report"]
    assert isinstance(report, ReleaseReport) and len(report.released) == 2
    assert capsys.readouterr().out == ""


def test_cleanup_quiet_still_shows_a_model_that_is_held(
    ip: InteractiveShell, mgr: ModelManager, capsys: pytest.CaptureFixture[str]
) -> None:
    ip.run_line_magic("load_model", "clf demo:mlp")
    ip.user_ns["held"] = mgr.get("clf")  # the user keeps a strong reference
    capsys.readouterr()
    run(ip, "%model_cleanup --quiet")
    out = capsys.readouterr().out
    assert "clf is still alive" in out and "held" in out


class RecordingManager(ModelManager):
    """A real manager whose unload/cleanup remember the release options the magics passed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def unload(self, name: str, **options: Any) -> ReleaseReport:  # type: ignore[override]
        self.calls.append(("unload", options))
        return super().unload(name, **options)

    def cleanup(self, **options: Any) -> ReleaseReport:  # type: ignore[override]
        self.calls.append(("cleanup", options))
        return super().cleanup(**options)


def test_release_options_are_passed_as_asked(ip: InteractiveShell) -> None:
    manager = RecordingManager()
    magics = NBModelsMagics(ip, manager=lambda: manager)
    manager.load("a", "demo:mlp")
    manager.load("b", "demo:mlp")
    magics.unload_model("a --dry-run")
    magics.unload_model("a")
    magics.unload_model("b --force --allow pair --allow results[0]")
    magics.model_cleanup("--quiet")
    magics.model_cleanup("--force --quiet")
    magics.model_cleanup("--wait --quiet")
    manager.load("a", "demo:mlp")
    magics.unload_model("a --force --allow 'results[0]'")  # quoted as in a shell
    plain = {"force": False, "allow": (), "dry_run": False}
    assert manager.calls == [
        ("unload", {**plain, "dry_run": True}),
        ("unload", plain),
        ("unload", {**plain, "force": True, "allow": ("pair", "results[0]")}),
        ("cleanup", {**plain, "wait": False}),
        ("cleanup", {**plain, "force": True, "wait": False}),
        ("cleanup", {**plain, "wait": True}),
        ("unload", {**plain, "force": True, "allow": ("results[0]",)}),
    ]


@pytest.mark.parametrize(
    ("magic", "expected"),
    [
        ("load_model", ["--device", "--dtype", "--kw", "--as", "handle"]),
        ("list_models", ["HTML", "data"]),
        ("models", ["Alias"]),
        ("model_info", ["name"]),
        ("unload_model", ["--force", "ReleaseReport"]),
        ("model_cleanup", ["--force", "--quiet", "--wait"]),
    ],
)
def test_question_mark_shows_the_help(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], magic: str, expected: list[str]
) -> None:
    run(ip, f"%{magic}?")
    out = capsys.readouterr().out
    assert f"%{magic}" in out
    for word in expected:
        assert word in out
