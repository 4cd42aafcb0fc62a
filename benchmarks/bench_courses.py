"""What course files cost: applying them, the hub's per-spawn term check, and the QPU
gateway's policy reload, each against a baseline measured in the same run.

    .venv/bin/python benchmarks/bench_courses.py [--courses 500] [--rounds 2000]

- ``apply``: ``qustody course apply`` of N course files into an empty directory (one
  process, every file checked, the directory re-loaded whole), and a no-change re-apply.
- ``spawn check``: ``SpawnPolicy.check_term`` + ``decide`` for a student of one course,
  with N course files in the directory (unchanged: a directory stat per call) against
  ``decide`` alone.
- ``gateway reload``: parsing the policy with N courses against the policy alone.
- ``a big course``: ``qustody course apply`` of one course with a ``--students``-line CSV
  roster, and the authenticator's roster lookup at a login (``roster_lookup``) against a
  login with no roster at all.

Prints medians and ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from traitlets.config import Config

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hub_ext.courses.catalog import load_catalog  # noqa: E402
from hub_ext.courses.model import stamp  # noqa: E402
from hub_ext.qpu.policyfile import parse  # noqa: E402
from hub_ext.spawner import SpawnPolicy  # noqa: E402

POLICY = """
[tags]
purposes = ["teaching", "research"]
[identity]
course_prefix = "course-"
course_backends = ["aer_simulator"]
"""


def course_text(i: int) -> str:
    now = time.time()
    return (
        f'id = "course-{i:04d}"\ntitle = "Course {i}"\n[term]\nstart = {stamp(now - 86400)}\n'
        f'end = {stamp(now + 90 * 86400)}\n[roster]\ngroup = "course-{i:04d}"\n'
        '[profile]\nname = "student"\n[qpu]\nbackends = ["aer_simulator"]\n'
        "per_student = { day = { jobs = 50, shots = 100000 } }\n"
        "total = { day = { jobs = 5000 } }\n"
    )


def timed(fn, rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--courses", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--students", type=int, default=500)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src, live = Path(tmp) / "src", Path(tmp) / "courses"
        src.mkdir()
        live.mkdir()
        files = []
        for i in range(args.courses):
            path = src / f"course-{i:04d}.toml"
            path.write_text(course_text(i))
            files.append(str(path))
        cli = [sys.executable, "-m", "server_ext.cli", "course", "apply", "--dir", str(live)]
        started = time.perf_counter()
        subprocess.run([*cli, *files], check=True, capture_output=True, cwd=ROOT)
        first = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([*cli, *files], check=True, capture_output=True, cwd=ROOT)
        again = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "server_ext.cli", "--version"], check=True,
                       capture_output=True, cwd=ROOT)
        bare = time.perf_counter() - started
        print(f"apply {args.courses} courses: {first:.2f} s (re-apply, no change: {again:.2f} s;"
              f" the bare command starts in {bare:.2f} s)")

        c = Config()
        c.SpawnPolicy.allowed_images = {"main": "sha256:" + "a" * 64}
        c.SpawnPolicy.profiles = {"student": {
            "roles": ["student"], "images": ["main"], "mem_limit": "1G", "cpu_limit": 1,
            "idle_timeout": 600, "max_age": 3600,
        }}
        plain = SpawnPolicy(config=c)
        c.SpawnPolicy.courses_dir = str(live)
        with_courses = SpawnPolicy(config=c)
        with_courses.check()
        groups = {"course-0007", "course-0007:students"}
        roles = {"user", "student"}
        base = timed(lambda: plain.decide(roles, {}), args.rounds)

        def checked() -> None:
            with_courses.check_term(roles, groups)
            with_courses.decide(roles, {})

        spawn = timed(checked, args.rounds)
        print(f"spawn check with {args.courses} course files: {spawn * 1e6:.0f} us vs "
              f"{base * 1e6:.0f} us without (x{spawn / base:.2f}; a spawn itself takes seconds)")

        courses = load_catalog(live).courses
        backends = {"aer_simulator": "simulator"}
        rounds = max(3, args.rounds // 200)
        alone = timed(lambda: parse(POLICY, backends), rounds * 10)
        loaded = timed(lambda: parse(POLICY, backends, courses=courses), rounds)
        catalog = timed(lambda: load_catalog(live), rounds)
        print(f"gateway reload with {args.courses} courses: catalog {catalog * 1e3:.1f} ms + "
              f"policy {loaded * 1e3:.1f} ms vs policy alone {alone * 1e3:.2f} ms "
              f"(x{(catalog + loaded) / alone:.0f}; runs only when a file changed)")
        big_course(Path(tmp), args.students, args.rounds, bare)
    return 0


def big_course(tmp: Path, students: int, rounds: int, bare: float) -> None:
    from hub_ext.courses.roster import roster_lookup

    src, live = tmp / "big-src", tmp / "big"
    src.mkdir()
    live.mkdir()
    text = course_text(9999).replace('group = "course-9999"\n',
                                     'group = "course-9999"\ncsv = "course-9999.roster.csv"\n')
    (src / "course-9999.toml").write_text(text)
    (src / "course-9999.roster.csv").write_text(
        "username,role\n" + "".join(f"student{i:05d},student\n" for i in range(students))
        + "ivan,instructor\n")
    cli = [sys.executable, "-m", "server_ext.cli", "course", "apply", "--dir", str(live),
           str(src / "course-9999.toml")]
    started = time.perf_counter()
    subprocess.run(cli, check=True, capture_output=True, cwd=ROOT)
    took = time.perf_counter() - started
    courses = load_catalog(live).courses
    lookup = roster_lookup(lambda: courses)
    nobody = roster_lookup(dict)
    hit = timed(lambda: lookup(f"student{students // 2:05d}"), rounds)
    miss = timed(lambda: nobody("student00001"), rounds)
    print(f"a {students}-student course (CSV roster): apply {took:.2f} s (the bare command "
          f"{bare:.2f} s); roster lookup at a login {hit * 1e6:.0f} us vs {miss * 1e6:.1f} us "
          "with no roster")


if __name__ == "__main__":
    raise SystemExit(main())
