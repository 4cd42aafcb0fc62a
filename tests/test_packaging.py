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


def _module_graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """Each of our modules -> our modules it imports (anywhere in the file: a typing-only
    or deferred import is still a dependency a reader has to follow)."""
    files = {}
    for package in packages:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            files[name] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    here = name.split(".") if is_package else name.split(".")[:-1]
                    up = here[: len(here) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from pkg import mod`` depends on mod; ``from pkg import name`` on pkg
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                    for a in node.names
                ]
            for target in targets:
                # the deepest of our modules the import names
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _loops(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_two_modules_import_each_other_even_indirectly():
    graph = _module_graph(("hub_ext", "server_ext"))
    assert len(graph) > 100  # the walk found the packages
    assert _loops(graph) == []
    # the check itself: a loop is found
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


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
    assert not [n for n in names if n.startswith(("tests/", "hub_ext/demo/"))]


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
