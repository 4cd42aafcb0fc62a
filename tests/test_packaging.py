"""The installed distribution: extension enabled on install, import boundaries kept."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_server_extension_is_enabled_and_ok():
    jupyter = Path(sys.executable).with_name("jupyter")
    result = subprocess.run(
        [str(jupyter), "server", "extension", "list"], capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert "server_ext enabled" in output.replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "server_ext 0.1.0 OK" in output.replace("\x1b[32m", "").replace("\x1b[0m", "")


def _imports(package: str) -> set[str]:
    found: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("hub_ext", "jupyter_server"), ("server_ext", "jupyterhub")]
)
def test_import_boundaries(package, forbidden):
    assert forbidden not in _imports(package)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `pip wheel` builds from this checkout (once for the module's tests)."""
    dest = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dest), str(ROOT)],
        check=True, timeout=600, capture_output=True,
    )
    (built,) = dest.glob("qustody-*.whl")
    return built


def test_wheel_carries_packages_and_enables_the_extension(wheel):
    """What `pip install qustody` gets: both packages and the config that enables the extension."""
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    config = next(
        n for n in names if n.endswith("etc/jupyter/jupyter_server_config.d/qustody.json")
    )
    assert ".data/data/" in config
    enabled = json.loads(zipfile.ZipFile(wheel).read(config))
    assert enabled["ServerApp"]["jpserver_extensions"] == {"server_ext": True}
    assert "server_ext/scanner/rules/quantum.py" in names
    assert "hub_ext/__init__.py" in names
    assert "hub_ext/qpu/demo_policy.toml" in names  # copied into the hub state at start
    assert not [n for n in names if n.startswith("tests/")]


def test_wheel_ships_the_prebuilt_labextension_enabled_and_ok(wheel, tmp_path):
    """`pip install qustody` gives JupyterLab the extension: the template's layout in the
    wheel's shared data, and `jupyter labextension list` reports it enabled and OK."""
    import zipfile

    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(tmp_path / "unpacked")
    (data,) = (tmp_path / "unpacked").glob("qustody-*.data")
    ext = data / "data" / "share" / "jupyter" / "labextensions" / "@qustody" / "jupyterlab"
    assert json.loads((ext / "install.json").read_text())["packageName"] == "qustody"
    meta = json.loads((ext / "package.json").read_text())
    assert meta["name"] == "@qustody/jupyterlab"
    assert (ext / meta["jupyterlab"]["_build"]["load"]).is_file()
    # no source maps or TypeScript sources shipped
    assert not [p for p in ext.rglob("*") if p.suffix in {".map", ".ts"}]

    jupyter = Path(sys.executable).with_name("jupyter")
    env = {**__import__("os").environ, "JUPYTER_PATH": str(data / "data" / "share" / "jupyter")}
    result = subprocess.run(
        [str(jupyter), "labextension", "list"], capture_output=True, text=True, timeout=120, env=env
    )
    plain = (result.stdout + result.stderr).replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "@qustody/jupyterlab v0.1.0 enabled OK (python, qustody)" in plain, plain
