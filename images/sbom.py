"""CycloneDX SBOMs of the single-user image and of the qustody wheel's dependencies.

Written with cyclonedx-python-lib (pinned in the ``test`` extra; it needs no network) by
``images/build.py`` before each build, into build/image/:

- ``sbom-image.cdx.json``: what the image contains. Its Python packages from the hash lock
  (name, version, purl ``pkg:pypi/...``, the locked sha256 of the wheel, the licence and
  ``Requires-Dist`` graph read from the wheel's METADATA), the qustody wheel itself (with
  the ``[server]`` extra) and the Debian packages of the base image (``dpkg-query`` in the
  base; purl ``pkg:deb/debian/...``). Everything in it is known before ``docker build``
  runs, so its sha256 goes into the image's ``io.qustody.image.sbom-sha256`` label.
- ``sbom-wheel.cdx.json``: the runtime dependencies of ``pip install qustody[hub,server]``,
  resolved through the qustody wheel's METADATA and the installed distributions of the
  environment running the build (pinned by requirements/constraints.txt, which pins
  versions but not hashes: these components carry no hashes).

Both are byte-for-byte reproducible: the timestamp is SOURCE_DATE_EPOCH, the serial number
a UUID derived from the content, every bom-ref a name, and the lists sorted.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import importlib.metadata
import json
import re
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cyclonedx.contrib.license.factories import LicenseFactory
from cyclonedx.contrib.this.builders import this_component
from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from packageurl import PackageURL
from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

SCHEMA = SchemaVersion.V1_6
PROPERTY = "io.qustody"

# Debian 12's CPython, as images/build.py resolves the lock for (markers evaluate to this)
IMAGE_ENVIRONMENT = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "x86_64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}

# dpkg-query's format for the Debian part (run in the base image, see debian_listing)
DPKG_FORMAT = (
    r"${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t"
    r"${source:Package}\t${source:Version}\n"
)
DEBIAN_SCRIPT = f"dpkg-query -W -f '{DPKG_FORMAT}' && echo --- && cat /etc/os-release"


@dataclass
class Dist:
    """One Python distribution: what the SBOM says of it."""

    name: str  # canonical
    version: str
    sha256: str = ""  # of the wheel, when it is known (the lock)
    license: str = ""
    requires: list[str] = field(default_factory=list)  # Requires-Dist lines


def _metadata_fields(text: str) -> tuple[str, list[str]]:
    """(licence, Requires-Dist) of a METADATA file."""
    msg = email.parser.Parser(policy=email.policy.compat32).parsestr(text, headersonly=True)
    return _license_of(msg), list(msg.get_all("Requires-Dist") or [])


def _license_of(msg: Any) -> str:
    expression = str(msg.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = str(msg.get("License") or "").strip()
    # a one-line name (MIT, BSD-3-Clause, "Apache 2.0"), not a licence's full text
    if text and "\n" not in text and len(text) <= 64 and text.upper() != "UNKNOWN":
        return text
    for classifier in msg.get_all("Classifier") or []:
        if str(classifier).startswith("License :: OSI Approved :: "):
            return str(classifier).rsplit(" :: ", 1)[-1]
    return ""


def wheel_metadata(wheel: Path) -> tuple[str, list[str]]:
    """(licence, Requires-Dist) from a wheel's ``*.dist-info/METADATA``."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise ValueError(f"{wheel.name}: expected one .dist-info/METADATA, found {names}")
        return _metadata_fields(z.read(names[0]).decode("utf-8", "replace"))


def lock_dists(locked: Mapping[str, tuple[str, str]], wheels: Mapping[str, Path]) -> list[Dist]:
    """The lock's packages (name -> (version, sha256)), with METADATA from ``wheels`` (name ->
    wheel file) where present."""
    out = []
    for name, (version, sha) in sorted(locked.items()):
        license_, requires = wheel_metadata(wheels[name]) if name in wheels else ("", [])
        out.append(Dist(canonicalize_name(name), version, sha, license_, requires))
    return out


def resolve(
    dists: Mapping[str, Dist],
    roots: Mapping[str, Iterable[str]],
    environment: Mapping[str, str],
) -> tuple[dict[str, set[str]], set[str]]:
    """The dependency graph from ``roots`` (name -> extras asked for) through ``dists``:
    (name -> names it needs, names needed but absent from ``dists``). A requirement counts
    when its marker holds for ``environment`` with no extra or one of the extras asked of
    the package (extras asked through ``pkg[extra]`` requirements propagate)."""
    extras: dict[str, set[str]] = {}
    edges: dict[str, set[str]] = {}
    missing: set[str] = set()
    todo = []
    for name, wanted in roots.items():
        extras[canonicalize_name(name)] = {canonicalize_name(e) for e in wanted}
        todo.append(canonicalize_name(name))
    while todo:
        name = todo.pop()
        dist = dists.get(name)
        if dist is None:
            continue
        edges.setdefault(name, set())
        for line in dist.requires:
            try:
                req = Requirement(line)
            except InvalidRequirement:
                continue
            if req.marker is not None and not any(
                req.marker.evaluate({**environment, "extra": e})
                for e in ("", *sorted(extras[name]))
            ):
                continue
            dep = canonicalize_name(req.name)
            if dep not in dists:
                missing.add(dep)
                continue
            edges[name].add(dep)
            asked = {canonicalize_name(e) for e in req.extras}
            if dep not in extras or not asked <= extras[dep]:
                extras[dep] = extras.get(dep, set()) | asked
                todo.append(dep)
    return edges, missing


def _pypi_component(dist: Dist) -> Component:
    purl = PackageURL(type="pypi", name=dist.name, version=dist.version)
    licenses = [LicenseFactory().make_from_string(dist.license)] if dist.license else []
    return Component(
        type=ComponentType.LIBRARY,
        name=dist.name,
        version=dist.version,
        purl=purl,
        bom_ref=purl.to_string(),
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=dist.sha256)] if dist.sha256 else [],
        licenses=licenses,
    )


def debian_components(listing: str) -> tuple[Component, list[Component]]:
    """(the operating system, its installed packages) from DEBIAN_SCRIPT's output."""
    packages_text, _, os_release = listing.partition("\n---\n")
    release = dict(
        (key, value.strip().strip('"'))
        for key, _, value in (line.partition("=") for line in os_release.splitlines())
        if key
    )
    distro_version = release.get("VERSION_ID", "")
    os_ref = f"os:{release.get('ID', 'debian')}@{distro_version}"
    system = Component(
        type=ComponentType.OPERATING_SYSTEM,
        name=release.get("ID", "debian"),
        version=distro_version,
        description=release.get("PRETTY_NAME") or None,
        bom_ref=os_ref,
    )
    packages = []
    for line in packages_text.splitlines():
        fields = line.split("\t")
        if len(fields) != 6 or fields[0] != "installed":
            continue
        _, name, version, arch, source, source_version = fields
        qualifiers = {"arch": arch, "distro": f"debian-{distro_version}"}
        if source and (source != name or (source_version and source_version != version)):
            qualifiers["upstream"] = f"{source}@{source_version or version}"
        purl = PackageURL(type="deb", namespace="debian", name=name, version=version,
                          qualifiers=qualifiers)
        packages.append(Component(
            type=ComponentType.LIBRARY, name=name, version=version, purl=purl,
            bom_ref=purl.to_string(),
        ))
    return system, packages


def _bom(root: Component, epoch: int, properties: Mapping[str, str]) -> Bom:
    tool = Component(type=ComponentType.APPLICATION, name="qustody images/build.py",
                     bom_ref="tool:qustody-images-build")
    metadata = BomMetaData(
        component=root,
        timestamp=datetime.fromtimestamp(epoch, UTC),
        properties=[Property(name=f"{PROPERTY}:{k}", value=v) for k, v in properties.items()],
    )
    metadata.tools.components.update([tool, this_component()])
    return Bom(metadata=metadata, serial_number=uuid.UUID(int=0))


def _add_python(bom: Bom, dists: Mapping[str, Dist], edges: Mapping[str, set[str]],
                root_deps: Iterable[str]) -> dict[str, Component]:
    components = {name: _pypi_component(dist) for name, dist in dists.items()}
    for component in components.values():
        bom.components.add(component)
    for name, deps in edges.items():
        if name in components:
            bom.register_dependency(components[name], [components[d] for d in sorted(deps)])
    assert bom.metadata.component is not None
    bom.register_dependency(bom.metadata.component,
                            [components[n] for n in sorted(root_deps) if n in components])
    return components


def render(bom: Bom) -> str:
    """The BOM as CycloneDX 1.6 JSON, byte-stable: the serial number is a UUID of the
    content (rendered once with a zero serial)."""
    draft = JsonV1Dot6(bom).output_as_string(indent=2)
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL,
                                   "urn:qustody:sbom:" + hashlib.sha256(draft.encode()).hexdigest())
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


def validate(text: str) -> None:
    """Raise ValueError unless ``text`` is valid CycloneDX 1.6 JSON (the strict schema
    cyclonedx-python-lib ships)."""
    error = JsonStrictValidator(SCHEMA).validate_str(text)
    if error is not None:
        raise ValueError(f"not a valid CycloneDX {SCHEMA.to_version()} SBOM: {error}")


def image_sbom(
    *,
    locked: Mapping[str, tuple[str, str]],
    wheels: Mapping[str, Path],
    own_wheel: Path,
    own_sha256: str,
    top_level: Iterable[str],
    debian_listing: str,
    image: str,
    properties: Mapping[str, str],
    epoch: int,
) -> tuple[str, dict[str, Any]]:
    """The image's SBOM (JSON text) and a summary of it (component counts, packages of
    the lock no requirement reaches, requirements the lock does not hold)."""
    own_license, own_requires = wheel_metadata(own_wheel)
    own_version = own_wheel.name.split("-")[1]
    dists = {d.name: d for d in lock_dists(locked, wheels)}
    dists["qustody"] = Dist("qustody", own_version, own_sha256, own_license, own_requires)
    roots = {"qustody": {"server"}, **{canonicalize_name(n): set() for n in top_level}}
    edges, missing = resolve(dists, roots, IMAGE_ENVIRONMENT)
    root = Component(type=ComponentType.CONTAINER, name=image, version=own_version,
                     bom_ref=f"image:{image}")
    bom = _bom(root, epoch, {**properties, "excluded-from-lock": ", ".join(sorted(missing))})
    _add_python(bom, dists, edges, roots)
    system, packages = debian_components(debian_listing)
    bom.components.add(system)
    for package in packages:
        bom.components.add(package)
    bom.register_dependency(system, packages)
    bom.register_dependency(root, [system])
    text = render(bom)
    summary = {
        "python": len(dists),
        "debian": len(packages),
        "components": len(bom.components),
        "unreached": sorted(set(dists) - set(edges)),
        "excluded": sorted(missing),
    }
    return text, summary


def installed_dists() -> dict[str, Dist]:
    """Every distribution installed in this interpreter's environment."""
    out: dict[str, Dist] = {}
    for dist in importlib.metadata.distributions():
        name = canonicalize_name(dist.metadata["Name"] or "")
        if not name or name in out:
            continue
        out[name] = Dist(name, dist.version, "", _license_of(dist.metadata),
                         list(dist.requires or []))
    return out


def wheel_sbom(
    *,
    own_wheel: Path,
    own_sha256: str,
    extras: Iterable[str],
    installed: Mapping[str, Dist],
    pins: Mapping[str, str],
    properties: Mapping[str, str],
    epoch: int,
) -> tuple[str, dict[str, Any]]:
    """The SBOM of ``pip install qustody[<extras>]``: the wheel and its runtime dependencies
    as installed here (``installed``), checked against the constraint ``pins`` (name ->
    version)."""
    own_license, own_requires = wheel_metadata(own_wheel)
    own_version = own_wheel.name.split("-")[1]
    dists = {n: d for n, d in installed.items() if n != "qustody"}
    own = Dist("qustody", own_version, own_sha256, own_license, own_requires)
    edges, missing = resolve({**dists, "qustody": own}, {"qustody": set(extras)},
                             default_environment())  # type: ignore[arg-type]
    needed = {n: dists[n] for n in sorted(set(edges) - {"qustody"})}
    unpinned = sorted(n for n, d in needed.items() if pins.get(n) != d.version)
    root = _pypi_component(own)
    bom = _bom(root, epoch, {
        **properties,
        "extras": ",".join(sorted(extras)),
        "not-installed": ", ".join(sorted(missing)),
        "not-as-pinned": ", ".join(unpinned),
    })
    _add_python(bom, needed, {n: e for n, e in edges.items() if n != "qustody"}, [])
    components = {c.name: c for c in bom.components}
    bom.register_dependency(root, [components[d] for d in sorted(edges["qustody"])])
    text = render(bom)
    return text, {"components": len(needed), "not_installed": sorted(missing),
                  "not_as_pinned": unpinned}


def summary_line(path: Path) -> str:
    """``<file>: N components, sha256 <hex>`` for a written SBOM."""
    data = path.read_bytes()
    count = len(json.loads(data).get("components", []))
    return f"{path.name}: {count} components, sha256 {hashlib.sha256(data).hexdigest()}"
