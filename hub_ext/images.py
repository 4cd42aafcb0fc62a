"""The digest-pinned image allow-list.

An allowed image is a name users and profiles refer to, mapped to a reference pinned by
content digest: ``repo@sha256:<64 hex>`` (a registry image) or ``sha256:<64 hex>`` (a
locally built or imported image, as ``docker image inspect --format '{{.Id}}'`` prints
it). Tags move, digests do not, so a tag is never accepted. An empty allow-list allows
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_DIGEST = r"sha256:[0-9a-f]{64}"
_PINNED = re.compile(rf"^(?:(?P<repo>[a-z0-9][a-z0-9._/:\-]*?)@)?(?P<digest>{_DIGEST})$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class ImageRefused(ValueError):
    """An image that is not allowed. The message says which images are."""


@dataclass(frozen=True)
class PinnedImage:
    name: str
    ref: str
    digest: str
    repo: str | None

    def describe(self) -> str:
        return f"{self.name} ({self.ref})"

    def matches(self, inspected: Mapping[str, Any]) -> bool:
        """Whether ``docker image inspect`` output is this exact image."""
        if inspected.get("Id") == self.digest:
            return True
        for repo_digest in inspected.get("RepoDigests") or []:
            repo, _, digest = str(repo_digest).partition("@")
            if digest == self.digest and (self.repo is None or _same_repo(repo, self.repo)):
                return True
        return False


def _same_repo(a: str, b: str) -> bool:
    def norm(r: str) -> str:
        return r.removeprefix("docker.io/").removeprefix("library/")

    return norm(a) == norm(b)


def parse_pinned(name: str, ref: str) -> PinnedImage:
    """Parse an allow-list entry; raises ValueError with a fix when it is not pinned."""
    if not _NAME.match(name):
        raise ValueError(
            f"image name {name!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "(it is what profiles and users refer to)"
        )
    m = _PINNED.match(ref.strip())
    if not m:
        raise ValueError(
            f"image {name!r} = {ref!r} is not pinned by digest. Use 'repo@sha256:<digest>' "
            "(see `docker image inspect --format '{{json .RepoDigests}}' IMAGE`) or, for a "
            "locally built image, its id 'sha256:<id>' (`docker image inspect --format "
            "'{{.Id}}' IMAGE`; `make image` prints it)."
        )
    return PinnedImage(name=name, ref=ref.strip(), digest=m.group("digest"), repo=m.group("repo"))


def parse_allow_list(entries: Mapping[str, str]) -> dict[str, PinnedImage]:
    return {name: parse_pinned(name, ref) for name, ref in entries.items()}


def describe_allowed(allowed: Mapping[str, PinnedImage], names: list[str] | None = None) -> str:
    chosen = [allowed[n] for n in (names if names is not None else list(allowed)) if n in allowed]
    if not chosen:
        return "none (the allow-list is empty; an admin must add digest-pinned images)"
    return ", ".join(image.describe() for image in chosen)


def resolve_requested(
    requested: str, allowed: Mapping[str, PinnedImage], permitted: list[str]
) -> PinnedImage:
    """The allowed image a user asked for (by name or by exact pinned reference).

    ``permitted`` are the names the user's profile may use. Anything else is refused
    with a message that names the images that are allowed.
    """
    choices = describe_allowed(allowed, permitted)
    for name in permitted:
        image = allowed.get(name)
        if image is not None and requested in (image.name, image.ref, image.digest):
            return image
    if "@sha256:" not in requested and not requested.startswith("sha256:"):
        if requested in allowed:
            raise ImageRefused(
                f"Image {requested!r} is not allowed for this profile. Allowed images: {choices}."
            )
        raise ImageRefused(
            f"Image {requested!r} is not pinned by digest, so it cannot be run. "
            f"Choose one of the allowed images: {choices}."
        )
    raise ImageRefused(f"Image {requested!r} is not on the allow-list. Allowed images: {choices}.")
