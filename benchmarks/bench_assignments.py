"""Releasing and collecting an assignment for a class, on real Docker volumes.

    DOCKER_HOST=unix:///tmp/qustody-docker/docker.sock \\
    QUSTODY_IMAGE_DIGEST=sha256:... .venv/bin/python benchmarks/bench_assignments.py \\
        [--students 200]

Creates a materials volume with a small assignment (a notebook, a data file) and one home
volume per student, then times ``release`` to all of them, each student's work, and
``collect`` from all of them (hub_ext.courses.assignments, the functions ``qustody course``
runs), with this process's CPU time. The baseline, measured in the same run, is creating
and removing one never-started container per student: what each step costs at least.
Servers need not run: both steps work on the volumes. Prints the figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import docker  # noqa: E402

from hub_ext.courses.assignments import Volumes, collect, release  # noqa: E402
from hub_ext.courses.model import parse_course, stamp  # noqa: E402
from hub_ext.spawner import SpawnPolicy  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=200)
    args = ap.parse_args()
    image = os.environ.get("QUSTODY_IMAGE_DIGEST", "")
    if not image.startswith("sha256:"):
        raise SystemExit("set QUSTODY_IMAGE_DIGEST to the servers' image id (make image prints it)")
    client = docker.from_env()
    prefix = f"qbench{secrets.token_hex(3)}"
    materials = f"qustody-materials-{prefix}"
    policy = SpawnPolicy(home_volume_template=f"{prefix}-home-{{username}}")
    students = [f"student{i:03d}" for i in range(args.students)]
    volumes = Volumes(client, image, policy.home_mount, policy.volume_name)
    now = time.time()
    course = parse_course(
        f'id = "course-101"\ntitle = "Bench"\n[term]\nstart = {stamp(now - 86400)}\n'
        f'end = {stamp(now + 86400)}\n[roster]\ngroup = "course-101"\n'
        f'[materials]\nvolume = "{materials}"\n[[assignments]]\nname = "hw1"\n'
        f"release = {stamp(now - 3600)}\ndue = {stamp(now + 3600)}\n"
    )
    assignment = course.assignments[0]
    try:
        client.volumes.create(materials)
        client.containers.run(
            image, entrypoint="sh", user="0", network_disabled=True, remove=True,
            volumes={materials: {"bind": "/m", "mode": "rw"}},
            command=["-c", "mkdir -p /m/assignments/hw1 && head -c 200000 /dev/urandom | "
                     "base64 > /m/assignments/hw1/data.txt && echo '{\"cells\": []}' > "
                     "/m/assignments/hw1/bell.ipynb"],
        )
        for s in students:
            client.volumes.create(policy.volume_name(s))
        started = time.perf_counter()
        for _ in students:
            with volumes.mounted({materials: ("/src", "ro")}):
                pass
        baseline = time.perf_counter() - started
        print(f"{len(students)} students; baseline (create + remove one container each): "
              f"{baseline:.1f} s", flush=True)

        c0, started = cpu(), time.perf_counter()
        report = release(volumes, course, assignment, students)
        took, spent = time.perf_counter() - started, cpu() - c0
        print(f"release: {took:.1f} s ({took / len(students) * 1000:.0f} ms a student, "
              f"x{took / baseline:.2f} of the baseline), this process {spent:.1f} s CPU; "
              f"{sum(report.written.values())} files, {len(report.problems)} problems",
              flush=True)
        # half the class works on it (one container per student, as a server would write)
        for s in students[::2]:
            client.containers.run(
                image, entrypoint="sh", network_disabled=True, remove=True, user="1000",
                volumes={policy.volume_name(s): {"bind": policy.home_mount, "mode": "rw"}},
                command=["-c", f"echo answer >> {policy.home_mount}/course-101/hw1/bell.ipynb"],
            )
        with tempfile.TemporaryDirectory() as archive_root:
            c0, started = cpu(), time.perf_counter()
            done = collect(volumes, course, assignment, students, Path(archive_root))
            took, spent = time.perf_counter() - started, cpu() - c0
            summary = done.summary()
            print(f"collect: {took:.1f} s ({took / len(students) * 1000:.0f} ms a student, "
                  f"x{took / baseline:.2f} of the baseline), this process {spent:.1f} s CPU; "
                  f"{summary['submitted']} submitted, archive "
                  f"{done.archive.stat().st_size / 1e6:.1f} MB", flush=True)
    finally:
        for v in client.volumes.list(filters={"name": prefix}):
            v.remove(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
