"""Releasing and collecting an assignment on real Docker volumes, through ``qustody course``:
release never overwrites a student's work, collect snapshots each student's folder with a
manifest (hashes, late files, the guard's findings without values) recorded in the audit
log, and nothing is left running."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hubtest import docker

from hub_ext.audit.verify import verify
from hub_ext.courses.model import stamp
from hub_ext.spawner import SpawnPolicy

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
HOME = "/home/jovyan"


@pytest.fixture
def names(docker_engine: str) -> Iterator[dict[str, str]]:
    prefix = f"qtest{secrets.token_hex(3)}"
    template = f"{prefix}-home-{{username}}"
    policy = SpawnPolicy(home_volume_template=template)
    out = {
        "template": template,
        "materials": f"qustody-materials-{prefix}",
        **{u: policy.volume_name(u) for u in ("sam", "sue", "tom", "tia", "una")},
    }
    yield out
    for vol in docker("volume", "ls", "-q", "--filter", f"name={prefix}").split():
        docker("volume", "rm", "-f", vol, check=False)


def in_volume(image: str, volume: str, script: str, user: str = "1000") -> str:
    """Run a shell script in a throwaway container with ``volume`` at the home (the test's
    stand-in for a student working in their server, or an admin filling the materials)."""
    return docker("run", "--rm", "--network", "none", "--user", user, "--entrypoint", "sh",
                  "-v", f"{volume}:{HOME}", image, "-c", script)


def qustody(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "server_ext.cli", "course", *args],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_release_keeps_work_and_collect_archives_it_with_an_audited_manifest(
    names, singleuser_image, tmp_path
):
    image = singleuser_image
    docker("volume", "create", names["materials"])
    in_volume(image, names["materials"], user="0", script=(
        f"mkdir -p {HOME}/assignments/hw1/data && "
        f"echo '{{\"cells\": [], \"nbformat\": 4, \"nbformat_minor\": 5, \"metadata\": {{}}}}' "
        f"> {HOME}/assignments/hw1/bell.ipynb && echo 'Prepare a Bell state.' > "
        f"{HOME}/assignments/hw1/README.md && echo 0,1 > {HOME}/assignments/hw1/data/x.csv"
    ))
    courses = tmp_path / "courses"
    courses.mkdir()
    due = time.time() + 3600
    (courses / "course-101.toml").write_text(
        f'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = {stamp(due - 86400)}\n'
        f'end = {stamp(due + 86400)}\n[roster]\ngroup = "course-101"\n'
        f'[materials]\nvolume = "{names["materials"]}"\n'
        f'[[assignments]]\nname = "hw1"\nrelease = {stamp(due - 3600)}\ndue = {stamp(due)}\n'
    )
    audit_log, key = tmp_path / "audit" / "audit.jsonl", tmp_path / "audit.key"
    common = ["--dir", str(courses), "--image", image, "--home-volume-template",
              names["template"], "--actor", "ivan", "--audit-log", str(audit_log),
              "--audit-key-file", str(key)]
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)

    out = qustody("release", "course-101", "hw1", "--student", "sam", "--student", "sue",
                  "--student", "una", *common)
    assert out.returncode == 0, out.stderr
    assert "sam: 3 file(s) written, 0 kept" in out.stdout, out.stdout
    # no student had a home yet: released all the same, with a word on the template
    assert "warning: none of these students has a home volume yet" in out.stderr
    ls = in_volume(image, names["sam"], f"cd {HOME}/course-101/hw1 && ls -ln README.md && "
                   "cat README.md && ls data")
    assert "1000 1000" in ls and "Prepare a Bell state." in ls and "x.csv" in ls, ls

    # the students work: sam on time (with a token pasted in), sue edits after the due time
    token = "ghp_" + "".join(secrets.choice(string.ascii_letters + string.digits)
                             for _ in range(36))
    in_volume(image, names["sam"],
              f"echo 'my answer' > {HOME}/course-101/hw1/README.md && "
              f"echo 'TOKEN = \"{token}\"' > {HOME}/course-101/hw1/run.py")
    in_volume(image, names["sue"], f"echo 'late answer' > {HOME}/course-101/hw1/README.md && "
              f"touch -d @{int(due) + 60} {HOME}/course-101/hw1/README.md")
    again = qustody("release", "course-101", "hw1", "--student", "sam", *common)
    assert "sam: 0 file(s) written, 3 kept" in again.stdout, again.stdout
    assert "warning" not in again.stderr, again.stderr
    assert "my answer" in in_volume(image, names["sam"], f"cat {HOME}/course-101/hw1/README.md")
    # tia has a file where the assignment has a folder, and a link where it has a file:
    # both are hers and stay; the rest is released around them
    docker("volume", "create", names["tia"])
    in_volume(image, names["tia"], f"mkdir -p {HOME}/course-101/hw1 && cd {HOME}/course-101/hw1"
              " && echo mine > data && ln -s /etc/hostname README.md")
    tia = qustody("release", "course-101", "hw1", "--student", "tia", *common)
    assert "tia: 1 file(s) written, 2 kept" in tia.stdout, (tia.stdout, tia.stderr)
    kept = in_volume(image, names["tia"], f"cd {HOME}/course-101/hw1 && cat data && "
                     "readlink README.md && ls")
    assert kept.split() == ["mine", "/etc/hostname", "README.md", "bell.ipynb", "data"], kept

    done = qustody("collect", "course-101", "hw1", "--student", "sam", "--student", "sue",
                   "--student", "tom", "--student", "tia", "--student", "una", *common)
    assert done.returncode == 0, done.stderr
    assert "sam: submitted, 4 file(s), 1 credential finding(s)" in done.stdout, done.stdout
    assert "sue: submitted, 3 file(s) LATE" in done.stdout
    assert "tom: missing, 0 file(s)" in done.stdout
    # tia's own file is work; her link is not followed; una only has what was released
    assert "tia: submitted, 2 file(s)" in done.stdout, done.stdout
    assert "una: untouched, 3 file(s)" in done.stdout, done.stdout
    (archive,) = (courses / "archive" / "course-101" / "hw1").glob("hw1-*.tar")
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    assert files["sam/README.md"] == b"my answer\n" and files["sue/README.md"] == b"late answer\n"
    manifest_bytes = files["manifest.json"]
    manifest = json.loads(manifest_bytes)
    sam = manifest["students"]["sam"]
    assert {f["path"]: f["sha256"] for f in sam["files"]}["README.md"] == hashlib.sha256(
        b"my answer\n").hexdigest()
    assert [(f["file"], f["detector"]) for f in sam["findings"]] == [("run.py", "github-token")]
    assert not sam["late"] and manifest["students"]["sue"]["late"]
    # the released template, untouched, is marked so (and never late)
    assert {f["path"]: f["as_released"] for f in sam["files"]}["bell.ipynb"] is True
    assert manifest["students"]["tom"]["status"] == "missing"
    assert token not in manifest_bytes.decode() and token not in done.stdout

    # both steps are in the audit log, the manifest's hash with them
    report = verify(audit_log, [key.read_bytes().strip()])
    assert report.ok, report.summary()
    records = [json.loads(line) for line in audit_log.read_text().splitlines()]
    by_type = {r["type"]: r["data"] for r in records}
    assert by_type["assignment-released"]["actor"] == "ivan"
    collected = by_type["assignment-collected"]
    assert collected["manifest_sha256"] == hashlib.sha256(manifest_bytes).hexdigest()
    assert (collected["submitted"], collected["late"], collected["findings"]) == (3, 1, 1)
    assert collected["students"] == 5
    assert token not in audit_log.read_text()
    # no helper container is left behind, started or not
    assert not docker("ps", "-aq", "--filter", "label=io.qustody.course-helper").split()


def test_release_and_collect_refuse_clearly(names, singleuser_image, tmp_path):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(
        'id = "course-101"\ntitle = "Intro QC"\n[term]\nstart = 2026-09-01T00:00:00Z\n'
        'end = 2027-01-31T00:00:00Z\n[roster]\ngroup = "course-101"\n'
        f'[materials]\nvolume = "{names["materials"]}"\n'
        '[[assignments]]\nname = "hw1"\nrelease = 2026-09-15T00:00:00Z\n'
        'due = 2026-09-29T00:00:00Z\n'
    )
    base = ["--dir", str(courses), "--student", "sam", "--home-volume-template",
            names["template"]]
    audit = ["--audit-log", str(tmp_path / "a.jsonl"), "--audit-key-file", str(tmp_path / "k")]
    cases = [
        (["release", "course-101", "hw9", *base, "--image", singleuser_image, *audit],
         "course-101 has no assignment 'hw9' (its assignments: hw1)"),
        (["release", "course-202", "hw1", *base, "--image", singleuser_image, *audit],
         "no course 'course-202'"),
        (["collect", "course-101", "hw1", *base, "--image", "qustody:latest", *audit],
         "give --image"),
        (["collect", "course-101", "hw1", *base, "--image", singleuser_image,
          "--audit-log", ""], "every release and collect is audited"),
        (["release", "course-101", "hw1", "--dir", str(courses), "--student", "sam",
          "--home-volume-template", "h-{username}-{term}", "--image", singleuser_image, *audit],
         "--home-volume-template 'h-{username}-{term}' must contain {username} once"),
        (["release", "course-101", "hw1", "--dir", str(courses), "--student", "sam",
          "--home-volume-template", "qustody-{username}", "--image", singleuser_image, *audit],
         "overlaps the course materials prefix 'qustody-materials-'"),
    ]
    for args, words in cases:
        out = qustody(*args)
        assert out.returncode == 1 and words in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr
    key = tmp_path / "k"
    key.write_text(secrets.token_hex(32))
    key.chmod(0o600)
    # the materials volume does not exist: refused, and not made empty on the way
    out = qustody("release", "course-101", "hw1", *base, "--image", singleuser_image, *audit)
    assert out.returncode == 1 and "does not exist; create and fill it" in out.stderr, out.stderr
    assert not docker("volume", "ls", "-q", "--filter", f"name={names['materials']}").split()
    docker("volume", "create", names["materials"])  # exists, but without assignments/hw1/
    out = qustody("release", "course-101", "hw1", *base, "--image", singleuser_image, *audit)
    assert out.returncode == 1 and "has no assignments/hw1/ to release" in out.stderr, out.stderr
    out = qustody("release", "course-101", "hw1", *base[:-4], "--student", "../../etc",
                  "--image", singleuser_image, *audit)
    assert out.returncode == 1 and "is not a hub user name" in out.stderr, out.stderr
    assert not (tmp_path / "a.jsonl").exists() or "assignment-released" not in (
        tmp_path / "a.jsonl").read_text()

