"""Fixtures shared by every test directory, and the order test files run in."""

from collections import defaultdict
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Keep each phase's report on the item, so fixtures can print logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


#: Rough seconds a test takes, by marker: what ordering the files needs, not a measurement.
_DOCKER_SECONDS, _SLOW_SECONDS, _OTHER_SECONDS = 20.0, 8.0, 0.02


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first. ``make test`` spreads whole files over its workers
    in collection order (``--dist loadfile --no-loadscope-reorder``): a Docker file
    reached last would keep one worker busy for minutes while the others idle. The
    weight of a file is its tests' rough time by marker; ties keep the collection order,
    so every worker collects the same order, as pytest-xdist requires."""
    weight: dict[str, float] = defaultdict(float)
    for item in items:
        if item.get_closest_marker("docker"):
            weight[item.nodeid.split("::")[0]] += _DOCKER_SECONDS
        elif item.get_closest_marker("slow"):
            weight[item.nodeid.split("::")[0]] += _SLOW_SECONDS
        else:
            weight[item.nodeid.split("::")[0]] += _OTHER_SECONDS
    first = {f: i for i, f in reversed(list(enumerate(i.nodeid.split("::")[0] for i in items)))}
    items.sort(key=lambda i: (-weight[i.nodeid.split("::")[0]], first[i.nodeid.split("::")[0]]))
