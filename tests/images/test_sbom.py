"""The CycloneDX SBOMs images/build.py writes: content, dependency graph, determinism, and
validity against the CycloneDX 1.6 schema that cyclonedx-python-lib ships. No Docker."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import tomllib
import uuid
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "images"))

import sbom  # noqa: E402

# images/build.py under a name of its own (PyPI's `build` would shadow a plain `import build`)
_spec = importlib.util.spec_from_file_location("qustody_image_build", ROOT / "images" / "build.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

EPOCH = 1700000000

DEBIAN = (
    "installed\tbash\t5.2.15-2+b2\tamd64\tbash\t5.2.15-2\n"
    "installed\tlibc6\t2.36-9+deb12u4\tamd64\tglibc\t\n"
    "config-files\tgone\t1.0\tamd64\tgone\t\n"
    "---\n"
    'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n'
)


def wheel(dest: Path, name: str, version: str, *headers: str) -> Path:
    path = dest / f"{name}-{version}-py3-none-any.whl"
    meta = "\n".join(["Metadata-Version: 2.4", f"Name: {name}", f"Version: {version}", *headers])
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta + "\n\n")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def house(tmp_path: Path) -> dict:
    """A tiny wheelhouse: qustody[server] -> alpha[fast] -> beta (through the extra); gamma
    needs delta only on Windows; epsilon is locked but nothing requires it."""
    wheels = {
        "alpha": wheel(tmp_path, "alpha", "1.0", "License-Expression: MIT",
                       "Requires-Dist: beta>=2; extra == 'fast'", "Requires-Dist: gamma"),
        "beta": wheel(tmp_path, "beta", "2.1", "License: BSD"),
        "gamma": wheel(tmp_path, "gamma", "0.3",
                       "Classifier: License :: OSI Approved :: Apache Software License",
                       "Requires-Dist: delta; sys_platform == 'win32'"),
        "epsilon": wheel(tmp_path, "epsilon", "9"),
    }
    (tmp_path / "own").mkdir()
    own = wheel(tmp_path / "own", "qustody", "0.1.0", "License-Expression: BSD-3-Clause",
                "Requires-Dist: alpha[fast]; extra == 'server'",
                "Requires-Dist: zeta; extra == 'hub'")
    locked = {name: (path.name.split("-")[1], sha(path)) for name, path in wheels.items()}
    return {"wheels": wheels, "own": own, "locked": locked}


def image_sbom(house: dict, **changes) -> tuple[str, dict]:
    args = {
        "locked": house["locked"],
        "wheels": house["wheels"],
        "own_wheel": house["own"],
        "own_sha256": sha(house["own"]),
        "top_level": ["gamma"],
        "debian_listing": DEBIAN,
        "image": "qustody/singleuser",
        "properties": {"lock-sha256": "0" * 64},
        "epoch": EPOCH,
        **changes,
    }
    return sbom.image_sbom(**args)


def test_image_sbom_lists_the_locked_wheels_with_hashes_and_the_debian_packages(house):
    text, summary = image_sbom(house)
    sbom.validate(text)
    doc = json.loads(text)
    assert doc["bomFormat"] == "CycloneDX" and doc["specVersion"] == "1.6"
    by_ref = {c["bom-ref"]: c for c in doc["components"]}
    alpha = by_ref["pkg:pypi/alpha@1.0"]
    assert alpha["purl"] == "pkg:pypi/alpha@1.0" and alpha["version"] == "1.0"
    assert alpha["hashes"] == [{"alg": "SHA-256", "content": house["locked"]["alpha"][1]}]
    assert alpha["licenses"] == [{"license": {"id": "MIT"}}]
    assert by_ref["pkg:pypi/beta@2.1"]["licenses"] == [{"license": {"name": "BSD"}}]
    assert by_ref["pkg:pypi/gamma@0.3"]["licenses"] == [
        {"license": {"name": "Apache Software License"}}
    ]
    own = by_ref["pkg:pypi/qustody@0.1.0"]
    assert own["hashes"][0]["content"] == sha(house["own"])
    bash = by_ref["pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"
                  "&upstream=bash%405.2.15-2"]
    assert bash["name"] == "bash" and bash["version"] == "5.2.15-2+b2"
    assert "pkg:deb/debian/libc6@2.36-9%2Bdeb12u4?arch=amd64&distro=debian-12&upstream=glibc%402.36-9%2Bdeb12u4" in by_ref
    assert not any(c["name"] == "gone" for c in doc["components"])  # removed, config left
    assert by_ref["os:debian@12"]["type"] == "operating-system"
    assert summary == {"python": 5, "debian": 2, "components": 8, "unreached": ["epsilon"],
                       "excluded": []}
    meta = doc["metadata"]
    assert meta["component"]["type"] == "container"
    assert meta["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert {"name": "io.qustody:lock-sha256", "value": "0" * 64} in meta["properties"]
    tools = {t["name"] for t in meta["tools"]["components"]}
    assert {"qustody images/build.py", "cyclonedx-python-lib"} <= tools


def test_image_sbom_dependency_graph_follows_extras_and_markers(house):
    doc = json.loads(image_sbom(house)[0])
    graph = {d["ref"]: set(d.get("dependsOn", [])) for d in doc["dependencies"]}
    assert graph["image:qustody/singleuser"] == {
        "pkg:pypi/qustody@0.1.0", "pkg:pypi/gamma@0.3", "os:debian@12"
    }
    assert graph["pkg:pypi/qustody@0.1.0"] == {"pkg:pypi/alpha@1.0"}  # [server], not [hub]
    assert graph["pkg:pypi/alpha@1.0"] == {"pkg:pypi/beta@2.1", "pkg:pypi/gamma@0.3"}
    assert graph["pkg:pypi/gamma@0.3"] == set()  # delta only on Windows
    assert len(graph["os:debian@12"]) == 2


def test_sbom_is_byte_stable_and_its_serial_number_follows_the_content(house):
    one, two = image_sbom(house)[0], image_sbom(house)[0]
    assert one == two
    other = image_sbom(house, properties={"lock-sha256": "1" * 64})[0]
    serials = [json.loads(t)["serialNumber"] for t in (one, other)]
    assert serials[0] != serials[1]
    assert all(uuid.UUID(s.removeprefix("urn:uuid:")).version == 5 for s in serials)
    assert image_sbom(house, epoch=EPOCH + 1)[0] != one


def test_the_schema_check_rejects_what_is_not_cyclonedx(house):
    doc = json.loads(image_sbom(house)[0])
    doc["components"][0]["hashes"] = [{"alg": "SHA-256", "content": "not-hex"}]
    with pytest.raises(ValueError, match=r"not a valid CycloneDX 1\.6 SBOM"):
        sbom.validate(json.dumps(doc))
    doc = json.loads(image_sbom(house)[0])
    doc["components"][0]["type"] = "gadget"
    with pytest.raises(ValueError, match="not a valid CycloneDX"):
        sbom.validate(json.dumps(doc))


def test_wheel_sbom_of_this_environment_is_valid_and_as_pinned(tmp_path):
    """The wheel's runtime dependencies, resolved through what is installed here."""
    own = wheel(tmp_path, "qustody", "0.1.0", "Requires-Dist: nbformat>=5.10",
                "Requires-Dist: traitlets; extra == 'server'",
                "Requires-Dist: kubernetes-validate; extra == 'test'")
    text, summary = sbom.wheel_sbom(
        own_wheel=own, own_sha256=sha(own), extras=("server",),
        installed=sbom.installed_dists(), pins=build.constraint_pins(), properties={},
        epoch=EPOCH,
    )
    sbom.validate(text)
    doc = json.loads(text)
    names = {c["name"] for c in doc["components"]}
    assert {"nbformat", "traitlets", "fastjsonschema", "jsonschema", "jupyter-core"} <= names
    assert "kubernetes-validate" not in names  # not asked for
    assert summary["not_as_pinned"] == []
    assert doc["metadata"]["component"]["purl"] == "pkg:pypi/qustody@0.1.0"
    pins = build.constraint_pins()
    for c in doc["components"]:
        assert c["purl"] == f"pkg:pypi/{c['name']}@{pins[c['name']]}"


def test_every_locked_package_of_the_image_is_reached_from_its_requirements(tmp_path):
    """With the real lock and wheelhouse (filled by `make image`): the SBOM's graph reaches
    every locked package from the qustody wheel's [server] extra and requirements.in."""
    locked = build.locked_wheels()
    wheels = {build.wheel_name_version(w.name)[0]: w for w in build.WHEELHOUSE.glob("*.whl")}
    if set(locked) - set(wheels):
        pytest.skip("build/image/wheelhouse is not filled (make image fills it)")
    # the qustody wheel's METADATA as pyproject.toml makes it (no wheel build here)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requires = [f"Requires-Dist: {r}" for r in project["dependencies"]]
    requires += [f"Requires-Dist: {r}; extra == 'server'"
                 for r in project["optional-dependencies"]["server"]]
    own = wheel(tmp_path, "qustody", "0.1.0", *requires)
    text, summary = sbom.image_sbom(
        locked=locked, wheels=wheels, own_wheel=own, own_sha256=sha(own),
        top_level=build.top_level_requirements(), debian_listing=DEBIAN,
        image="qustody/singleuser", properties={}, epoch=EPOCH,
    )
    sbom.validate(text)
    assert summary["python"] >= len(locked)
    assert summary["unreached"] == []
    assert set(summary["excluded"]) <= build.EXCLUDED
