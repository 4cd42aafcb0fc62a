"""Releasing and collecting an assignment for a class, on real Docker volumes.

    DOCKER_HOST=unix:///tmp/qustody-docker/docker.sock \\
    QUSTODY_IMAGE_DIGEST=sha256:... .venv/bin/python benchmarks/bench_assignments.py \\
        [--students 200]

Creates a materials volume with a small assignment (a notebook, a data file) and one home
volume per student, then times ``release`` to all of them, each student's work, and
``collect`` from all of them (hub_ext.courses.assignments, the functions ``qustody course``
runs), with this process's CPU time. The baseline, measured in the same run, is creating
and removing one never-started container per student: what each step costs at least.
Servers need not run: both steps work on the volumes; ``--running N`` keeps N containers
running on students' homes while it works (stand-ins for their servers: a process holding
the volume), and the term-end archive of every home (``archive_homes``) is timed too.
The Docker engine's CPU time is printed beside this process's: the engine does the
copying. Prints the figures; asserts nothing.
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

from hub_ext.courses.assignments import Volumes, archive_homes, collect, release  # noqa: E402
from hub_ext.courses.model import parse_course, stamp  # noqa: E402
from hub_ext.spawner import SpawnPolicy  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def engine_cpu() -> float:
    """CPU seconds of the dockerd processes on this machine (0 when none is visible)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "comm").read_text().strip() == "dockerd":
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / ticks
        except OSError:
            continue
    return total


def timed(label: str, students: int, baseline: float, work: object) -> object:
    c0, e0, started = cpu(), engine_cpu(), time.perf_counter()
    result = work()  # type: ignore[operator]
    took, spent, engine = time.perf_counter() - started, cpu() - c0, engine_cpu() - e0
    print(f"{label}: {took:.1f} s ({took / students * 1000:.0f} ms a student, "
          f"x{took / baseline:.2f} of the baseline), this process {spent:.1f} s CPU, "
          f"the Docker engine {engine:.1f} s CPU", flush=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--students", type=int, default=200)
    ap.add_argument("--running", type=int, default=0,
                    help="keep this many students' homes in use by running containers")
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
    running: list[object] = []
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

        report = timed("release", len(students), baseline,
                       lambda: release(volumes, course, assignment, students))
        print(f"  {sum(report.written.values())} files, {len(report.problems)} problems",
              flush=True)
        # half the class works on it (one container per student, as a server would write)
        for s in students[::2]:
            client.containers.run(
                image, entrypoint="sh", network_disabled=True, remove=True, user="1000",
                volumes={policy.volume_name(s): {"bind": policy.home_mount, "mode": "rw"}},
                command=["-c", f"echo answer >> {policy.home_mount}/course-101/hw1/bell.ipynb"],
            )
        started = time.perf_counter()
        for s in students[: args.running]:
            running.append(client.containers.run(
                image, entrypoint="sleep", command=["3600"], detach=True, user="1000",
                network_disabled=True, read_only=True, mem_limit="32m", cap_drop=["ALL"],
                labels={"io.qustody.bench": prefix},
                volumes={policy.volume_name(s): {"bind": policy.home_mount, "mode": "rw"}}))
        if running:
            print(f"{len(running)} containers running on students' homes "
                  f"(started in {time.perf_counter() - started:.1f} s)", flush=True)
        with tempfile.TemporaryDirectory() as archive_root:
            done = timed("collect", len(students), baseline,
                         lambda: collect(volumes, course, assignment, students, Path(archive_root)))
            summary = done.summary()  # type: ignore[attr-defined]
            print(f"  {summary['submitted']} submitted, archive "
                  f"{done.archive.stat().st_size / 1e6:.1f} MB", flush=True)  # type: ignore[attr-defined]
            homes = timed("term-end archive of every home", len(students), baseline,
                          lambda: archive_homes(volumes, course, students, Path(archive_root)))
            print(f"  archive {homes.archive.stat().st_size / 1e6:.1f} MB", flush=True)  # type: ignore[attr-defined]
    finally:
        for c in running:
            c.remove(force=True)
        for v in client.volumes.list(filters={"name": prefix}):
            v.remove(force=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
