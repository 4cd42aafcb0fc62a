"""One list of isolation checks for a user's server, whatever runs it.

The Docker spawner reads the container Docker created (``docker inspect``); the
Kubernetes spawner reads the pod manifest it is about to submit. Each is reduced to the
same ``Isolation`` facts and checked by the same ``problems``, so a hardening rule is
written once and holds for both backends. What only one backend has (Docker's networks
and binds, Kubernetes' volume types and service-account token) is checked next to the
reader, in ``SpawnPolicy.verify`` and ``kubernetes.pod_problems``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Host namespaces a server may never share (the network only in a demo on the host's).
NAMESPACES = ("network", "pid", "ipc", "user")
_NAMES = {"network": "network", "pid": "PID", "ipc": "IPC", "user": "user"}


@dataclass(frozen=True)
class Isolation:
    """What a server will run with, as far as isolation goes."""

    read_only_root: bool
    all_capabilities_dropped: bool
    capabilities_added: tuple[str, ...]
    privileged: bool
    privilege_escalation: bool  # setuid binaries could gain privileges (no-new-privileges off)
    seccomp_confined: bool
    user: str  # "uid:gid" (or "uid"); "" when the image's own user would be used
    host_namespaces: tuple[str, ...]  # of NAMESPACES, shared with the host
    memory_limit: int | None  # bytes
    swap_allowed: bool
    cpu_limit: float | None  # cores
    devices: tuple[str, ...]
    host_paths: tuple[str, ...]  # host directories or sockets mounted in
    image: str


@dataclass(frozen=True)
class Expected:
    """What the policy decided for this server."""

    user: str  # SpawnPolicy.run_as
    memory_limit: int
    cpu_limit: float
    image: str
    network: str  # the one network the server may join ("host" only in a demo)


def problems(found: Isolation, expected: Expected) -> list[str]:
    """How ``found`` falls short of the policy (empty: it does not)."""
    out: list[str] = []

    def expect(ok: bool, what: str) -> None:
        if not ok:
            out.append(what)

    expect(found.read_only_root, "root filesystem is not read-only")
    expect(found.all_capabilities_dropped, "capabilities not all dropped")
    expect(not found.capabilities_added, "capabilities added")
    expect(not found.privileged, "privileged")
    expect(not found.privilege_escalation,
           "privilege escalation is allowed (no-new-privileges not set)")
    expect(found.seccomp_confined, "a confinement is disabled (seccomp unconfined)")
    uid = found.user.split(":", 1)[0]
    # run_as "1000" (no group) is what Kubernetes spells runAsUser 1000, runAsGroup 1000
    same = found.user in (expected.user, f"{expected.user}:{expected.user}")
    expect(same and uid not in ("", "0", "root"), f"runs as {found.user or 'the image user'}")
    shared = [_NAMES[n] for n in found.host_namespaces
              if not (n == "network" and expected.network == "host")]
    expect(not shared, f"shares the host's {', '.join(shared)} namespace")
    expect(found.memory_limit == expected.memory_limit, "memory limit differs")
    expect(not found.swap_allowed, "swap is allowed")
    expect(found.cpu_limit is not None and abs(found.cpu_limit - expected.cpu_limit) < 1e-6,
           "CPU limit differs")
    expect(not found.devices, "devices mapped")
    expect(not found.host_paths, f"host paths mounted: {', '.join(found.host_paths)}")
    expect(found.image == expected.image, "image differs from the allowed digest")
    return out


# -- Docker ------------------------------------------------------------------------------


def from_docker(container: Mapping[str, Any]) -> Isolation:
    """The facts of a container as ``docker inspect`` reports it."""
    hc: Mapping[str, Any] = container.get("HostConfig") or {}
    cfg: Mapping[str, Any] = container.get("Config") or {}
    opts = [str(o) for o in hc.get("SecurityOpt") or []]
    shared = []
    if hc.get("NetworkMode") == "host":
        shared.append("network")
    if hc.get("PidMode") not in ("", None):
        shared.append("pid")
    if hc.get("IpcMode") not in ("private", "", None):
        shared.append("ipc")
    if hc.get("UsernsMode") not in ("", None):
        shared.append("user")
    binds = [str(b).split(":", 1)[0] for b in hc.get("Binds") or []]
    mounts = [m for m in container.get("Mounts") or [] if m.get("Type") == "bind"]
    quota, period = hc.get("CpuQuota"), hc.get("CpuPeriod")
    return Isolation(
        read_only_root=hc.get("ReadonlyRootfs") is True,
        all_capabilities_dropped=[c.upper() for c in hc.get("CapDrop") or []]
        in (["ALL"], ["CAP_ALL"]),
        capabilities_added=tuple(str(c) for c in hc.get("CapAdd") or []),
        privileged=hc.get("Privileged") is not False,
        privilege_escalation=not any(
            o.startswith("no-new-privileges") and not o.endswith("false") for o in opts
        ),
        seccomp_confined=not any("unconfined" in o or o.startswith("label=disable") for o in opts),
        user=str(cfg.get("User") or ""),
        host_namespaces=tuple(shared),
        memory_limit=hc.get("Memory") or None,
        swap_allowed=hc.get("MemorySwap") != hc.get("Memory"),
        cpu_limit=quota / period if quota and period else None,
        devices=tuple(str(d.get("PathOnHost", d)) for d in hc.get("Devices") or []),
        host_paths=tuple(sorted({*(b for b in binds if b.startswith("/")),
                                 *(str(m.get("Source", "")) for m in mounts)})),
        image=str(container.get("Image") or ""),
    )


# -- Kubernetes ----------------------------------------------------------------------------

_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def k8s_bytes(quantity: Any) -> int | None:
    """A Kubernetes memory quantity (``"1073741824"``, ``"1Gi"``, ``"512M"``) in bytes."""
    if quantity is None:
        return None
    text = str(quantity)
    for suffix in sorted(_UNITS, key=len, reverse=True):
        if suffix and text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * _UNITS[suffix])
    return int(float(text))


def k8s_cores(quantity: Any) -> float | None:
    """A Kubernetes CPU quantity (``"1"``, ``"1.5"``, ``"500m"``) in cores."""
    if quantity is None:
        return None
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def from_pod(pod: Mapping[str, Any], container: str = "notebook") -> Isolation:
    """The facts of the server container of a pod manifest (as the API would receive it).

    A container's security context overrides the pod's, as in Kubernetes."""
    spec: Mapping[str, Any] = pod.get("spec") or {}
    psc: Mapping[str, Any] = spec.get("securityContext") or {}
    [main] = [c for c in spec.get("containers") or [] if c.get("name") == container] or [{}]
    csc: Mapping[str, Any] = main.get("securityContext") or {}
    caps: Mapping[str, Any] = csc.get("capabilities") or {}
    seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    gid = csc.get("runAsGroup", psc.get("runAsGroup"))
    limits: Mapping[str, Any] = (main.get("resources") or {}).get("limits") or {}
    shared = [name for name, key in (("network", "hostNetwork"), ("pid", "hostPID"),
                                     ("ipc", "hostIPC")) if spec.get(key) is True]
    return Isolation(
        read_only_root=csc.get("readOnlyRootFilesystem") is True,
        all_capabilities_dropped=[str(c).upper() for c in caps.get("drop") or []] == ["ALL"],
        capabilities_added=tuple(str(c) for c in caps.get("add") or []),
        privileged=csc.get("privileged") is True,
        privilege_escalation=csc.get("allowPrivilegeEscalation") is not False,
        seccomp_confined=seccomp in ("RuntimeDefault", "Localhost"),
        user="" if uid is None else f"{uid}:{gid}" if gid is not None else str(uid),
        host_namespaces=tuple(shared),
        memory_limit=k8s_bytes(limits.get("memory")),
        swap_allowed=False,  # Kubernetes gives limited containers no swap
        cpu_limit=k8s_cores(limits.get("cpu")),
        devices=(),
        host_paths=tuple(sorted(str((v.get("hostPath") or {}).get("path"))
                                for v in spec.get("volumes") or [] if v.get("hostPath"))),
        image=str(main.get("image") or ""),
    )
