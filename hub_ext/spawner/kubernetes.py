"""``QustodyKubeSpawner``: the spawn policy as a KubeSpawner pod.

The decision, environment, arguments, secrets ticket, culler state and audit events come
from ``PolicyLaunch``, as for Docker. This module only says what the pod looks like: the
policy's pinned image and limits, non-root with a read-only root, every capability
dropped, no privilege escalation, the runtime's seccomp profile, no service-account
token, no host namespaces, a per-user PVC for home and memory-backed ``emptyDir`` for the
tmpfs paths. The pod KubeSpawner is about to create (after any ``modify_pod_hook`` of
the admin's) is checked last (``pod_problems``: the shared hardening checks plus the Pod
Security "restricted" profile), and a pod that falls short is not created (fail closed).

Course materials are the course's ``[materials] volume`` as a PersistentVolumeClaim of
that name in the server's namespace (ReadOnlyMany, filled by the admin), mounted
read-only where Docker mounts the volume; a claim that does not exist is left out and
logged, as a missing Docker volume is.

Not covered on Kubernetes (docs/containers.md): per-container pids limits (a kubelet
setting, ``podPidsLimit``) and network isolation, which
belongs to a NetworkPolicy of the cluster (as in zero-to-jupyterhub). As with
KubeSpawner itself, the server's API token (and its single-use secrets ticket) are in the
pod's environment, readable by whoever may read pods in the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jupyterhub.utils import maybe_future
from kubespawner import KubeSpawner
from traitlets import Instance, default

from ..audit.lifecycle import audited
from . import hardening
from .launch import PolicyLaunch, options_from_form, profile_form
from .policy import SpawnPolicy
from .profiles import LABEL, Decision, SpawnRefused, now

#: SELinux types the restricted profile allows.
SELINUX_TYPES = ("container_t", "container_init_t", "container_kvm_t", "container_engine_t")
#: Volume types the Pod Security "restricted" profile allows.
RESTRICTED_VOLUMES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
    "projected", "secret",
})

def pod_problems(pod: Mapping[str, Any], policy: SpawnPolicy, decision: Decision,
                 materials: Mapping[str, str] | None = None) -> list[str]:
    """How a pod manifest falls short of the policy and of the Pod Security "restricted"
    profile (empty: it does not). ``materials``: claim -> mount path of the course
    materials the server may have, read-only."""
    materials = dict(materials or {})
    spec: Mapping[str, Any] = pod.get("spec") or {}
    psc: Mapping[str, Any] = spec.get("securityContext") or {}
    problems = hardening.problems(
        hardening.from_pod(pod), policy.expected(decision, decision.image.ref)
    )

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(what)

    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    expect([c.get("name") for c in containers] == ["notebook"],
           f"containers beside the server: {[c.get('name') for c in containers]}")
    for c in containers:
        csc: Mapping[str, Any] = c.get("securityContext") or {}
        name = c.get("name")
        expect(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True,
               f"{name}: runAsNonRoot is not set")
        expect(csc.get("allowPrivilegeEscalation") is False,
               f"{name}: allowPrivilegeEscalation is not false")
        added = set((csc.get("capabilities") or {}).get("add") or []) - {"NET_BIND_SERVICE"}
        expect(not added, f"{name}: capabilities added {sorted(added)}")
        expect(not any(p.get("hostPort") for p in c.get("ports") or []),
               f"{name}: a host port is bound")
        expect(csc.get("procMount") in (None, "Default"), f"{name}: /proc is unmasked")
    expect(psc.get("runAsUser") != 0, "the pod runs as root (runAsUser 0)")
    expect((psc.get("seccompProfile") or {}).get("type") in (None, "RuntimeDefault", "Localhost"),
           "the pod's seccomp profile is unconfined")
    for c in containers:
        for ctx, where in ((c.get("securityContext") or {}, c.get("name")), (psc, "pod")):
            selinux = ctx.get("seLinuxOptions") or {}
            expect(selinux.get("type") in (None, "", *SELINUX_TYPES)
                   and not selinux.get("user") and not selinux.get("role"),
                   f"{where}: a custom SELinux context")
            expect((ctx.get("appArmorProfile") or {}).get("type") != "Unconfined",
                   f"{where}: AppArmor unconfined")
            expect(not (ctx.get("windowsOptions") or {}).get("hostProcess"),
                   f"{where}: a Windows host process")
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    expect(not any(k.startswith("container.apparmor.security.beta.kubernetes.io/")
                   and v == "unconfined" for k, v in notes.items()),
           "AppArmor unconfined (annotation)")
    expect(spec.get("automountServiceAccountToken") is False,
           "the service-account token is mounted")
    expect(spec.get("enableServiceLinks") is False, "service links are in the environment")
    expect(not (psc.get("sysctls") or []), "sysctls are set")
    for volume in spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        expect(kinds <= RESTRICTED_VOLUMES,
               f"volume {volume.get('name')} is of a type the restricted profile refuses "
               f"({', '.join(sorted(kinds))})")
        empty = volume.get("emptyDir")
        if empty is not None:
            expect(empty.get("medium") == "Memory" and bool(empty.get("sizeLimit")),
                   f"volume {volume.get('name')} is not a size-limited memory tmpfs")
    listed = (spec.get("containers") or [{}])[0].get("volumeMounts") or []
    mounts = {m.get("mountPath") for m in listed}
    expect(mounts <= {policy.home_mount, *policy.tmpfs, *materials.values()}
           and {policy.home_mount, *policy.tmpfs} <= mounts,
           f"mounts differ from the policy: {sorted(str(m) for m in mounts)}")
    claims = {v.get("name"): v.get("persistentVolumeClaim") or {}
              for v in spec.get("volumes") or []}
    for m in listed:
        if m.get("mountPath") not in materials.values():
            continue
        claim = claims.get(m.get("name"), {})
        expect(m.get("readOnly") is True and claim.get("readOnly") is True
               and materials.get(str(claim.get("claimName"))) == m.get("mountPath"),
               f"course materials at {m.get('mountPath')} are not their read-only claim")
    return problems


@audited
class QustodyKubeSpawner(PolicyLaunch, KubeSpawner):  # type: ignore[misc]
    """KubeSpawner with the Qustody spawn policy (``SpawnPolicy``) applied to every pod.

    Profiles come from the policy (the same form as for Docker); KubeSpawner's own
    ``profile_list`` and the pod settings in ``OWNED`` are the policy's, and
    ``validate_config`` refuses them in a hub's config (``validation.KUBE_OWNED``).
    """

    policy = Instance(SpawnPolicy)
    _admin_pod_hook: Any = None
    _materials: dict[str, str] = {}  # noqa: RUF012 - replaced per start, never mutated

    @default("policy")
    def _default_policy(self) -> SpawnPolicy:
        return SpawnPolicy(parent=self)

    @default("disable_user_config")
    def _default_disable_user_config(self) -> bool:
        return True

    @default("storage_capacity")
    def _default_storage_capacity(self) -> str:
        return "10Gi"  # each user's home PVC; KubeSpawner has no default

    @default("options_form")
    def _default_options_form(self) -> Any:
        return lambda spawner: profile_form(self.policy.available(self._user_roles()))

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return options_from_form

    async def load_user_options(self) -> None:
        """The policy chose the profile and image in ``start``; KubeSpawner's profile_list
        is not used."""

    async def start(self) -> Any:
        decision = self.begin(now())
        self._materials = await self.existing_materials()
        self.apply_policy(decision)
        self.log.info("Starting %s: profile %s, image %s, %s", self._log_name,
                      decision.profile.name, decision.image.describe(), decision.profile.summary())
        return await super().start()

    async def existing_materials(self) -> dict[str, str]:
        """The owner's courses' materials claims that exist in the namespace (claim ->
        mount path). A missing one is left out and logged: the pod would wait for it."""
        wanted = self.policy.materials_mounts({g.name for g in self.user.groups})
        found = {}
        for claim, target in wanted.items():
            try:
                await self.api.read_namespaced_persistent_volume_claim(claim, self.namespace)
            except Exception as e:
                self.log.warning("course materials claim %s is missing or unreadable (%s); "
                                 "%s starts without it", claim, type(e).__name__, self._log_name)
                continue
            found[claim] = target
        return found

    def apply_policy(self, decision: Decision) -> None:
        """Set the pod's settings from the decision (called by ``start``)."""
        policy, profile, image = self.policy, decision.profile, decision.image
        if not image.repo:
            raise SpawnRefused(500, f"Image {image.describe()} is pinned by its local id only; "
                               "Kubernetes pulls from a registry, so SpawnPolicy.allowed_images "
                               "needs repo@sha256:<digest> here. An admin must fix the hub.")
        uid_text, _, gid_text = policy.run_as.partition(":")
        uid, gid = int(uid_text), int(gid_text or uid_text)
        self.image = image.ref
        # as the container's args, after the image's entry point; KubeSpawner drops the
        # policy's arguments (kernel culling, self-shutdown) when no command is set
        self.cmd = ["jupyterhub-singleuser"]
        self.image_pull_policy = "IfNotPresent"  # the digest names one image
        self.cpu_limit = self.cpu_guarantee = profile.cpu_limit
        self.mem_limit = self.mem_guarantee = profile.mem_limit
        self.uid, self.gid, self.fs_gid = uid, gid, gid
        self.privileged = False
        self.allow_privilege_escalation = False
        seccomp = {"type": "RuntimeDefault"}
        self.pod_security_context = {
            "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
            "seccompProfile": seccomp,
        }
        self.container_security_context = {
            "runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "privileged": False,
            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": seccomp,
        }
        self.service_account = None
        self.automount_service_account_token = False
        self.extra_pod_config = {"enableServiceLinks": False, "hostNetwork": False,
                                 "hostPID": False, "hostIPC": False}
        self.extra_container_config: dict[str, Any] = {}
        self.init_containers: list[dict[str, Any]] = []
        self.extra_containers: list[dict[str, Any]] = []
        self.storage_pvc_ensure = True
        self.pvc_name_template = policy.home_volume_template.replace("{username}",
                                                                     "{user_server}")
        volumes: list[dict[str, Any]] = [
            {"name": "home", "persistentVolumeClaim": {"claimName": "{pvc_name}"}}]
        mounts: list[dict[str, Any]] = [{"name": "home", "mountPath": policy.home_mount}]
        for i, (path, size) in enumerate(sorted(policy.tmpfs_sizes().items())):
            volumes.append({"name": f"tmpfs-{i}",
                            "emptyDir": {"medium": "Memory", "sizeLimit": str(size)}})
            mounts.append({"name": f"tmpfs-{i}", "mountPath": path})
        for i, (claim, target) in enumerate(sorted(self._materials.items())):
            volumes.append({"name": f"materials-{i}",
                            "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
            mounts.append({"name": f"materials-{i}", "mountPath": target, "readOnly": True})
        self.volumes, self.volume_mounts = volumes, mounts
        started = float((self._limits or {}).get("started_at", now()))
        labels = policy.labels(decision, self.user.name, self.name, started)
        # label values are limited to 63 characters of [A-Za-z0-9._-]; the full values go
        # into annotations, the selectable few into labels
        self.extra_annotations = dict(labels)
        self.extra_labels = {
            f"{LABEL}/managed": "true",
            f"{LABEL}/profile": profile.name,
            f"{LABEL}/session-id": decision.session_id,
            f"{LABEL}/image-digest": image.digest.replace(":", "-")[:63],
        }
        self.delete_stopped_pods = True
        # the check runs last, on the pod KubeSpawner is about to create (after any hook)
        hook: Any = self.modify_pod_hook
        if self._admin_pod_hook is None and hook not in (None, self.checked_pod):
            self._admin_pod_hook = hook
        self.modify_pod_hook: Any = self.checked_pod

    async def checked_pod(self, spawner: Any, pod: Any) -> Any:
        """KubeSpawner's last step before it creates the pod (``modify_pod_hook``): the
        admin's own hook, if any, then the policy's check of the pod as it will be created.
        A pod that falls short is not created; with no decision (not started through
        ``start``) nothing is."""
        if self._admin_pod_hook is not None:
            pod = await maybe_future(self._admin_pod_hook(spawner, pod))
        if self._decision is None:
            raise SpawnRefused(500, "Your server was not started: no policy decision was made "
                               "for it. An admin has been told in the hub log.")
        problems = pod_problems(self.as_json(pod), self.policy, self._decision, self._materials)
        if problems:
            self.log.error("Refusing to start %s: %s", self._log_name, "; ".join(problems))
            raise SpawnRefused(
                500,
                "Your server was not started: its pod did not match the security "
                f"policy ({'; '.join(problems)}). An admin has been told in the hub log.",
            )
        return pod

    def as_json(self, obj: Any) -> dict[str, Any]:
        """A kubernetes-client model (pod, PVC) as the JSON the API server receives."""
        out: dict[str, Any] = self.api.api_client.sanitize_for_serialization(obj)
        return out
