"""Hatch build hook: ship the prebuilt JupyterLab extension in the wheel.

The extension is built by ``labextension/build.py`` (``make labext``; images/build.py runs
it too). This hook rebuilds it when the build environment can (npm and jupyterlab present,
e.g. ``pip wheel --no-build-isolation``), and maps it into the wheel's shared data as
``share/jupyter/labextensions/@qustody/jupyterlab`` with ``install.json``, the layout
JupyterLab's extension template uses. A standard wheel without a current build fails
with the command to run; an editable install (``make install``) only warns, because
``make labext`` builds and links it for the development environment afterwards.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ROOT = Path(__file__).resolve().parent
DEST = "share/jupyter/labextensions/@qustody/jupyterlab"


def _labext_build() -> Any:
    script = ROOT / "labextension" / "build.py"
    spec = importlib.util.spec_from_file_location("qustody_labext_build", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LabextensionHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel":
            return
        labext = _labext_build()
        # an editable install (``make install``) never builds: pip's build isolation hides
        # the venv's jupyter-builder from its own script, and ``make labext`` follows it
        if version != "editable" and not labext.is_current() and labext.jupyter_builder():
            labext.build()
        if not labext.is_current():
            message = (
                "the JupyterLab extension (labextension/) is not built from the current "
                "sources: run `make labext` (Node 20 + npm, and jupyterlab), then build again"
            )
            if version == "editable":
                print(f"qustody: {message}; installing without it", file=sys.stderr)
                return
            raise RuntimeError(message)
        shared = build_data.setdefault("shared_data", {})
        for path in sorted(labext.OUTPUT.rglob("*")):
            # install.json is ours (below); a builder that also writes one is not asked
            if path.is_file() and path.relative_to(labext.OUTPUT).as_posix() != "install.json":
                shared[str(path)] = f"{DEST}/{path.relative_to(labext.OUTPUT).as_posix()}"
        shared[str(ROOT / "labextension" / "install.json")] = f"{DEST}/install.json"
