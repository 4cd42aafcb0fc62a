"""What the instructor page shows of a running server's resource use: its container's
memory (against its limit) and CPU time, read from the Docker engine by the spawner's
labels (one listing, then one stats snapshot per container, no sampling delay).

Only on a Docker hub (the courses service reaches the engine there); elsewhere the page
says "n/a".
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable
from typing import Any

#: hub_ext.spawner.profiles.LABEL (the spawner imports courses, so not the other way)
LABEL = "io.qustody"
MiB = 1024 * 1024


def resource_use(client: Any, users: Iterable[str], workers: int = 8) -> dict[str, dict[str, Any]]:
    """user -> ``{"memory": bytes, "memory_limit": bytes, "cpu_seconds": float}`` for the
    default server of each of ``users`` that runs in a container; others are left out."""
    wanted = set(users)
    found = {}
    for c in client.containers.list(filters={"label": [f"{LABEL}.managed=true"]}):
        user = c.labels.get(f"{LABEL}.user")
        if user in wanted and c.labels.get(f"{LABEL}.server-name", "") == "":
            found[user] = c

    def one(item: tuple[str, Any]) -> tuple[str, dict[str, Any] | None]:
        user, container = item
        try:
            stats = container.stats(stream=False, one_shot=True)
        except Exception:  # stopped meanwhile: nothing to show
            return user, None
        memory = stats.get("memory_stats") or {}
        used = int(memory.get("usage") or 0)
        # the page cache the kernel can drop is not the server's use (as `docker stats`)
        used -= int((memory.get("stats") or {}).get("inactive_file") or 0)
        cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
        return user, {"memory": max(0, used), "memory_limit": int(memory.get("limit") or 0),
                      "cpu_seconds": int(cpu) / 1e9}

    if not found:
        return {}
    with concurrent.futures.ThreadPoolExecutor(min(workers, len(found))) as pool:
        return {u: use for u, use in pool.map(one, found.items()) if use is not None}


def use_text(use: dict[str, Any] | None) -> str:
    """``312 MiB of 1024 MiB, CPU 12 s`` (empty when unknown)."""
    if not use:
        return ""
    limit = f" of {use['memory_limit'] // MiB} MiB" if use.get("memory_limit") else ""
    return f"{use['memory'] // MiB} MiB{limit}, CPU {use['cpu_seconds']:.0f} s"
