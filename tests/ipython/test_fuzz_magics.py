"""Every magic and every setting, fed hostile and random input: success, or one line that changes nothing.

A real InteractiveShell with the extension loaded. Hypothesis builds lines from
words a user (or an attacker pasting into a notebook) would type: names with
escapes, NUL and bidi overrides, 5,000-character names and sources, ``meta``,
``1e10``, ``builtins:int``, ``--as get_ipython``, keywords that turn a safety
off. The only allowed outcomes are success, or a UsageError of one line with
the manager, the notebook's namespace and the settings unchanged; afterwards
the shell still runs ordinary code. A table of fixed bad inputs runs first, so
the known cases are counted however Hypothesis draws.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from nbmodels import ModelManager
from nbmodels.ipython.extension import current_session

# Not fuzzed: the panel (a widget per call) and worker runners (a process per call); their input is
# checked by the same parser, and the worker start has its own interrupt tests.
MAGICS = [
    "load_model",
    "list_models",
    "models",
    "model_info",
    "unload_model",
    "model_cleanup",
    "model_pin",
    "model_unpin",
    "model_offload",
    "model_to",
]
SETTINGS = [
    "default_device",
    "default_dtype",
    "verbose",
    "shutdown_hook",
    "shutdown_log",
    "shutdown_timeout",
    "handle_sigterm",
    "spare_workers",
    "ray_address",
    "max_memory",
    "max_loaded_models",
    "keep_alive",
    "evict",
]
HOSTILE = [
    "keep",
    "x",
    "reg",
    "\x1b]0;pwned\x07",
    "\x1b[2J",
    "a\x00b",
    "\u202eevil",
    "a" * 300,
    "a" * 5000,
    "get_ipython",
    "__builtins__",
    "_",
    "_i3",
    "In",
    "Out",
    "print",
    "meta",
    "cpu",
    "cuda:7",
    "auto",
    "1e10",
    "-1",
    "nan",
    "inf",
    "forever",
    "0",
    "99999999999d",
    "demo:mlp",
    "demo:nosuch",
    "builtins:int",
    "builtins:print",
    "os:system",
    "/etc/passwd",
    "/dev/zero",
    "'unclosed",
    "weights_only=False",
    "trust_remote_code=True",
    "allow_pickle=1",
    "hidden=8",
    "layers=0",
    "size_mb=1e12",
    "hidden=" + "9" * 401,
]
FLAGS = [
    "--device",
    "--dtype",
    "--kw",
    "--as",
    "--keep-alive",
    "--trust",
    "--pin",
    "--reload",
    "--force",
    "--dry-run",
    "--all",
    "--wait",
    "--quiet",
]


class Expr(str):
    """A value written as a Python expression on the %config line (``float('nan')``), not as its repr."""

    def __repr__(self) -> str:
        return str(self)


SETTING_VALUES: list[Any] = [
    100,
    -1,
    True,
    1e10,
    Expr("float('nan')"),
    Expr("float('inf')"),
    Expr("10**400"),
    "1e10",
    "meta",
    "cuda:7",
    "garbage addr",
    "ray://10.0.0.1:10001",
    "/nonexistent/dir/x.jsonl",
    "x" * 5000,
    "\x1b[2J",
    "cpu=8GiB",
    "cpu=-1",
    "offload",
    "sideways",
    "",
    "30m",
    0,
    9,
]

TABLE = [(magic, " ".join(words)) for magic in MAGICS for words in (["\x1b[2J"], ["a" * 5000])] + [
    ("load_model", "x demo:mlp --as get_ipython"),
    ("load_model", "x demo:mlp --as __builtins__"),
    ("load_model", "x demo:mlp --as In"),
    ("load_model", "x demo:mlp --as _"),
    ("load_model", "x demo:mlp --as _i3"),
    ("load_model", "x demo:mlp --as _12"),
    ("load_model", "x demo:mlp --as print"),
    ("load_model", "x demo:mlp --as len"),
    ("load_model", "x demo:mlp --as exit"),
    ("load_model", "x demo:mlp --as match"),
    ("load_model", "x demo:mlp --device meta"),
    ("load_model", "x demo:mlp --keep-alive 1e10"),
    ("load_model", "x demo:mlp --keep-alive nan"),
    ("load_model", "x demo:mlp --keep-alive 99999999999d"),
    ("load_model", "x builtins:int"),
    ("load_model", "x builtins:print"),
    ("load_model", "x " + "a" * 5000),
    ("load_model", "x /" + "a" * 300),
    ("load_model", "x demo:mlp --kw weights_only=False"),
    ("load_model", "x demo:mlp --kw trust_remote_code=True"),
    ("load_model", "x demo:mlp --kw allow_pickle=True"),
    ("load_model", "x demo:mlp --kw use_safetensors=False"),
    ("load_model", "x\x1b[2J demo:mlp"),
    ("load_model", "x\x00 demo:mlp"),
    ("load_model", "\u202ex demo:mlp"),
    ("load_model", "a" * 201 + " demo:mlp"),
    ("model_to", "keep meta"),
    ("model_to", "keep meta:0"),
    ("model_to", "keep cuda:7"),
]
CONFIG_TABLE = [
    ("keep_alive", "1e10"),
    ("keep_alive", 1e10),
    ("keep_alive", "99999999999d"),
    ("spare_workers", 100),
    ("spare_workers", -1),
    ("spare_workers", True),
    ("shutdown_log", "/nonexistent/dir/x.jsonl"),
    ("ray_address", "garbage addr"),
    ("ray_address", "ray://x"),
    ("ray_address", "h:99999"),
    ("max_loaded_models", -3),
    ("max_memory", "cpu=-1"),
    ("evict", "sideways"),
]

ONE_LINE = {"answered": 0, "succeeded": 0}


def snapshot(shell: InteractiveShell, manager: ModelManager) -> tuple[Any, ...]:
    infos = tuple((i.name, i.devices, i.pinned, i.keep_alive, i.loaded_at) for i in manager.list())
    names = ("get_ipython", "In", "Out", "_", "exit", "quit", "__builtins__")
    namespace = tuple((key, id(shell.user_ns.get(key))) for key in names)
    session = current_session(shell)
    assert session is not None
    values = tuple((trait, repr(getattr(session.settings, trait))) for trait in SETTINGS)
    bindings = tuple(sorted(key for key in shell.user_ns if not key.startswith("_")))
    return infos, tuple(manager.registered()), tuple(manager.loading()), namespace, values, bindings


def check_one(shell: InteractiveShell, manager: ModelManager, magic: str, line: str) -> None:
    before = snapshot(shell, manager)
    try:
        shell.run_line_magic(magic, line)
    except UsageError as exc:
        text = str(exc)
        assert "\n" not in text, f"%{magic} {line[:80]!r}: a message of several lines"
        assert "\x1b" not in text or "\x1b" in line, text  # no escape the user did not type
        assert snapshot(shell, manager) == before, f"%{magic} {line[:80]!r} failed but changed something"
        ONE_LINE["answered"] += 1
    else:
        ONE_LINE["succeeded"] += 1
    still_works(shell)


def still_works(shell: InteractiveShell) -> None:
    result = shell.run_cell("__nbm_check = print is builtins.print and len([1]) == 1 and callable(get_ipython)")
    assert result.error_in_exec is None and result.error_before_exec is None
    assert shell.user_ns.pop("__nbm_check") is True


def check_setting(
    shell: InteractiveShell, manager: ModelManager, trait: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    session = current_session(shell)
    assert session is not None
    before = getattr(session.settings, trait)
    models = snapshot(shell, manager)[:3]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        shell.run_line_magic("config", f"NBModels.{trait} = {value!r}")
    after = getattr(session.settings, trait)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    if errors:  # IPython's %config shows a TraitError as one logged line, and keeps the value
        assert len(errors) == 1 and "\n" not in errors[0].getMessage(), [r.getMessage() for r in errors]
        assert repr(after) == repr(before), f"{trait}={value!r} was refused but changed"
        ONE_LINE["answered"] += 1
    else:
        ONE_LINE["succeeded"] += 1
    if errors:  # nothing about the models changed either
        assert snapshot(shell, manager)[:3] == models
    setattr(session.settings, trait, session.settings.traits()[trait].default_value)  # the next example starts clean
    still_works(shell)


@pytest.fixture
def shell(ip: InteractiveShell, mgr: ModelManager) -> Iterator[InteractiveShell]:
    ip.run_cell("import builtins")
    ip.run_line_magic("load_model", "keep demo:mlp --kw hidden=8")
    mgr.register("reg", "demo:mlp")
    yield ip


@pytest.mark.parametrize(("magic", "line"), TABLE, ids=[f"%{m} {line[:40]!r}" for m, line in TABLE])
def test_each_known_bad_input_is_one_line_and_changes_nothing(
    shell: InteractiveShell, mgr: ModelManager, magic: str, line: str
) -> None:
    before = snapshot(shell, mgr)
    with pytest.raises(UsageError) as caught:
        shell.run_line_magic(magic, line)
    assert "\n" not in str(caught.value)
    assert snapshot(shell, mgr) == before
    ONE_LINE["answered"] += 1
    still_works(shell)


@pytest.mark.parametrize(("trait", "value"), CONFIG_TABLE, ids=[f"{t}={v!r}"[:50] for t, v in CONFIG_TABLE])
def test_each_known_bad_setting_is_one_line_and_changes_nothing(
    shell: InteractiveShell, mgr: ModelManager, trait: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    session = current_session(shell)
    assert session is not None
    before = repr(getattr(session.settings, trait))
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        shell.run_line_magic("config", f"NBModels.{trait} = {value!r}")
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    assert repr(getattr(session.settings, trait)) == before
    ONE_LINE["answered"] += 1


words = st.one_of(
    st.sampled_from(HOSTILE), st.sampled_from(FLAGS), st.text(max_size=12).filter(lambda t: t.strip() == t)
)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(magic=st.sampled_from(MAGICS), line=st.lists(words, max_size=6).map(" ".join))
def test_any_magic_line_succeeds_or_is_one_line_that_changes_nothing(
    shell: InteractiveShell, mgr: ModelManager, magic: str, line: str
) -> None:
    if "--force" in line and magic in ("model_cleanup", "unload_model"):
        line = line.replace("--force", "--dry-run")  # a forced cleanup may remove the fixture's own holders
    check_one(shell, mgr, magic, line)
    if "keep" not in mgr:  # a successful unload: put the fixture back for the next example
        shell.run_line_magic("load_model", "keep demo:mlp --kw hidden=8")


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(trait=st.sampled_from(SETTINGS), value=st.sampled_from(SETTING_VALUES))
def test_any_setting_is_taken_or_refused_in_one_line(
    shell: InteractiveShell, mgr: ModelManager, trait: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    check_setting(shell, mgr, trait, value, caplog)


def test_report_the_count(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a check: prints how many bad inputs were answered in one line (run with -s to see it)."""
    with capsys.disabled():
        print(
            f"\nfuzz and table: {ONE_LINE['answered']} bad inputs answered in one line, "
            f"{ONE_LINE['succeeded']} succeeded"
        )
    assert builtins.print is print
