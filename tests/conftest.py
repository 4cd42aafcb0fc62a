"""Fixtures shared by every test directory, and the order test files run in."""

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """Keep each phase's report on the item, so fixtures can print logs of failed tests."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


#: Rough seconds a test takes, by marker, for a file ``file_seconds.json`` does not list.
_DOCKER_SECONDS, _SLOW_SECONDS, _OTHER_SECONDS = 20.0, 8.0, 0.02
#: Seconds each file took in a whole run, its phases summed (``make test
#: PYTEST_DURATIONS="--durations=0 --durations-min=0.3"``; files of 5 s or more). Only
#: the order of the files depends on it: a stale figure costs minutes, never a result.
_MEASURED = Path(__file__).with_name("file_seconds.json")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the longest files first. ``make test`` spreads whole files over its workers
    in collection order (``--dist loadfile --no-loadscope-reorder``): a Docker file
    reached last would keep one worker busy for minutes while the others idle. A file's
    weight is its measured time, else its tests' rough time by marker; ties keep the
    collection order, so every worker collects the same order, as pytest-xdist requires."""
    try:
        measured: dict[str, float] = json.loads(_MEASURED.read_text())
    except (OSError, ValueError):  # missing or unreadable: the markers' estimate for all
        measured = {}
    weight: dict[str, float] = defaultdict(float)
    for item in items:
        file = item.nodeid.split("::")[0]
        if file in measured:
            weight[file] = measured[file]
        elif item.get_closest_marker("docker"):
            weight[file] += _DOCKER_SECONDS
        elif item.get_closest_marker("slow"):
            weight[file] += _SLOW_SECONDS
        else:
            weight[file] += _OTHER_SECONDS
    first = {f: i for i, f in reversed(list(enumerate(i.nodeid.split("::")[0] for i in items)))}
    items.sort(key=lambda i: (-weight[i.nodeid.split("::")[0]], first[i.nodeid.split("::")[0]]))
