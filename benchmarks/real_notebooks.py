"""Rebuild the real-notebook corpus: tutorial and test notebooks shipped in PyPI sdists.

    python benchmarks/real_notebooks.py [--out benchmarks/out/real_notebooks]

Downloads the pinned source distributions below from PyPI (checked against their
sha256), and extracts every ``.ipynb`` into ``--out/<project>/...``. The corpus is
rebuilt, never committed (``benchmarks/out/`` is gitignored). Each project's
notebooks are documentation, tutorials or test fixtures written by their
maintainers: the kind of notebook a user saves, none of which holds a real key.
Downloads are cached in ``benchmarks/out/sdists/``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urljoin

OUT = Path(__file__).resolve().parent / "out"

#: (project, version, sdist file, sha256). Chosen for notebooks in the sdist: quantum
#: (quimb, projectq), statistics, plotting and dashboards, and the notebook tools'
#: own fixtures (odd but valid notebooks).
PINNED: tuple[tuple[str, str, str, str], ...] = (
    (
        "statsmodels",
        "0.15.0",
        "statsmodels-0.15.0.tar.gz",
        "5d257fe58d0772bc46a557880ca78e2a8e07fec7bfd9d11074aef8e33e1aecbc",
    ),
    (
        "jupytext",
        "1.19.6",
        "jupytext-1.19.6.tar.gz",
        "ba1d143bb3751e054d3164376b148ee8fa74e1a860fc9411e1da93ff588b8a17",
    ),
    (
        "holoviews",
        "1.23.2",
        "holoviews-1.23.2.tar.gz",
        "e0c511e6d4db4f370f2550d363c23b70d7ee4f2310f1c7995b0f89cacf1eb107",
    ),
    (
        "panel",
        "1.10.0",
        "panel-1.10.0.tar.gz",
        "ed4edce651ff08377e7927f53eccc425123a79db49afac0a7cae61436de61494",
    ),
    (
        "hvplot",
        "0.12.2",
        "hvplot-0.12.2.tar.gz",
        "9e29bbe65f94937d4eeaeccf33566540df936c8f9aeadfa12ea9f306d5237938",
    ),
    (
        "nbconvert",
        "7.17.2",
        "nbconvert-7.17.2.tar.gz",
        "344a218e8595117ce37396ed025d994f146d076226ebac59255a2fa085ab24d8",
    ),
    (
        "nbformat",
        "5.11.1",
        "nbformat-5.11.1.tar.gz",
        "32d4521c68c6e7d5b29c76defaeed9f42ea733142b9b19f88277ce10390b9c4d",
    ),
    (
        "papermill",
        "2.7.0",
        "papermill-2.7.0.tar.gz",
        "ec10b37594a060662f57269e1ebd108c209d204450f00fdfeb70a1c7cfb7fbc8",
    ),
    (
        "nbsphinx",
        "0.9.8",
        "nbsphinx-0.9.8.tar.gz",
        "d0765908399a8ee2b57be7ae881cf2ea58d66db3af7bbf33e6eb48f83bea5495",
    ),
    (
        "emcee",
        "3.1.6",
        "emcee-3.1.6.tar.gz",
        "11af4daf6ab8f9ca69681e3c29054665db7bbd87fd4eb8e437d2c3a1248c637d",
    ),
    (
        "quimb",
        "1.16.0",
        "quimb-1.16.0.tar.gz",
        "b5ba4b7172fb516d053ed52150f8b04196fb13f1f226e9e691f61cf2de4b67f1",
    ),
    (
        "projectq",
        "0.8.0",
        "projectq-0.8.0.tar.gz",
        "0bcd242afabe947ac4737dffab1de62628b84125ee6ccb3ec23bd4f1d082ec60",
    ),
    (
        "xarray",
        "2026.9.0",
        "xarray-2026.9.0.tar.gz",
        "6abc69694c22fa1f0fb2f357ff4e41d88beb4477ed71091f944b7dbf67ed54fe",
    ),
    (
        "nbval",
        "0.11.0",
        "nbval-0.11.0.tar.gz",
        "77c95797607b0a968babd2597ee3494102d25c3ad37435debbdac0e46e379094",
    ),
    (
        "nbdime",
        "4.0.4",
        "nbdime-4.0.4.tar.gz",
        "8cd25ecfeeb5105d563237d7f64eb4748058fba9bba9ab3892a1ff61e177ce16",
    ),
)


def sdist_url(project: str, version: str, filename: str) -> str:
    """The download URL of a release file, from PyPI's JSON API."""
    index = f"https://pypi.org/pypi/{project}/json"
    with urllib.request.urlopen(index, timeout=60) as r:
        meta = json.load(r)
    for f in meta.get("releases", {}).get(version, []):
        if f["filename"] == filename:
            return urljoin(index, f["url"])  # a mirror may answer with relative URLs
    raise SystemExit(f"{project} {version}: {filename} is not on the index")


def fetch(project: str, version: str, filename: str, sha256: str, cache: Path) -> bytes:
    target = cache / filename
    if target.exists():
        data = target.read_bytes()
    else:
        with urllib.request.urlopen(sdist_url(project, version, filename), timeout=300) as r:
            data = r.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        target.unlink(missing_ok=True)
        raise SystemExit(f"{filename}: sha256 {digest} does not match the pinned {sha256}")
    cache.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return data


def notebooks_in(filename: str, data: bytes) -> list[tuple[str, bytes]]:
    out = []
    if filename.endswith((".tar.gz", ".tgz")):
        with tarfile.open(fileobj=io.BytesIO(data)) as t:
            for m in t.getmembers():
                if m.isfile() and m.name.endswith(".ipynb"):
                    f = t.extractfile(m)
                    if f is not None:
                        out.append((m.name, f.read()))
    else:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            out = [(n, z.read(n)) for n in z.namelist() if n.endswith(".ipynb")]
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=OUT / "real_notebooks")
    args = p.parse_args()
    total = size = 0
    for project, version, filename, sha256 in PINNED:
        data = fetch(project, version, filename, sha256, OUT / "sdists")
        found = notebooks_in(filename, data)
        for name, content in found:
            # Member names come from a checked archive, still never trusted as paths.
            rel = Path(*[part for part in Path(name).parts if part not in ("..", "/", "")])
            target = args.out / project / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
            size += len(content)
        total += len(found)
        print(f"{project:<12} {version:<10} {len(found):4d} notebooks", file=sys.stderr)
    print(f"{total} notebooks, {size / 1e6:.1f} MB in {args.out}")


if __name__ == "__main__":
    main()
