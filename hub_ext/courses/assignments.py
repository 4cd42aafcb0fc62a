"""Release and collect a course's assignments, on the Docker volumes the spawner uses.

No code runs in a container: each step creates a container that is never started, with
the volumes it needs mounted, and moves files through Docker's archive API
(``get_archive``/``put_archive``). The container has no network, a read-only root and
the image the hub allows.

- **release** copies ``assignments/<name>/`` from the course's assignments volume
  (``Course.assignments_from``: its staff's volume, else its materials) into each
  student's home (``<home>/<course>/<name>/``), owned by the servers' user. Whatever the
  student already has at a path (a file, a folder, a link), and everything under it, is
  left alone: releasing twice never overwrites or removes work.
- **collect** snapshots each student's ``<home>/<course>/<name>/`` (read-only mount) into
  one archive for the instructors, ``<archive dir>/<course>/<name>/<name>-<time>.tar``
  (a new file each time, so every audited manifest stays checkable): ``<student>/<files>``
  plus ``manifest.json`` (each file's SHA-256, size and time, whether it changed after the
  due time, whether it is still the released template; the credential guard's findings,
  never their values). The manifest's SHA-256 goes into the audit log.

Both read a folder's files, never its links: a symlink is not followed, and a hard link's
file is taken once, under the first of its names in the folder (its other names are left
out). A folder past ``MAX_SUBMISSION_BYTES`` or ``MAX_ENTRIES`` is not read at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..volumes import HOME_OWNER
from .model import Assignment, Course, CourseError, materials_ok, stamp

#: A student's assignment larger than this is not collected (said in the manifest).
MAX_SUBMISSION_BYTES = 64 * 1024 * 1024
#: Nor one with more files, folders and links than this (each is parsed, hashed, scanned).
MAX_ENTRIES = 10_000
LABEL = "io.qustody.course-helper"
log = logging.getLogger("qustody.courses.assignments")


class NotRead(ValueError):
    """A student's folder that is not read; the message says why, to staff."""


class FolderTooLarge(NotRead):
    """A folder past one of the limits: not read (the message says which, to staff)."""


@dataclass
class Volumes:
    """How to reach volumes: the Docker client, the allowed image, where homes mount."""

    client: Any  # docker.DockerClient
    image: str
    home_mount: str
    home_volume: Callable[[str], str]
    uid: int = 1000  # SpawnPolicy.run_as: released files belong to the servers' user
    gid: int = 1000
    #: SpawnPolicy.materials_volume_prefix: the only volumes read or deleted as materials
    materials_prefix: str = "qustody-materials-"

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
            user=f"{self.uid}:{self.gid}",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            labels={LABEL: "true"},
        )
        try:
            yield container
        finally:
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def remove_volume(self, name: str) -> bool:
        """Delete a volume; False if it was not there. A volume still mounted by a
        container is refused by the engine (the error says which)."""
        import docker.errors

        try:
            self.client.volumes.get(name).remove()
        except docker.errors.NotFound:
            return False
        return True

    def has_volume(self, name: str) -> bool:
        import docker.errors

        try:
            self.client.volumes.get(name)
        except docker.errors.NotFound:
            return False
        return True

    def owner_of(self, name: str) -> str | None:
        """The user a home volume is labelled for (``HOME_OWNER``); None without a label
        (a home made before homes were labelled)."""
        labels = self.client.volumes.get(name).attrs.get("Labels") or {}
        owner = labels.get(HOME_OWNER)
        return str(owner) if owner is not None else None


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
            raise FolderTooLarge(f"more than {limit // (1024 * 1024)} MiB")
    return out.getvalue()


def path_kind(container: Any, path: str) -> str | None:
    """``dir``, ``file``, ``link`` or ``other`` for a path in the container; None if absent.
    (Only the archive's stat header is read.)"""
    import docker.errors

    try:
        stream, stat = container.get_archive(path)
    except docker.errors.NotFound:
        return None
    del stream  # never read: the response is dropped with it
    mode = int((stat or {}).get("mode", 0))
    if (stat or {}).get("linkTarget") or mode & (1 << 27):
        return "link"
    if mode & (1 << 31):
        return "dir"
    return "file" if not mode & (0xF << 24) else "other"


def _members(data: bytes) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Files and directories of a tar, sorted by path; symlinks, devices and the like are
    left out, and so are hard links: the archive API sends a file's later names as ~512-byte
    headers, so reading the file again for each would turn a small stream into gigabytes
    (and tarfile finds each link's file by a linear search). FolderTooLarge past
    ``MAX_ENTRIES`` entries or ``MAX_SUBMISSION_BYTES`` of files."""
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    size = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for count, m in enumerate(tar, start=1):  # one at a time: stop at the limit
            if count > MAX_ENTRIES:
                raise FolderTooLarge(f"more than {MAX_ENTRIES:,} files, folders and links")
            if m.isdir():
                out.append((m, None))
            elif m.isreg():
                size += m.size  # what extracting it makes (a sparse file: all of it)
                if size > MAX_SUBMISSION_BYTES:
                    raise FolderTooLarge(f"more than {MAX_SUBMISSION_BYTES // (1024 * 1024)} "
                                         "MiB of files")
                f = tar.extractfile(m)
                out.append((m, f.read() if f else b""))
    return sorted(out, key=lambda item: item[0].name)


def _names(data: bytes) -> dict[str, str]:
    """Every path in a tar and what it is (``dir`` or ``other``), links included."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: "dir" if m.isdir() else "other" for m in tar.getmembers()}


def _blocked(name: str, have: dict[str, str]) -> bool:
    """Whether the student has something at ``name`` or at a parent that is not a folder."""
    parts = name.split("/")
    for i in range(1, len(parts) + 1):
        found = have.get("/".join(parts[:i]))
        if found is not None and (i == len(parts) or found != "dir"):
            return True
    return False


@dataclass
class ReleaseReport:
    course: str
    assignment: str
    written: dict[str, int] = field(default_factory=dict)  # student -> files written
    kept: dict[str, int] = field(default_factory=dict)  # student -> paths they had already
    problems: dict[str, str] = field(default_factory=dict)  # student -> why not released

    def figures(self) -> dict[str, int]:
        """The ``assignment-released`` record's figures."""
        return {"students": len(self.written), "files": sum(self.written.values()),
                "kept": sum(self.kept.values()), "problems": len(self.problems)}


def template(volumes: Volumes, course: Course,
             assignment: Assignment) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """The assignment's files and folders from the course's assignments volume
    (``_members`` of a tar rooted at ``<name>/``)."""
    source = course.assignments_from
    if source and not materials_ok(volumes.materials_prefix, source):
        raise CourseError(f"{course.id}: {source!r} is not a materials volume (its "
                          f"name must start with {volumes.materials_prefix!r}); nothing "
                          "is read from it")
    if not source or not volumes.has_volume(source):
        raise CourseError(f"{course.id}: the assignments volume {source or '(none)'} "
                          "does not exist; create and fill it first")
    try:
        with volumes.mounted({source: ("/src", "ro")}) as c:
            tree = read_tree(c, f"/src/assignments/{assignment.name}")
        if tree is None:
            raise CourseError(f"{course.id}: the assignments volume {source} has no "
                              f"assignments/{assignment.name}/ to release")
        return _members(tree)
    except FolderTooLarge as e:
        raise CourseError(f"{course.id}: assignments/{assignment.name}/ in {source} "
                          f"is too large to release ({e})") from None


#: ``progress(done, of)``: called after each student (the instructor page's progress).
Progress = Callable[[int, int], None]


def release(volumes: Volumes, course: Course, assignment: Assignment,
            students: Iterable[str], progress: Progress | None = None) -> ReleaseReport:
    files = template(volumes, course, assignment)
    report = ReleaseReport(course.id, assignment.name)
    everyone = sorted(set(students))
    for i, student in enumerate(everyone):
        if progress is not None:
            progress(i, len(everyone))
        try:
            _release_one(volumes, course, assignment, files, student, report)
        except FolderTooLarge as e:
            report.problems[student] = f"~/{course.id}/{assignment.name} has {e}"
        except Exception as e:  # the engine refused: the others still get theirs
            report.problems[student] = (f"{logged(e, f'release to {student}')}, details in "
                                        "the log")
    if progress is not None:
        progress(len(everyone), len(everyone))
    return report


def _release_one(volumes: Volumes, course: Course, assignment: Assignment,
                 files: list[tuple[tarfile.TarInfo, bytes | None]], student: str,
                 report: ReleaseReport) -> None:
    home = volumes.home_volume(student)
    if not volumes.has_volume(home):
        volumes.client.volumes.create(home, labels={HOME_OWNER: student})
    elif volumes.owner_of(home) not in (None, student):
        report.problems[student] = "their home volume belongs to another account: left alone"
        return
    with volumes.mounted({home: (volumes.home_mount, "rw")}) as c:
        top = path_kind(c, f"{volumes.home_mount}/{course.id}")
        if top not in (None, "dir"):
            report.problems[student] = f"~/{course.id} is a {top}, not a folder: left alone"
            return
        existing = read_tree(c, f"{volumes.home_mount}/{course.id}/{assignment.name}") \
            if top == "dir" else None
        have = _names(existing) if existing else {}
        out = io.BytesIO()
        written = kept = 0
        with tarfile.open(fileobj=out, mode="w") as tar:
            if top is None:
                info = tarfile.TarInfo(course.id)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, int(time.time())
                info.uid, info.gid = volumes.uid, volumes.gid
                tar.addfile(info)
            for member, data in files:
                if _blocked(member.name, have):
                    kept += data is not None
                    continue
                info = tarfile.TarInfo(f"{course.id}/{member.name}")
                # the template's own time: "changed after the due time" stays meaningful
                info.uid, info.gid, info.mtime = volumes.uid, volumes.gid, int(member.mtime)
                if data is None:
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    tar.addfile(info)
                else:
                    info.mode, info.size = 0o644, len(data)
                    tar.addfile(info, io.BytesIO(data))
                    written += 1
        c.put_archive(volumes.home_mount, out.getvalue())
    report.written[student], report.kept[student] = written, kept


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

    def figures(self) -> dict[str, Any]:
        """The ``assignment-collected`` record's figures: the summary and the manifest's hash."""
        return {**self.summary(), "manifest_sha256": self.manifest_sha256}


@functools.cache
def _engine() -> Any:
    """The guard's scanner, built once (its rules compile once)."""
    from server_ext.scanner import rules
    from server_ext.scanner.engine import Engine
    from server_ext.scanner.fingerprint import Fingerprinter

    return Engine(list(rules.ALL), fingerprinter=Fingerprinter(None))


def findings_in(path: str, data: bytes) -> list[dict[str, Any]]:
    """The credential guard's findings in one collected file: detector and line only."""
    from server_ext.scanner.documents import scan_file, scan_notebook_file

    engine = _engine()
    try:
        if path.endswith(".ipynb"):
            located = scan_notebook_file(engine, path, data, 256)
        else:
            located = scan_file(engine, path, data)
    except Exception:  # not a notebook after all: scan it as text
        located = scan_file(engine, path, data)
    return sorted(
        ({"file": path, "detector": f.finding.detector, "line": f.finding.line}
         for f in located),
        key=lambda f: (f["file"], f["line"], f["detector"]),
    )


def collect(volumes: Volumes, course: Course, assignment: Assignment, students: Iterable[str],
            archive_root: Path, now: float | None = None,
            progress: Progress | None = None) -> Collection:
    now = time.time() if now is None else now
    released: dict[str, str] = {}  # path in the assignment -> the template's SHA-256
    with contextlib.suppress(CourseError):
        for member, data in template(volumes, course, assignment):
            if data is not None:
                released[member.name.split("/", 1)[-1]] = hashlib.sha256(data).hexdigest()
    directory = archive_root / course.id / assignment.name
    baseline, at_due = _at_due(directory, assignment.name, assignment.due)
    about = {"assignment": assignment.name, "due": stamp(assignment.due),
             "late_by": f"the due-time collection {baseline}" if baseline else "file times"}
    done = _snapshot(volumes, course, students, folder=f"{course.id}/{assignment.name}",
                     directory=directory, name=assignment.name, now=now, about=about,
                     released=released, due=assignment.due, progress=progress, at_due=at_due)
    _prune(directory, assignment.name, keep={baseline} if baseline else set())
    return done


#: Collections of one assignment kept besides the first one at or after its due time
#: (each "Collect now" writes one: pressing it in a loop must not fill the hub's disk).
KEEP_COLLECTIONS = 10


def _collections(directory: Path, name: str) -> list[Path]:
    """An assignment's collected archives, oldest first (their names hold the time)."""
    try:
        return sorted(p for p in directory.glob(f"{name}-*.tar") if p.is_file())
    except OSError:
        return []


def _at_due(directory: Path, name: str,
            due: float) -> tuple[str | None, dict[str, dict[str, str]]]:
    """The first collection at or after the due time (the keeper's, normally), and what
    each student's folder held then (path -> SHA-256). A file that differs from it is late,
    whatever its time says: a student sets file times (``touch -d``) as they like. A
    student it could not collect is left out (their file times decide)."""
    for path in _collections(directory, name):
        try:
            with tarfile.open(path) as tar:
                member = tar.getmember("manifest.json")
                f = tar.extractfile(member)
                manifest = json.loads(f.read()) if f else {}
        except (OSError, KeyError, ValueError, tarfile.TarError):
            continue
        if str(manifest.get("collected_at", "")) < stamp(due):
            continue
        # a file that was already late then (the collection ran after the due time) keeps
        # a mark no hash can match: it stays late
        held = {
            student: {str(f["path"]): "late" if f.get("late") else str(f["sha256"])
                      for f in entry.get("files", [])}
            for student, entry in (manifest.get("students") or {}).items()
            if entry.get("status") in ("submitted", "untouched", "missing")
        }
        return path.name, held
    return None, {}


def _prune(directory: Path, name: str, keep: set[str]) -> None:
    """The newest ``KEEP_COLLECTIONS`` collections and those in ``keep``; older ones go."""
    found = _collections(directory, name)
    for path in found[: max(0, len(found) - KEEP_COLLECTIONS)]:
        if path.name not in keep:
            path.unlink(missing_ok=True)


#: Where the term-end archives go, under ``<archive root>/<course>/`` (no assignment can
#: have this name: assignment names start with a letter or digit).
TERM_END = "_term-end"


def archive_homes(volumes: Volumes, course: Course, students: Iterable[str],
                  archive_root: Path, now: float | None = None) -> Collection:
    """At the term's close: each student's ``~/<course>/`` into one archive with a
    manifest (``<archive root>/<course>/term-end/homes-<time>.tar``)."""
    now = time.time() if now is None else now
    return _snapshot(volumes, course, students, folder=course.id,
                     directory=archive_root / course.id / TERM_END, name="homes", now=now,
                     about={"assignment": TERM_END, "closed": stamp(course.term.closes)},
                     released={}, due=course.term.closes)


def _snapshot(volumes: Volumes, course: Course, students: Iterable[str], *, folder: str,
              directory: Path, name: str, now: float, about: dict[str, Any],
              released: dict[str, str], due: float,
              progress: Progress | None = None,
              at_due: dict[str, dict[str, str]] | None = None) -> Collection:
    """Each student's ``<home>/<folder>`` into ``<directory>/<name>-<time>.tar`` with a
    ``manifest.json`` (files, hashes, late ones, the guard's findings)."""
    manifest: dict[str, Any] = {"course": course.id, **about, "collected_at": stamp(now),
                                "students": {}}
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _remove_orphans(directory, name)
    # two writers in one second (the keeper and a button, the CLI) never share a name
    archive = directory / f"{name}-{stamp(now).replace(':', '')}-{secrets.token_hex(3)}.tar"
    tmp = directory / f".{archive.name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        # held from before the first byte until after the rename: an orphan is a partial
        # file nobody holds
        with os.fdopen(fd, "wb") as raw:
            fcntl.flock(raw.fileno(), fcntl.LOCK_EX)
            with tarfile.open(fileobj=raw, mode="w") as tar:
                everyone = sorted(set(students))
                for i, student in enumerate(everyone):
                    if progress is not None:
                        progress(i, len(everyone))
                    manifest["students"][student] = _collect_one(
                        volumes, folder, due, student, released, tar,
                        (at_due or {}).get(student))
                body = json.dumps(manifest, indent=1, sort_keys=True).encode()
                info = tarfile.TarInfo("manifest.json")
                info.size, info.mtime, info.mode = len(body), int(now), 0o644
                tar.addfile(info, io.BytesIO(body))
            raw.flush()
            os.fsync(raw.fileno())
            os.replace(tmp, archive)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if progress is not None:
        progress(len(everyone), len(everyone))
    return Collection(course.id, str(about["assignment"]), archive, manifest,
                      hashlib.sha256(body).hexdigest())


def _remove_orphans(directory: Path, name: str) -> None:
    """Partial archives of a writer that died (a crash mid-collect): no one holds their lock."""
    for tmp in directory.glob(f".{name}-*.tmp"):
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # still the file we locked (not renamed into an archive, not a new writer's)
            if os.fstat(fd).st_ino == os.stat(tmp).st_ino:
                tmp.unlink(missing_ok=True)
        except OSError:
            continue  # a live writer's, or gone
        finally:
            os.close(fd)


def _collect_one(volumes: Volumes, folder: str, due: float, student: str,
                 released: dict[str, str], tar: tarfile.TarFile,
                 at_due: dict[str, str] | None = None) -> dict[str, Any]:
    """A student's folder into ``tar``, and their manifest entry. Their folder's trouble (too
    large, the engine's refusal, the guard's scan) is said in the entry, nothing of theirs
    goes into the archive, and the other students are still collected."""
    missing: dict[str, Any] = {"status": "missing", "files": [], "late": False, "findings": []}
    try:
        files = _submission(volumes, folder, student)
        if files is None:
            return missing
        entry = _entry(files, due, released, at_due)
    except NotRead as e:
        return {**missing, "status": f"not collected: {e}"}
    except Exception as e:
        return {**missing, "status": f"not collected: {logged(e, f'collect from {student}')}"}
    for member, data in files:  # only once the whole entry is known
        if data is not None:
            info = tarfile.TarInfo(f"{student}/{_relative(member)}")
            info.size, info.mtime, info.mode = len(data), int(member.mtime), 0o644
            tar.addfile(info, io.BytesIO(data))
    return entry


def _submission(volumes: Volumes, folder: str,
                student: str) -> list[tuple[tarfile.TarInfo, bytes | None]] | None:
    """The files and folders of a student's ``<home>/<folder>``; None if there is none."""
    home = volumes.home_volume(student)
    if not volumes.has_volume(home):
        return None
    if volumes.owner_of(home) not in (None, student):
        raise NotRead("their home volume belongs to another account")
    with volumes.mounted({home: (volumes.home_mount, "ro")}) as c:
        tree = read_tree(c, f"{volumes.home_mount}/{folder}")
    return None if tree is None else _members(tree)


def _relative(member: tarfile.TarInfo) -> str:
    """A path in the collected folder (the archive's names start with the folder's)."""
    return member.name.split("/", 1)[1] if "/" in member.name else member.name


def _entry(files: list[tuple[tarfile.TarInfo, bytes | None]], due: float,
           released: dict[str, str], at_due: dict[str, str] | None = None) -> dict[str, Any]:
    """A submission's manifest entry: each file's hash, size and time, the guard's findings.
    A file is late when it differs from what the folder held at the due-time collection
    (``at_due``), or, without one, when its time is after the due time."""
    entry: dict[str, Any] = {"status": "untouched", "files": [], "late": False, "findings": []}
    for member, data in files:
        if data is None:
            continue
        rel = _relative(member)
        digest = hashlib.sha256(data).hexdigest()
        template = released.get(rel) == digest
        changed = at_due.get(rel) != digest if at_due is not None else member.mtime > due
        late = changed and not template
        if not template:
            entry["status"] = "submitted"
        entry["files"].append({
            "path": rel, "sha256": digest, "size": len(data),
            "modified": stamp(member.mtime), "late": late, "as_released": template,
        })
        entry["late"] = entry["late"] or late
        entry["findings"] += findings_in(rel, data)
    return entry


def logged(e: Exception, what: str) -> str:
    """What staff are told of an unexpected error: its kind. Its words (the engine's, the
    hub's, the disk's) name host paths, volumes and API URLs: they go to the log only."""
    log.warning("courses: %s failed: %s: %s", what, type(e).__name__, e)
    return type(e).__name__
