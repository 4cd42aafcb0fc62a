"""Is the single-user image reproducible? Compare two images layer by layer, file by file.

``python images/build.py repro`` builds the image twice from the same inputs (one qustody
wheel, one revision, ``--no-cache``) and calls ``compare`` on the two: the image ids, the
layers' diff ids, the fields of the image configuration that differ, and for each layer
that differs, which of its files differ and how (content, mtime, mode, owner, only in one).

Only the standard library and the ``docker`` command-line tool are used.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

# attributes of a layer's tar entry compared between two builds
ATTRIBUTES = ("type", "mode", "uid", "gid", "size", "mtime", "link", "content", "pax")


@dataclass
class Layer:
    diff_id: str
    entries: dict[str, dict[str, Any]]
    order: list[str]


@dataclass
class Saved:
    """What ``docker save`` gave for an image: its config (the bytes its id hashes) and
    the layers (by diff id) that were asked for."""

    config: dict[str, Any]
    diff_ids: list[str]
    layers: dict[str, Layer] = field(default_factory=dict)


class _Hashing:
    """A read-only stream that hashes what is read through it."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.digest.update(data)
        return data


def tar_entries(stream: IO[bytes]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(path, attributes) of every entry of a layer tar, in the tar's order."""
    with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
        for info in tar:
            content = ""
            if info.isreg():
                f = tar.extractfile(info)
                assert f is not None
                digest = hashlib.sha256()
                for block in iter(lambda f=f: f.read(1 << 20), b""):  # type: ignore[misc]
                    digest.update(block)
                content = digest.hexdigest()
            pax = {k: v for k, v in info.pax_headers.items() if k not in ("mtime", "path")}
            yield info.name, {
                "type": info.type.decode(),
                "mode": oct(info.mode),
                "uid": info.uid,
                "gid": info.gid,
                "size": info.size,
                "mtime": int(info.mtime),
                "link": info.linkname,
                "content": content,
                "pax": json.dumps(pax, sort_keys=True),
            }


def read_layer(stream: IO[bytes]) -> Layer:
    """A layer tar's diff id (sha256 of its bytes) and entries."""
    hashing = _Hashing(stream)
    entries: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for name, attrs in tar_entries(hashing):  # type: ignore[arg-type]
        entries[name] = attrs
        order.append(name)
    while hashing.read(1 << 20):
        pass
    return Layer("sha256:" + hashing.digest.hexdigest(), entries, order)


def save(image: str, *, skip: set[str]) -> Saved:
    """``docker save IMAGE``, read as a stream: the config, and every layer whose diff id
    is not in ``skip`` listed entry by entry (the others are only hashed). Both the
    classic archive (``<id>/layer.tar``, ``<config>.json``) and the OCI layout of newer
    engines (``blobs/sha256/...``: a small blob is JSON, a large one a layer) are read."""
    proc = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)  # noqa: S603,S607
    assert proc.stdout is not None
    documents: dict[str, Any] = {}
    layers: dict[str, Layer] = {}
    with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:  # type: ignore[call-overload]
        for member in outer:
            if not member.isreg():
                continue
            f = outer.extractfile(member)
            assert f is not None
            stream: IO[bytes] = f
            if member.name.endswith(".json") or (
                member.name.startswith("blobs/") and member.size < (1 << 20)
            ):
                data = f.read()
                try:
                    documents[member.name] = json.loads(data)
                    continue
                except ValueError:
                    stream = io.BytesIO(data)  # a small layer
            elif not (member.name.endswith("layer.tar") or member.name.startswith("blobs/")):
                continue
            layer = read_layer(stream)
            if layer.diff_id not in skip:
                layers[layer.diff_id] = layer
    if proc.wait() != 0:
        raise SystemExit(f"docker save {image} failed")
    config = documents[documents["manifest.json"][0]["Config"]]
    return Saved(config=config, diff_ids=list(config["rootfs"]["diff_ids"]), layers=layers)


def config_differences(one: dict[str, Any], two: dict[str, Any], path: str = "") -> list[str]:
    """JSON paths where two image configs differ (with both values, shortened)."""
    if isinstance(one, dict) and isinstance(two, dict):
        out = []
        for key in sorted(set(one) | set(two)):
            out += config_differences(one.get(key), two.get(key), f"{path}.{key}")
        return out
    if isinstance(one, list) and isinstance(two, list) and len(one) == len(two):
        out = []
        for i, (a, b) in enumerate(zip(one, two, strict=True)):
            out += config_differences(a, b, f"{path}[{i}]")
        return out
    if one == two:
        return []
    return [f"{path or '.'}: {str(one)[:80]!r} != {str(two)[:80]!r}"]


def layer_differences(one: Layer, two: Layer, limit: int = 20) -> dict[str, Any]:
    """How two versions of a layer differ: files only in one, files whose attributes
    differ (counted by attribute, with examples), and whether the entry order differs."""
    only_one = sorted(set(one.entries) - set(two.entries))
    only_two = sorted(set(two.entries) - set(one.entries))
    by_attribute: dict[str, list[str]] = {}
    for name in sorted(set(one.entries) & set(two.entries)):
        a, b = one.entries[name], two.entries[name]
        for attr in ATTRIBUTES:
            if a[attr] != b[attr]:
                by_attribute.setdefault(attr, []).append(name)
    common = [n for n in one.order if n in two.entries]
    return {
        "entries": [len(one.order), len(two.order)],
        "only_in_first": only_one[:limit],
        "only_in_second": only_two[:limit],
        "differ": {attr: {"count": len(names), "examples": names[:limit]}
                   for attr, names in sorted(by_attribute.items())},
        "order_differs": common != [n for n in two.order if n in one.entries],
    }


def compare(first: str, second: str) -> dict[str, Any]:
    """Compare two images (by reference): ids, diff ids, config fields and differing layers."""
    ids = []
    diff_ids = []
    for ref in (first, second):
        out = subprocess.run(  # noqa: S603
            ["docker", "image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", ref],  # noqa: S607
            check=True, capture_output=True, text=True,
        ).stdout
        image_id, _, layers = out.partition(" ")
        ids.append(image_id)
        diff_ids.append(json.loads(layers))
    same_layers = set(diff_ids[0]) & set(diff_ids[1])
    one, two = save(first, skip=same_layers), save(second, skip=same_layers)
    layers = []
    for i in range(max(len(one.diff_ids), len(two.diff_ids))):
        a = one.diff_ids[i] if i < len(one.diff_ids) else ""
        b = two.diff_ids[i] if i < len(two.diff_ids) else ""
        row: dict[str, Any] = {"index": i, "first": a, "second": b, "same": a == b}
        history = [h for h in one.config.get("history", []) if not h.get("empty_layer")]
        if i < len(history):
            row["created_by"] = str(history[i].get("created_by", ""))[:120]
        if a != b and a in one.layers and b in two.layers:
            row["differences"] = layer_differences(one.layers[a], two.layers[b])
        layers.append(row)
    return {
        "ids": ids,
        "same_id": ids[0] == ids[1],
        "same_layers": diff_ids[0] == diff_ids[1],
        "layers": layers,
        "config_differences": config_differences(one.config, two.config),
    }


# -- the configuration's dates ------------------------------------------------------------


def image_config(image: str) -> bytes:
    """The raw configuration of IMAGE (the bytes its id is the sha256 of), read from the
    head of ``docker save`` (which is stopped as soon as the configuration is found)."""
    proc = subprocess.Popen(  # noqa: S603
        ["docker", "save", image], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL  # noqa: S607
    )
    assert proc.stdout is not None
    documents: dict[str, bytes] = {}
    found = None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as outer:  # type: ignore[call-overload]
            for member in outer:
                if not member.isreg() or member.size > (1 << 20):
                    continue
                f = outer.extractfile(member)
                assert f is not None
                data = f.read()
                documents[member.name] = data
                if "/" not in member.name and member.name not in ("manifest.json", "index.json"):
                    try:
                        doc = json.loads(data)
                    except ValueError:
                        continue
                    if isinstance(doc, dict) and "rootfs" in doc:  # the classic archive
                        found = data
                        break
                if "manifest.json" in documents:
                    config = json.loads(documents["manifest.json"])[0]["Config"]
                    if config in documents:
                        found = documents[config]
                        break
    finally:
        proc.kill()
        proc.wait()
    if found is None:
        raise SystemExit(f"docker save {image}: no image configuration found")
    return found


def normalized_config(raw: bytes, epoch: int) -> bytes:
    """IMAGE's configuration with the build's own dates and containers taken out: every
    ``created`` is SOURCE_DATE_EPOCH, and the classic builder's record of the container
    that committed the last step (``container``, ``container_config``, ``config.Image``,
    the id of the step before) is dropped. What the image is and runs is unchanged."""
    config = json.loads(raw)
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    config["created"] = stamp
    for entry in config.get("history", []):
        entry["created"] = stamp
    config.pop("container", None)
    config.pop("container_config", None)
    if isinstance(config.get("config"), dict):
        config["config"]["Image"] = ""
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def load_config(config: bytes, tags: list[str]) -> str:
    """``docker load`` an image made of ``config`` and layers the engine already has (its
    ``rootfs.diff_ids``: nothing is sent but the configuration); tag it. Returns its id."""
    digest = hashlib.sha256(config).hexdigest()
    diff_ids = json.loads(config)["rootfs"]["diff_ids"]
    manifest = [{
        "Config": f"{digest}.json",
        "RepoTags": tags,
        "Layers": [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids],
    }]
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((f"{digest}.json", config),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    subprocess.run(
        ["docker", "load", "--quiet"], input=archive.getvalue(), check=True,  # noqa: S607
        capture_output=True,
    )
    return f"sha256:{digest}"
