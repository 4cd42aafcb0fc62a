"""Release and collect a course's assignments, on the Docker volumes the spawner uses.

No code runs in a container: each step creates a container that is never started, with
the volumes it needs mounted, and moves files through Docker's archive API
(``get_archive``/``put_archive``). The container has no network, a read-only root and
the image the hub allows.

- **release** copies ``assignments/<name>/`` from the course's materials volume into each
  student's home (``<home>/<course>/<name>/``), owned by the servers' user. A file the
  student already has is left alone: releasing twice never overwrites work.
- **collect** snapshots each student's ``<home>/<course>/<name>/`` (read-only mount) into
  one archive for the instructors, ``<archive dir>/<course>/<name>/<name>.tar``:
  ``<student>/<files>`` plus ``manifest.json`` (each file's SHA-256, size, time, and
  whether it changed after the due time; the credential guard's findings, never their
  values). The manifest's SHA-256 goes into the audit log (``assignment-collected``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import write_atomically
from .model import Assignment, Course, CourseError, stamp

#: A student's assignment larger than this is not collected (said in the manifest).
MAX_SUBMISSION_BYTES = 64 * 1024 * 1024
#: The servers' user (SpawnPolicy.run_as): released files belong to it.
UID = GID = 1000
LABEL = "io.qustody.course-helper"


@dataclass
class Volumes:
    """How to reach volumes: the Docker client, the allowed image, where homes mount."""

    client: Any  # docker.DockerClient
    image: str
    home_mount: str
    home_volume: Callable[[str], str]

    @contextlib.contextmanager
    def mounted(self, mounts: dict[str, tuple[str, str]]) -> Iterator[Any]:
        """A created, never started container with ``volume -> (target, mode)``."""
        container = self.client.containers.create(
            self.image,
            command=["true"],
            volumes={name: {"bind": target, "mode": mode} for name, (target, mode) in
                     mounts.items()},
            network_disabled=True,
            read_only=True,
            user=f"{UID}:{GID}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            labels={LABEL: "true"},
        )
        try:
            yield container
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def has_volume(self, name: str) -> bool:
        import docker.errors

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            return False
        return True


def read_tree(container: Any, path: str, limit: int = MAX_SUBMISSION_BYTES) -> bytes | None:
    """The tar of ``path`` in the container (None: no such path); ValueError past ``limit``."""
    import docker.errors

    try:
        stream, _ = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    out = io.BytesIO()
    for chunk in stream:
        out.write(chunk)
        if out.tell() > limit + 1024 * 1024:  # tar headers and padding on top
            raise ValueError(f"more than {limit // (1024 * 1024)} MiB")
    return out.getvalue()


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Regular files and directories of a tar (links, devices and the like left out)."""
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            if m.isdir():
                out.append((m, None))
            elif m.isreg():
                f = tar.extractfile(m)
                out.append((m, f.read() if f else b""))
    return out


@dataclass
class ReleaseReport:
    course: str
    assignment: str
    written: dict[str, int] = field(default_factory=dict)  # student -> files written
    kept: dict[str, int] = field(default_factory=dict)  # student -> files they had already


def release(volumes: Volumes, course: Course, assignment: Assignment,
            students: Iterable[str]) -> ReleaseReport:
    if not course.materials:
        raise CourseError(f"{course.id}: no [materials] volume to release {assignment.name} from")
    with volumes.mounted({course.materials: ("/src", "ro")}) as c:
        tree = read_tree(c, f"/src/assignments/{assignment.name}")
    if tree is None:
        raise CourseError(f"{course.id}: the materials volume {course.materials} has no "
                          f"assignments/{assignment.name}/ to release")
    files = _members(tree)
    report = ReleaseReport(course.id, assignment.name)
    for student in sorted(set(students)):
        home = volumes.home_volume(student)
        if not volumes.has_volume(home):
            volumes.client.volumes.create(home, labels={"io.qustody.user": student})
        with volumes.mounted({home: (volumes.home_mount, "rw")}) as c:
            existing = read_tree(c, f"{volumes.home_mount}/{course.id}/{assignment.name}")
            have = {m.name for m, _ in _members(existing)} if existing else set()
            out = io.BytesIO()
            written = kept = 0
            with tarfile.open(fileobj=out, mode="w") as tar:
                top = tarfile.TarInfo(course.id)
                top.type, top.mode, top.uid, top.gid = tarfile.DIRTYPE, 0o755, UID, GID
                tar.addfile(top)
                for member, data in files:
                    if member.name in have and data is not None:
                        kept += 1
                        continue
                    info = tarfile.TarInfo(f"{course.id}/{member.name}")
                    info.uid, info.gid, info.mtime = UID, GID, int(time.time())
                    if data is None:
                        info.type, info.mode = tarfile.DIRTYPE, 0o755
                        tar.addfile(info)
                    else:
                        info.mode, info.size = 0o644, len(data)
                        tar.addfile(info, io.BytesIO(data))
                        written += 1
            c.put_archive(volumes.home_mount, out.getvalue())
        report.written[student], report.kept[student] = written, kept
    return report


@dataclass
class Collection:
    course: str
    assignment: str
    archive: Path
    manifest: dict[str, Any]
    manifest_sha256: str

    def summary(self) -> dict[str, int]:
        students = self.manifest["students"].values()
        return {
            "students": len(self.manifest["students"]),
            "submitted": sum(1 for s in students if s["status"] == "submitted"),
            "late": sum(1 for s in students if s.get("late")),
            "findings": sum(len(s.get("findings", [])) for s in students),
        }


def findings_in(path: str, data: bytes) -> list[dict[str, Any]]:
    """The credential guard's findings in one collected file: detector and line only."""
    from server_ext.scanner import rules
    from server_ext.scanner.documents import scan_file, scan_notebook
    from server_ext.scanner.engine import Engine
    from server_ext.scanner.fingerprint import Fingerprinter

    engine = Engine(list(rules.ALL), fingerprinter=Fingerprinter(None))
    try:
        if path.endswith(".ipynb"):
            located = scan_notebook(engine, json.loads(data), max_depth=256).located()
        else:
            located = scan_file(engine, path, data)
    except Exception:  # not a notebook after all: scan it as text
        located = scan_file(engine, path, data)
    return [{"file": path, "detector": f.finding.detector, "line": f.finding.line}
            for f in located]


def collect(volumes: Volumes, course: Course, assignment: Assignment, students: Iterable[str],
            archive_root: Path, now: float | None = None) -> Collection:
    now = time.time() if now is None else now
    manifest: dict[str, Any] = {
        "course": course.id,
        "assignment": assignment.name,
        "due": stamp(assignment.due),
        "collected_at": stamp(now),
        "students": {},
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for student in sorted(set(students)):
            entry: dict[str, Any] = {"status": "missing", "files": [], "late": False}
            manifest["students"][student] = entry
            home = volumes.home_volume(student)
            if not volumes.has_volume(home):
                continue
            with volumes.mounted({home: (volumes.home_mount, "ro")}) as c:
                try:
                    tree = read_tree(c, f"{volumes.home_mount}/{course.id}/{assignment.name}")
                except ValueError as e:
                    entry["status"] = f"too large: {e}"
                    continue
            if tree is None:
                continue
            entry["status"] = "submitted"
            findings: list[dict[str, Any]] = []
            for member, data in _members(tree):
                if data is None:
                    continue
                rel = member.name.split("/", 1)[1] if "/" in member.name else member.name
                late = member.mtime > assignment.due
                entry["files"].append({
                    "path": rel,
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "size": len(data),
                    "modified": stamp(member.mtime),
                    "late": late,
                })
                entry["late"] = entry["late"] or late
                findings += findings_in(rel, data)
                info = tarfile.TarInfo(f"{student}/{rel}")
                info.size, info.mtime, info.mode = len(data), member.mtime, 0o644
                tar.addfile(info, io.BytesIO(data))
            entry["findings"] = findings
        body = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size, info.mtime, info.mode = len(body), int(now), 0o644
        tar.addfile(info, io.BytesIO(body))
    directory = archive_root / course.id / assignment.name
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    archive = directory / f"{assignment.name}.tar"
    write_atomically(archive, out.getvalue())
    os.chmod(archive, 0o600)
    return Collection(course.id, assignment.name, archive, manifest,
                      hashlib.sha256(body).hexdigest())
