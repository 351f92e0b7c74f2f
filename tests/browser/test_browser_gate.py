"""Without Chromium the browser test skips with its reason, except under CI, where it fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import test_panel_browser


def test_a_missing_browser_is_a_visible_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_panel_browser, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed at /nonexistent/chromium"):
        test_panel_browser._require_browser()


def test_a_missing_browser_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(test_panel_browser, "CHROMIUM", Path("/nonexistent/chromium"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true, so the browser test may not be skipped"):
        test_panel_browser._require_browser()
