"""Resource use on the instructor page (hub_ext.courses.usage), read from a real Docker
engine: a container labelled as the spawner labels a user's server shows its memory
against its limit and its CPU time; other users' and named servers are not listed."""

from __future__ import annotations

import secrets
import time

import pytest
from hubtest import docker

from hub_ext.courses.usage import LABEL, resource_use, use_text
from hub_ext.spawner.profiles import LABEL as SPAWNER_LABEL


def test_the_label_is_the_spawners() -> None:
    assert LABEL == SPAWNER_LABEL


@pytest.mark.docker
def test_running_servers_show_memory_against_their_limit_and_cpu_time(singleuser_image) -> None:
    import docker as docker_sdk

    tag = f"qtest{secrets.token_hex(3)}"
    started = []
    try:
        for user, server in ((f"{tag}-sam", ""), (f"{tag}-sue", ""), (f"{tag}-sam", "gpu")):
            # a busy second of CPU and 48 MiB held, as a notebook would
            started.append(docker(
                "run", "-d", "--network", "none", "--memory", "128m", "--user", "1000",
                "--label", f"{LABEL}.managed=true", "--label", f"{LABEL}.user={user}",
                "--label", f"{LABEL}.server-name={server}", "--entrypoint", "python3",
                singleuser_image, "-c",
                "import time\nwhile time.process_time() < 1.05: pass\n"
                "x = bytearray(48 * 1024 * 1024)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
                "time.sleep(300)").strip())
        client = docker_sdk.from_env()
        for _ in range(50):
            use = resource_use(client, [f"{tag}-sam", f"{tag}-tom"])
            if use.get(f"{tag}-sam", {}).get("cpu_seconds", 0) >= 0.9 and \
                    use[f"{tag}-sam"]["memory"] >= 48 * 1024 * 1024:
                break
            time.sleep(0.2)
        assert set(use) == {f"{tag}-sam"}  # sue was not asked for; tom runs nothing
        sam = use[f"{tag}-sam"]
        assert sam["memory_limit"] == 128 * 1024 * 1024
        assert 48 * 1024 * 1024 <= sam["memory"] < 128 * 1024 * 1024, sam
        assert sam["cpu_seconds"] >= 0.9, sam
        assert use_text(sam).endswith(f" of 128 MiB, CPU {sam['cpu_seconds']:.0f} s")
        assert use_text(None) == ""
    finally:
        for cid in started:
            docker("rm", "-f", cid, check=False)
