"""The image's SBOM digest on its way to the audit log: the Docker spawner reads it from
the image's label, and the ``server-started`` schema takes it (optionally). No Docker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub_ext.audit import SchemaViolation, schema
from hub_ext.images import parse_pinned
from hub_ext.spawner.docker import SBOM_LABEL, HardenedDockerSpawner, sbom_sha256
from hub_ext.spawner.profiles import Decision, SpawnRefused

IMAGE_ID = "sha256:" + "ab" * 32
SBOM = "0123456789abcdef" * 4


def started(**extra: Any) -> dict[str, Any]:
    return {
        "user": "alice",
        "server": "",
        "image": IMAGE_ID,
        "image_digest": IMAGE_ID,
        **extra,
    }


def test_server_started_takes_an_optional_sbom_digest():
    event_schema = schema.get("server-started")
    event_schema.validate(started())  # images without the label still spawn
    event_schema.validate(started(sbom_sha256=SBOM))
    for bad in (SBOM.upper(), SBOM[:-1], f"sha256:{SBOM}", SBOM + "0", "", 42):
        with pytest.raises(SchemaViolation):
            event_schema.validate(started(sbom_sha256=bad))


def inspected(labels: dict[str, str] | None) -> dict[str, Any]:
    return {"Id": IMAGE_ID, "RepoDigests": [], "Config": {"Labels": labels}}


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({SBOM_LABEL: SBOM, "other": "x"}, SBOM),
        (None, ""),  # an image built before SBOMs
        ({}, ""),
        ({SBOM_LABEL: SBOM.upper()}, ""),  # not what build.py writes: not recorded
        ({SBOM_LABEL: "sha256:" + SBOM}, ""),
    ],
)
def test_sbom_digest_is_read_from_the_image_label(labels, expected):
    assert sbom_sha256(inspected(labels)) == expected


def spawner_pulling(image: dict[str, Any]) -> HardenedDockerSpawner:
    spawner = HardenedDockerSpawner()
    spawner._decision = Decision(profile=None, image=parse_pinned("qustody", IMAGE_ID))  # type: ignore[arg-type]

    async def docker(method: str, *args: Any) -> Any:
        assert method == "inspect_image" and args == (IMAGE_ID,)
        return image

    spawner.docker = docker  # type: ignore[method-assign]
    return spawner


def test_the_docker_spawner_keeps_the_sbom_digest_of_the_image_it_runs():
    spawner = spawner_pulling(inspected({SBOM_LABEL: SBOM}))
    assert spawner.image_sbom_sha256 == ""
    asyncio.run(spawner.pull_image(IMAGE_ID))
    assert spawner.image_sbom_sha256 == SBOM
    assert spawner._image_id == IMAGE_ID
    # the next start of an image without the label does not keep the old digest
    spawner.docker = spawner_pulling(inspected(None)).docker  # type: ignore[method-assign]
    asyncio.run(spawner.pull_image(IMAGE_ID))
    assert spawner.image_sbom_sha256 == ""


def test_an_image_with_another_digest_is_refused_before_its_label_is_read():
    spawner = spawner_pulling({**inspected({SBOM_LABEL: SBOM}), "Id": "sha256:" + "cd" * 32})
    with pytest.raises(SpawnRefused, match="does not have the allowed digest"):
        asyncio.run(spawner.pull_image(IMAGE_ID))
    assert spawner.image_sbom_sha256 == ""
