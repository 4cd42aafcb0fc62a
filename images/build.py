"""Build the Qustody single-user image, offline, from the hash-locked requirements.

    python images/build.py build      # build (skipped when an image with the same inputs exists)
    python images/build.py lock       # re-resolve images/requirements.lock (needs PyPI)
    python images/build.py base       # make sure the Debian 12 base image exists, print its digest
    python images/build.py info       # print the current image's id, labels and SBOM digest
    python images/build.py sbom       # write the CycloneDX SBOMs only (build/image/sbom-*.cdx.json)
    python images/build.py vulns      # known vulnerabilities of the lock (pip-audit), a report
    python images/build.py repro      # build twice (--no-cache) and compare: reproducible?
    python images/build.py manifest IMAGE   # print the installed file set of IMAGE

How it works: wheels are downloaded on the host (where the CA bundle and the registries
are) into build/image/wheelhouse and checked against the lock's sha256 hashes; the
Docker build then runs with ``--network none`` and installs with ``pip --require-hashes
--no-index``. The base image is taken by digest: ``QUSTODY_BASE_IMAGE=repo@sha256:...``
when a registry can serve one, otherwise a minimal Debian 12 root filesystem is
bootstrapped with debootstrap and imported (``qustody/debian-base:bookworm``), and its
content digest is what the build pins.

Supply chain (docs/containers.md, "Supply chain"): each build writes CycloneDX SBOMs of
the image and of the wheel's dependencies (images/sbom.py, with cyclonedx-python-lib from
the ``test`` extra) and records the image SBOM's sha256 in the ``io.qustody.image.sbom-sha256``
label.

Otherwise only the standard library is used, plus the ``docker`` and ``pip`` command-line
tools.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "images"
LOCK = HERE / "requirements.lock"
REQUIREMENTS_IN = HERE / "requirements.in"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"
BUILD = Path(os.environ.get("QUSTODY_BUILD_DIR") or ROOT / "build" / "image")
WHEELHOUSE = BUILD / "wheelhouse"

IMAGE_REPO = os.environ.get("QUSTODY_IMAGE_REPO", "qustody/singleuser")
BASE_REPO = "qustody/debian-base"
BASE_TAG = "bookworm"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR = os.environ.get("QUSTODY_DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_PACKAGES = "python3,python3-venv,ca-certificates"

# Debian 12's python3 is 3.11.2 and its glibc 2.36: resolve wheels for exactly that.
TARGET_PYTHON = "3.11.2"
TARGET_PLATFORMS = [
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux_2_12_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
]
# Packages whose versions the image shares with the hub's environment (they talk to
# each other); everything else resolves freely for Python 3.11.2.
SHARED_PINS = {
    "hyperscan",
    "jupyter-server",
    "jupyterhub",
    "jupyterlab",
    "nbformat",
    "qiskit",
    "qiskit-aer",
    "tornado",
    "traitlets",
}

# Resolved but deliberately not installed. jsonschema imports rfc3987-syntax when it is
# present, and that builds a Lark grammar at import time: 1.5 s of every server start.
# Without it jsonschema only skips its "iri"/"iri-reference" format checks; `pip check`
# still passes (nothing requires it outside an optional extra).
EXCLUDED = {"rfc3987-syntax", "lark"}

# Files of images/ copied into the build context (and hashed into the image's inputs).
CONTEXT_FILES = (
    "Dockerfile",
    "entrypoint.sh",
    "healthcheck.py",
    "singleuser.py",
    "overrides.json",
    "jupyter_lab_config.json",
    "jupyter_server_config.json",
)

LABEL = "io.qustody.image"
OCI = "org.opencontainers.image"


def log(message: str) -> None:
    print(f"[image] {message}", file=sys.stderr, flush=True)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run(cmd: list[str], *, capture: bool = False, **kwargs: object) -> str:
    env = dict(os.environ, DOCKER_BUILDKIT="0")
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        cmd,
        check=True,
        text=True,
        env=env,
        stdout=subprocess.PIPE if capture else kwargs.pop("stdout", None),
        **kwargs,  # type: ignore[arg-type]
    )
    return result.stdout if capture else ""


def docker(*args: str, capture: bool = True, check: bool = True) -> str:
    try:
        return run(["docker", *args], capture=capture)
    except subprocess.CalledProcessError:
        if check:
            raise
        return ""


def image_inspect(ref: str) -> dict[str, object] | None:
    out = subprocess.run(  # noqa: S603
        ["docker", "image", "inspect", ref],  # noqa: S607
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        return None
    data = json.loads(out.stdout)
    return data[0] if data else None


def pip_download_args() -> list[str]:
    args = ["--only-binary=:all:", "--python-version", TARGET_PYTHON]
    for platform in TARGET_PLATFORMS:
        args += ["--platform", platform]
    return args


# -- our own wheel ----------------------------------------------------------------------


def build_own_wheel(dest: Path) -> Path:
    """The qustody wheel (hatchling builds it reproducibly: same source, same bytes), with
    the prebuilt JupyterLab extension: built here on the host (Node is not in the image),
    skipped when its sources are unchanged."""
    run([sys.executable, str(ROOT / "labextension" / "build.py")])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest), str(ROOT)],
        capture=True,
    )
    wheels = sorted(dest.glob("qustody-*.whl"))
    if len(wheels) != 1:
        raise SystemExit(f"expected one qustody wheel in {dest}, found {wheels}")
    return wheels[0]


# -- the lock ---------------------------------------------------------------------------


def wheel_name_version(filename: str) -> tuple[str, str]:
    parts = filename[: -len(".whl")].split("-")
    return canonical(parts[0]), parts[1]


def lock() -> None:
    """Resolve requirements.in (+ the qustody wheel's [server] deps) for the image."""
    pins = []
    for line in CONSTRAINTS.read_text().splitlines():
        name = line.split("==")[0].strip()
        if "==" in line and canonical(name) in SHARED_PINS:
            pins.append(line.strip())
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        own = build_own_wheel(tmpdir / "own")
        (tmpdir / "constraints.txt").write_text("\n".join(pins) + "\n")
        log(f"resolving for CPython {TARGET_PYTHON} manylinux x86_64 (shared pins: {len(pins)})")
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                *pip_download_args(),
                "-c",
                str(tmpdir / "constraints.txt"),
                "-d",
                str(tmpdir / "dl"),
                "-r",
                str(REQUIREMENTS_IN),
                f"{own}[server]",
            ]
        )
        lines = []
        for wheel in sorted((tmpdir / "dl").glob("*.whl"), key=lambda p: p.name.lower()):
            name, version = wheel_name_version(wheel.name)
            if name == "qustody" or name in EXCLUDED:
                continue
            lines.append(f"{name}=={version} \\\n    --hash=sha256:{sha256_file(wheel)}")
        others = [p.name for p in (tmpdir / "dl").iterdir() if not p.name.endswith(".whl")]
        if others:
            raise SystemExit(f"only wheels may be locked, got {others}")
    header = (
        "# The single-user image's Python packages, every one pinned by version and by the\n"
        "# sha256 of its wheel for CPython 3.11.2 on manylinux x86_64 (Debian 12).\n"
        "# Generated by `make image-lock` (images/build.py lock) from images/requirements.in\n"
        "# and the qustody wheel's [server] extra. Do not edit by hand.\n"
        f"# Left out on purpose (see EXCLUDED in images/build.py): {', '.join(sorted(EXCLUDED))}\n"
    )
    LOCK.write_text(header + "\n".join(lines) + "\n")
    log(f"wrote {LOCK.relative_to(ROOT)} ({len(lines)} packages)")


def locked_wheels() -> dict[str, tuple[str, str]]:
    """name -> (version, sha256) from the lock file."""
    text = LOCK.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)\s+--hash=sha256:([0-9a-f]{64})", line)
        if not m:
            raise SystemExit(f"{LOCK.name}: cannot parse {line!r}; re-run `make image-lock`")
        found[canonical(m.group(1))] = (m.group(2), m.group(3))
    return found


def fetch_wheelhouse() -> None:
    """Make build/image/wheelhouse hold exactly the locked wheels (download what is missing)."""
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    wanted = locked_wheels()
    by_hash = {sha: name for name, (_, sha) in wanted.items()}
    have = set()
    for wheel in WHEELHOUSE.glob("*.whl"):
        sha = sha256_file(wheel)
        if sha in by_hash:
            have.add(by_hash[sha])
        else:
            wheel.unlink()  # not in the lock (any more)
    missing = sorted(set(wanted) - have)
    if not missing:
        log(f"wheelhouse: all {len(wanted)} locked wheels present")
        return
    log(f"wheelhouse: downloading {len(missing)} of {len(wanted)} locked wheels")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "missing.txt"
        req.write_text(
            "".join(f"{n}=={wanted[n][0]} --hash=sha256:{wanted[n][1]}\n" for n in missing)
        )
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--require-hashes",
                *pip_download_args(),
                "-d",
                str(WHEELHOUSE),
                "-r",
                str(req),
            ]
        )


# -- the base image ---------------------------------------------------------------------


def ensure_base() -> tuple[str, str]:
    """(reference to build FROM, human name) of a Debian 12 base, pinned by digest."""
    configured = os.environ.get("QUSTODY_BASE_IMAGE", "").strip()
    if configured:
        if "@sha256:" not in configured:
            raise SystemExit(
                f"QUSTODY_BASE_IMAGE={configured!r} is not pinned: use repo@sha256:<digest>"
            )
        if image_inspect(configured) is None:
            log(f"pulling base {configured}")
            try:
                docker("pull", configured, capture=False)
            except subprocess.CalledProcessError:
                log("no registry could serve the base image; bootstrapping Debian instead")
                configured = ""
        if configured:
            return configured, configured
    name = f"{BASE_REPO}:{BASE_TAG}"
    found = image_inspect(name)
    if found is None:
        bootstrap_base(name)
        found = image_inspect(name)
        assert found is not None
    return str(found["Id"]), name


def bootstrap_base(name: str) -> None:
    if shutil.which("debootstrap") is None:
        raise SystemExit("debootstrap is not installed: run `make system-deps` (as root)")
    if os.geteuid() != 0:
        raise SystemExit("bootstrapping the Debian base needs root (debootstrap)")
    rootfs = BUILD / "rootfs"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.parent.mkdir(parents=True, exist_ok=True)
    log(f"bootstrapping Debian {DEBIAN_SUITE} (minbase + {BASE_PACKAGES}) from {DEBIAN_MIRROR}")
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={BASE_PACKAGES}",
            DEBIAN_SUITE,
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        capture=True,
    )
    # No package-manager caches, logs or documentation in the base.
    for pattern in (
        "var/cache/apt/*",
        "var/lib/apt/lists/*",
        "var/log/*",
        "var/cache/debconf/*-old",
        "var/lib/dpkg/*-old",
        "usr/share/doc/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "tmp/*",
        "root/.*",
    ):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "1700000000")
    log(f"importing the root filesystem as {name}")
    tar = subprocess.Popen(  # noqa: S603
        [  # noqa: S607
            "tar",
            "-C",
            str(rootfs),
            "--sort=name",
            "--numeric-owner",
            f"--mtime=@{epoch}",
            "--clamp-mtime",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "-c",
            ".",
        ],
        stdout=subprocess.PIPE,
    )
    subprocess.run(  # noqa: S603
        [  # noqa: S607
            "docker",
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/bash"]',
            "-",
            name,
        ],
        stdin=tar.stdout,
        check=True,
        capture_output=True,
    )
    if tar.wait() != 0:
        raise SystemExit("tar of the bootstrapped root filesystem failed")
    shutil.rmtree(rootfs)


# -- the SBOMs --------------------------------------------------------------------------

SBOM_IMAGE = BUILD / "sbom-image.cdx.json"
SBOM_WHEEL = BUILD / "sbom-wheel.cdx.json"
DEFAULT_EPOCH = 1700000000  # as the bootstrapped base's file times


def source_date_epoch() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH") or DEFAULT_EPOCH)


def debian_listing(image: str, digest: str) -> str:
    """The Debian packages and os-release of a base image (kept in build/ by its digest)."""
    import sbom

    script = hashlib.sha256(sbom.DEBIAN_SCRIPT.encode()).hexdigest()[:8]
    cache = BUILD / f"debian-{digest.removeprefix('sha256:')[:16]}-{script}.txt"
    if cache.exists():
        return cache.read_text()
    listing = image_debian(image)
    cache.write_text(listing)
    return listing


def image_debian(image: str) -> str:
    import sbom

    return docker("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", image,
                  "-c", sbom.DEBIAN_SCRIPT)


def top_level_requirements() -> list[str]:
    """The names images/requirements.in asks for (the image SBOM's direct dependencies)."""
    names = []
    for line in REQUIREMENTS_IN.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(canonical(re.split(r"[\s\[<>=!~;]", line, maxsplit=1)[0]))
    return names


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        name, sep, version = line.partition("==")
        if sep:
            pins[canonical(name.strip())] = version.strip()
    return pins


def write_sboms(own: Path, own_sha: str, *, lock_sha: str, base_name: str, base_digest: str,
                debian: str) -> str:
    """Write build/image/sbom-image.cdx.json and sbom-wheel.cdx.json (validated against
    the CycloneDX 1.6 schema); return the image SBOM's sha256."""
    import sbom

    epoch = source_date_epoch()
    wheels = {wheel_name_version(w.name)[0]: w for w in WHEELHOUSE.glob("*.whl")}
    image_text, image_summary = sbom.image_sbom(
        locked=locked_wheels(),
        wheels=wheels,
        own_wheel=own,
        own_sha256=own_sha,
        top_level=top_level_requirements(),
        debian_listing=debian,
        image=IMAGE_REPO,
        properties={
            "lock-sha256": lock_sha,
            "qustody-wheel-sha256": own_sha,
            "base.name": base_name,
            "base.digest": base_digest,
        },
        epoch=epoch,
    )
    wheel_text, wheel_summary = sbom.wheel_sbom(
        own_wheel=own,
        own_sha256=own_sha,
        extras=("hub", "server"),
        installed=sbom.installed_dists(),
        pins=constraint_pins(),
        properties={"constraints-sha256": sha256_file(CONSTRAINTS)},
        epoch=epoch,
    )
    for path, text in ((SBOM_IMAGE, image_text), (SBOM_WHEEL, wheel_text)):
        sbom.validate(text)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    if image_summary["unreached"]:
        log(f"SBOM: locked but required by nothing: {', '.join(image_summary['unreached'])}")
    if wheel_summary["not_as_pinned"]:
        log("SBOM: installed here at another version than requirements/constraints.txt pins: "
            + ", ".join(wheel_summary["not_as_pinned"]))
    log(f"SBOM {sbom.summary_line(SBOM_IMAGE)} "
        f"({image_summary['python']} Python, {image_summary['debian']} Debian)")
    log(f"SBOM {sbom.summary_line(SBOM_WHEEL)}")
    return sha256_file(SBOM_IMAGE)


# -- the vulnerability report -----------------------------------------------------------

VULN_REPORT = BUILD / "vulnerabilities.txt"


def summarize_audit(data: dict[str, Any], service: str) -> tuple[str, list[str]]:
    """(one-line summary, report lines) of pip-audit's JSON report."""
    deps = data.get("dependencies", [])
    skipped = [d for d in deps if d.get("skip_reason")]
    audited = [d for d in deps if not d.get("skip_reason")]
    vulnerable = [d for d in audited if d.get("vulns")]
    count = sum(len(d["vulns"]) for d in vulnerable)
    details = []
    for d in vulnerable:
        for v in d["vulns"]:
            fixes = ", ".join(v.get("fix_versions") or []) or "no fixed version"
            aliases = ", ".join(v.get("aliases") or [])
            details.append(f"VULNERABLE {d['name']}=={d.get('version', '?')} {v['id']}"
                           + (f" ({aliases})" if aliases else "") + f"; fixed in: {fixes}")
            description = " ".join(str(v.get("description") or "").split())
            if description:
                details.append(f"    {description[:400]}")
    for d in skipped:
        details.append(f"NOT CHECKED {d['name']}: {d['skip_reason']}")
    if not audited:
        if skipped and all("not found on PyPI" in d["skip_reason"] for d in skipped):
            why = (f"PyPI answered 'not found' for all {len(deps)} locked packages (pip-audit "
                   "reads https://pypi.org/pypi/<name>/<version>/json, which this index "
                   "does not serve)")
        else:
            first = skipped[0]["skip_reason"] if skipped else "the report lists no packages"
            why = (f"the {service} advisory service answered for none of the {len(deps)} "
                   f"locked packages (e.g. {first})")
        return f"could not check: {why}", details
    summary = (f"{len(audited)} of {len(deps)} locked packages checked: "
               + (f"{count} known vulnerabilities in {len(vulnerable)} packages"
                  if count else "no known vulnerabilities"))
    if skipped:
        summary += f" ({len(skipped)} could not be checked, listed in the report)"
    return summary, details


def vulnerability_report(*, service: str = "pypi", osv_url: str | None = None,
                         timeout: float = 180) -> str:
    """Check the hash lock for known vulnerabilities with pip-audit (``--disable-pip``: the
    lock is read as it is, pinned and hashed, nothing is resolved or installed), write
    build/image/vulnerabilities.txt, and return its one-line summary.

    A report, not a gate: a new advisory must not fail a build or a test, so this never
    raises for what it finds or for an advisory service it cannot reach; it says
    "could not check: <reason>" instead."""
    lock_sha = sha256_file(LOCK)
    locked = locked_wheels()
    header = [
        "# Known vulnerabilities of the single-user image's Python packages",
        f"# lock: {LOCK.relative_to(ROOT)} (sha256 {lock_sha}, {len(locked)} packages)",
        f"# service: {service} (pip-audit --vulnerability-service {service}"
        + (f" --osv-url {osv_url})" if osv_url else ")"),
        f"# checked: {datetime.now(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}",
    ]
    details: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "audit.json"
        cmd = [
            sys.executable, "-m", "pip_audit", "--disable-pip", "--require-hashes",
            "-r", str(LOCK), "--vulnerability-service", service, "--format", "json",
            "--output", str(out), "--progress-spinner", "off", "--desc", "on",
            "--cache-dir", str(BUILD / "pip-audit-cache"), "--timeout", "20",
            *(["--osv-url", osv_url] if osv_url else []),
        ]
        try:
            done = subprocess.run(  # noqa: S603 - fixed argv
                cmd, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            summary = f"could not check: pip-audit did not finish in {timeout:.0f} s"
        except OSError as e:
            summary = f"could not check: pip-audit could not run ({e})"
        else:
            stderr = done.stderr or ""
            if "No module named pip_audit" in stderr:
                summary = ("could not check: pip-audit is not installed (it is in the test "
                           "extra: make install)")
            else:
                header.insert(3, "# tool: " + subprocess.run(
                    [sys.executable, "-m", "pip_audit", "--version"],
                    capture_output=True, text=True, check=False,
                ).stdout.strip())
                try:
                    summary, details = summarize_audit(json.loads(out.read_text()), service)
                except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
                    errors = [line.strip() for line in stderr.splitlines() if line.strip()]
                    summary = (f"could not check: pip-audit failed (exit {done.returncode}): "
                               + (errors[-1][:300] if errors else f"no report ({e})"))
    VULN_REPORT.parent.mkdir(parents=True, exist_ok=True)
    VULN_REPORT.write_text("\n".join([*header, f"summary: {summary}", *details]) + "\n")
    return summary


# -- the build --------------------------------------------------------------------------


def git_revision() -> str:
    try:
        rev = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture=True).strip()
        dirty = run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture=True,
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def find_image(inputs: str) -> str | None:
    out = docker("images", "-q", "--no-trunc", "--filter", "dangling=false",
                 "--filter", f"label={LABEL}.inputs-sha256={inputs}")
    ids = sorted(set(out.split()))
    return ids[0] if ids else None


def build(*, force: bool, no_cache: bool, tag: str | None, latest: bool,
          venv_only: bool = False, revision: str | None = None) -> str:
    own_dir = Path(tempfile.mkdtemp(prefix="own-wheel-", dir=BUILD))
    try:
        image_id = _build(build_own_wheel(own_dir), force=force, no_cache=no_cache, tag=tag,
                          latest=latest, venv_only=venv_only,
                          revision=revision or git_revision())
        print(image_id)
        return image_id
    finally:
        shutil.rmtree(own_dir, ignore_errors=True)


def _build(own: Path, *, force: bool, no_cache: bool, tag: str | None, latest: bool,
           venv_only: bool, revision: str) -> str:
    """Build from the qustody wheel ``own`` (built by the caller: ``repro`` builds twice
    from one wheel, so that a source edit in between cannot pass for irreproducibility)."""
    if not LOCK.exists():
        raise SystemExit(f"{LOCK} is missing: run `make image-lock`")
    lock_sha = sha256_file(LOCK)
    own_sha = sha256_file(own)
    base_ref, base_name = ensure_base()
    base_digest = base_ref.split("@", 1)[-1]
    fetch_wheelhouse()  # the SBOM reads the locked wheels' METADATA
    debian = debian_listing(base_ref, base_digest)
    sbom_sha = write_sboms(own, own_sha, lock_sha=lock_sha, base_name=base_name,
                           base_digest=base_digest, debian=debian)
    inputs_doc = {
        "lock": lock_sha,
        "qustody-wheel": own_sha,
        "base": base_digest,
        # a change to what the SBOM says (its generator included) rebuilds, so that the
        # image's sbom-sha256 label always names the SBOM written next to it
        "sbom": sbom_sha,
        "source-date-epoch": source_date_epoch(),
        **{f: sha256_file(HERE / f) for f in CONTEXT_FILES},
    }
    inputs = hashlib.sha256(json.dumps(inputs_doc, sort_keys=True).encode()).hexdigest()
    if venv_only:
        # the install stage alone (base + locked venv), to check the install reproduces; it
        # is never the image users run: no :latest, and a label find_image does not match
        if not tag:
            raise SystemExit("build --venv-only needs --tag")
        force, latest = True, False
    tags = [tag] if tag else [f"{IMAGE_REPO}:{inputs[:12]}"]
    if latest:
        tags.append(f"{IMAGE_REPO}:latest")
    existing = None if force else find_image(inputs)
    if existing:
        for t in tags:
            docker("tag", existing, t)
        log(f"up to date: {existing} (lock sha256 {lock_sha[:12]}, inputs {inputs[:12]})")
        return existing
    context = Path(tempfile.mkdtemp(prefix="context-", dir=BUILD))
    (context / "wheelhouse").mkdir(parents=True)
    for f in CONTEXT_FILES:
        shutil.copy2(HERE / f, context / f)
    for wheel in WHEELHOUSE.glob("*.whl"):
        try:
            os.link(wheel, context / "wheelhouse" / wheel.name)
        except OSError:
            shutil.copy2(wheel, context / "wheelhouse" / wheel.name)
    shutil.copy2(own, context / "wheelhouse" / own.name)
    (context / "requirements.txt").write_text(
        LOCK.read_text()
        + f"qustody[server] @ file:///tmp/wheelhouse/{own.name} \\\n    --hash=sha256:{own_sha}\n"
    )
    labels = {
        f"{OCI}.title": "Qustody single-user server",
        f"{OCI}.description": "JupyterLab + Qiskit with the Qustody credential guard",
        f"{OCI}.source": "https://github.com/qustody/qustody",
        f"{OCI}.licenses": "BSD-3-Clause",
        f"{OCI}.version": own.name.split("-")[1],
        f"{OCI}.revision": revision,
        f"{OCI}.base.name": base_name,
        f"{OCI}.base.digest": base_digest,
        f"{LABEL}.lock-sha256": lock_sha,
        f"{LABEL}.qustody-wheel-sha256": own_sha,
        f"{LABEL}.sbom-sha256": sbom_sha,
        f"{LABEL}.{'venv-' if venv_only else ''}inputs-sha256": inputs,
    }
    epoch = source_date_epoch()
    cmd = ["build", "--network", "none", "--force-rm", "--build-arg", f"BASE_IMAGE={base_ref}",
           "--build-arg", f"SOURCE_DATE_EPOCH={epoch}"]
    if no_cache:
        cmd.append("--no-cache")
    if venv_only:
        cmd += ["--target", "venv"]
    for key, value in labels.items():
        cmd += ["--label", f"{key}={value}"]
    # built under a tag of its own, then loaded again with the configuration's dates set
    # to SOURCE_DATE_EPOCH (repro.normalized_config) under the real tags
    built = f"{IMAGE_REPO}:build-{inputs[:12]}-{os.getpid()}"
    cmd += ["--tag", built]
    log(f"building {', '.join(tags)} from {base_name} ({base_digest[:19]}), offline")
    try:
        # the builder's steps on stderr: stdout is for the image id (and `repro --json`)
        run(["docker", *cmd, str(context)], stdout=sys.stderr)
    finally:
        shutil.rmtree(context, ignore_errors=True)
    import repro

    try:
        image_id = repro.load_config(
            repro.normalized_config(repro.image_config(built), epoch), tags
        )
    finally:
        # the build's own image goes, with its steps: they carry the labels set so far
        # (inputs-sha256 among them), and find_image must not take one for the image
        docker("rmi", built, check=False)
    image = image_inspect(tags[0])
    assert image is not None and image["Id"] == image_id
    if not venv_only and image_debian(image_id) != debian:
        raise SystemExit(
            f"{image_id}: its Debian packages are not the base's, which the SBOM lists; "
            "the Dockerfile must not install or remove packages (or the SBOM must read them "
            "from the image)"
        )
    if latest:
        prune_old(image_id)
    log(f"built {image_id}")
    return image_id


def reproduce(*, keep: bool, as_json: bool) -> dict[str, Any]:
    """Build the image twice from the same inputs (one qustody wheel, one revision label,
    ``--no-cache``) and compare the two: ids, layers' diff ids, config fields, and the
    files of any layer that differs (images/repro.py). A measurement: it does not fail
    when they differ."""
    import repro

    own_dir = Path(tempfile.mkdtemp(prefix="own-wheel-", dir=BUILD))
    token = hashlib.sha256(os.urandom(8)).hexdigest()[:6]
    tags = [f"{IMAGE_REPO}:repro-{token}-{n}" for n in (1, 2)]
    seconds = []
    try:
        own = build_own_wheel(own_dir)
        revision = git_revision()
        for tag in tags:
            began = time.monotonic()
            _build(own, force=True, no_cache=True, tag=tag, latest=False, venv_only=False,
                   revision=revision)
            seconds.append(round(time.monotonic() - began, 1))
        report = repro.compare(*tags)
    finally:
        shutil.rmtree(own_dir, ignore_errors=True)
        if not keep:
            for tag in tags:
                docker("rmi", tag, check=False)
    report["build_seconds"] = seconds
    if as_json:
        print(json.dumps(report, indent=1))
        return report
    print(f"build 1: {report['ids'][0]} ({seconds[0]} s)")
    print(f"build 2: {report['ids'][1]} ({seconds[1]} s)")
    print(f"same image id: {'yes' if report['same_id'] else 'no'}; "
          f"same layers: {'yes' if report['same_layers'] else 'no'}")
    for layer in report["layers"]:
        state = "same" if layer["same"] else "DIFFERS"
        print(f"  layer {layer['index']}: {state} {layer['first'][:19]} "
              f"{layer.get('created_by', '')[:70]}")
        for attr, found in layer.get("differences", {}).get("differ", {}).items():
            print(f"      {attr}: {found['count']} files, e.g. {', '.join(found['examples'][:3])}")
        for side in ("only_in_first", "only_in_second"):
            names = layer.get("differences", {}).get(side)
            if names:
                print(f"      {side.replace('_', ' ')}: {', '.join(names[:5])}")
    if report["config_differences"]:
        print(f"  config differs in {len(report['config_differences'])} fields:")
        for line in report["config_differences"][:12]:
            print(f"      {line}")
    return report


def prune_old(keep: str) -> None:
    """Untag earlier builds (qustody/singleuser:<inputs>); images still in use stay."""
    out = docker("images", IMAGE_REPO, "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}")
    for line in out.splitlines():
        ref, _, image_id = line.partition(" ")
        tag = ref.rsplit(":", 1)[-1]
        if image_id != keep and re.fullmatch(r"[0-9a-f]{12}", tag):
            docker("rmi", ref, check=False)


MANIFEST_SCRIPT = r"""
import hashlib, os, subprocess, sys
root = "/opt/qustody/venv"
for d, dirs, files in os.walk(root):
    dirs.sort()
    for f in sorted(files):
        p = os.path.join(d, f)
        if os.path.islink(p):
            print("L", p, os.readlink(p))
            continue
        st = os.stat(p)
        h = hashlib.sha256(open(p, "rb").read()).hexdigest()
        print("F", p, oct(st.st_mode & 0o7777), st.st_size, h)
for line in subprocess.run(["dpkg-query", "-W", "-f", "${Package}=${Version}\n"],
                           capture_output=True, text=True, check=True).stdout.split():
    print("D", line)
"""


def manifest(image: str) -> str:
    """The installed file set of IMAGE: every file under the venv with its hash, and dpkg."""
    return docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--user",
        "1000:1000",
        "--entrypoint",
        "/opt/qustody/venv/bin/python",
        image,
        "-c",
        MANIFEST_SCRIPT,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="command")
    b = sub.add_parser("build", help="build the image (cached by its inputs)")
    b.add_argument("--force", action="store_true", help="build even if an image is up to date")
    b.add_argument("--no-cache", action="store_true", help="docker build --no-cache")
    b.add_argument("--tag", help="tag instead of qustody/singleuser:<inputs>")
    b.add_argument("--no-latest", action="store_true", help="do not move the :latest tag")
    b.add_argument("--revision", help="the org.opencontainers.image.revision label "
                   "(default: the checkout's commit, -dirty with local changes); a rebuild "
                   "that is to match an image gives that image's")
    b.add_argument("--venv-only", action="store_true",
                   help="build only the install stage (base + venv; needs --tag): what the "
                   "reproducibility test rebuilds")
    sub.add_parser("lock", help="re-resolve images/requirements.lock")
    sub.add_parser("base", help="make sure the base image exists; print its digest")
    sub.add_parser("info", help="the current image as JSON")
    sub.add_parser("sbom", help="write the SBOMs (build/image/sbom-*.cdx.json) without "
                   "building; print the image SBOM's sha256")
    v = sub.add_parser("vulns", help="check the lock for known vulnerabilities (pip-audit); "
                       "write build/image/vulnerabilities.txt, print a summary; exits 0")
    v.add_argument("--service", choices=("pypi", "osv"), default="pypi",
                   help="pip-audit's advisory service (default: PyPI's JSON API)")
    v.add_argument("--osv-url", help="an OSV API of your own (with --service osv)")
    r = sub.add_parser("repro", help="build twice from the same inputs (--no-cache) and "
                       "compare: ids, layers, config, differing files")
    r.add_argument("--keep", action="store_true", help="keep both images (repro-*-1/2 tags)")
    r.add_argument("--json", action="store_true", help="the comparison as JSON")
    m = sub.add_parser("manifest", help="print the installed file set of an image")
    m.add_argument("image")
    args = p.parse_args(argv)
    BUILD.mkdir(parents=True, exist_ok=True)
    with (BUILD / ".lock").open("w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # one build at a time in this checkout
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if args.command in (None, "build"):
        build(
            force=getattr(args, "force", False),
            no_cache=getattr(args, "no_cache", False),
            tag=getattr(args, "tag", None),
            latest=not getattr(args, "no_latest", False),
            venv_only=getattr(args, "venv_only", False),
            revision=getattr(args, "revision", None),
        )
    elif args.command == "lock":
        lock()
    elif args.command == "base":
        print(ensure_base()[0])
    elif args.command == "info":
        image = image_inspect(f"{IMAGE_REPO}:latest")
        if image is None:
            raise SystemExit(f"no {IMAGE_REPO}:latest image: run `make image`")
        config = image["Config"]
        assert isinstance(config, dict)
        labels = config.get("Labels") or {}
        sbom_sha = labels.get(f"{LABEL}.sbom-sha256")
        info = {
            "id": image["Id"],
            "sbom_sha256": sbom_sha,
            "sbom_file": str(SBOM_IMAGE),
            "sbom_file_matches": SBOM_IMAGE.exists() and sha256_file(SBOM_IMAGE) == sbom_sha,
            "labels": labels,
        }
        print(json.dumps(info, indent=1))
    elif args.command == "sbom":
        own_dir = Path(tempfile.mkdtemp(prefix="own-wheel-", dir=BUILD))
        try:
            own = build_own_wheel(own_dir)
            base_ref, base_name = ensure_base()
            base_digest = base_ref.split("@", 1)[-1]
            fetch_wheelhouse()
            print(write_sboms(own, sha256_file(own), lock_sha=sha256_file(LOCK),
                              base_name=base_name, base_digest=base_digest,
                              debian=debian_listing(base_ref, base_digest)))
        finally:
            shutil.rmtree(own_dir, ignore_errors=True)
    elif args.command == "vulns":
        summary = vulnerability_report(service=args.service, osv_url=args.osv_url)
        print(f"[image] vulnerabilities: {summary} (report: {VULN_REPORT})", flush=True)
    elif args.command == "repro":
        reproduce(keep=args.keep, as_json=args.json)
    elif args.command == "manifest":
        sys.stdout.write(manifest(args.image))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
