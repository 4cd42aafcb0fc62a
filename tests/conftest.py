"""Fixtures shared by every test directory."""

from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Keep each phase's report on the item, so fixtures can print logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
