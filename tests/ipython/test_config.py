"""NBModels settings: built-in defaults, NBMODELS_* environment, IPython config and %config."""

from __future__ import annotations

import logging

import pytest
from IPython.core.interactiveshell import InteractiveShell

from nbmodels.ipython.config import ENVIRONMENT, NBModels
from nbmodels.ipython.extension import current_session


def test_built_in_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)
    settings = NBModels()
    assert settings.default_device == "" and settings.default_dtype == ""
    assert settings.verbose and settings.shutdown_hook and settings.handle_sigterm
    assert settings.shutdown_log == "" and settings.shutdown_timeout == 2.0


def test_environment_variables_are_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBMODELS_DEVICE", "cpu")
    monkeypatch.setenv("NBMODELS_DTYPE", "bf16")
    monkeypatch.setenv("NBMODELS_VERBOSE", "0")
    monkeypatch.setenv("NBMODELS_SHUTDOWN_HOOK", "false")
    monkeypatch.setenv("NBMODELS_SHUTDOWN_LOG", "/tmp/x.jsonl")
    monkeypatch.setenv("NBMODELS_SHUTDOWN_TIMEOUT", "1.5")
    monkeypatch.setenv("NBMODELS_HANDLE_SIGTERM", "no")
    settings = NBModels()
    assert settings.default_device == "cpu" and settings.default_dtype == "bf16"
    assert not settings.verbose and not settings.shutdown_hook and not settings.handle_sigterm
    assert settings.shutdown_log == "/tmp/x.jsonl" and settings.shutdown_timeout == 1.5
    assert settings.load_defaults() == {"device": "cpu", "dtype": "bf16"}


def test_a_bad_environment_value_is_logged_and_ignored(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NBMODELS_VERBOSE", "maybe")
    monkeypatch.setenv("NBMODELS_SHUTDOWN_TIMEOUT", "forever")
    with caplog.at_level(logging.WARNING, logger="nbmodels"):
        settings = NBModels()
        assert settings.verbose and settings.shutdown_timeout == 2.0
    assert "NBMODELS_VERBOSE" in caplog.text and "NBMODELS_SHUTDOWN_TIMEOUT" in caplog.text


def test_percent_config_lists_and_sets_the_traits(ip: InteractiveShell, capsys: pytest.CaptureFixture[str]) -> None:
    ip.run_line_magic("config", "NBModels")
    out = capsys.readouterr().out
    for trait in ENVIRONMENT:
        assert f"NBModels.{trait}" in out
    ip.run_line_magic("config", "NBModels.shutdown_timeout = 1.25")
    session = current_session(ip)
    assert session is not None and session.settings.shutdown_timeout == 1.25


def test_a_timeout_out_of_range_is_clamped_and_the_extension_still_reloads(
    ip: InteractiveShell, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="nbmodels"):
        ip.run_line_magic("config", "NBModels.shutdown_timeout = 99")
    assert "shutdown_timeout" in caplog.text
    ip.run_line_magic("reload_ext", "nbmodels")
    session = current_session(ip)
    assert session is not None and session.settings.shutdown_timeout == 30.0


def test_profile_config_beats_the_environment(ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBMODELS_DTYPE", "fp16")
    ip.run_line_magic("unload_ext", "nbmodels")
    ip.config.NBModels.default_dtype = "bf16"  # what c.NBModels.default_dtype in ipython_config.py does
    ip.run_line_magic("load_ext", "nbmodels")
    session = current_session(ip)
    assert session is not None and session.settings.default_dtype == "bf16"


def test_a_bad_environment_value_that_the_profile_overrides_is_not_warned_about(
    ip: InteractiveShell, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NBMODELS_DEVICE", "gpu")
    monkeypatch.setenv("NBMODELS_SHUTDOWN_TIMEOUT", "forever")
    ip.run_line_magic("unload_ext", "nbmodels")
    ip.config.NBModels.default_device = "cpu"
    capsys.readouterr()
    ip.run_line_magic("load_ext", "nbmodels")
    err = capsys.readouterr().err.splitlines()
    assert err == ["nbmodels: NBMODELS_SHUTDOWN_TIMEOUT='forever' is not a number from 0.05 to 30; using 2"]
    session = current_session(ip)
    assert session is not None and session.settings.load_defaults() == {"device": "cpu"}
    assert session.settings.origin("default_device") == "NBModels.default_device"


@pytest.mark.parametrize(
    ("trait", "value", "said"),
    [
        ("spare_workers", 100, "NBModels.spare_workers = 100 in the IPython configuration is refused ("),
        ("shutdown_timeout", "forever", "NBModels.shutdown_timeout = 'forever' in the IPython configuration is"),
    ],
)
def test_a_bad_profile_value_is_one_warning_and_the_extension_still_loads(
    ip: InteractiveShell, capsys: pytest.CaptureFixture[str], trait: str, value: object, said: str
) -> None:
    ip.run_line_magic("unload_ext", "nbmodels")
    ip.config.NBModels[trait] = value  # what c.NBModels.<trait> = value in ipython_config.py does
    ip.config.NBModels.default_dtype = "bf16"  # a good value beside it is kept
    capsys.readouterr()
    try:
        ip.run_line_magic("load_ext", "nbmodels")
        err = capsys.readouterr().err.splitlines()
        session = current_session(ip)
        assert session is not None
        default = session.settings.trait_defaults(trait)
        assert len(err) == 1 and err[0].startswith(f"nbmodels: {said}"), err
        assert err[0].endswith(f"; using {default!r}")
        assert getattr(session.settings, trait) == default and session.settings.default_dtype == "bf16"
        assert ip.config.NBModels[trait] == value  # the shell's configuration is the user's: left as it was
        ip.run_line_magic("config", "NBModels.verbose = False")  # %config still reaches the settings
        assert session.settings.verbose is False
    finally:
        del ip.config.NBModels[trait]
        del ip.config.NBModels["default_dtype"]
