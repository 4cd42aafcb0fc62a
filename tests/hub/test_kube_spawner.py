"""The spawn policy on Kubernetes: real KubeSpawner pod and PVC manifests, checked against
the Kubernetes schema (kubernetes-validate, strict) and the Pod Security "restricted"
profile, and the same hardening checks as a Docker container.

No Kubernetes cluster runs on these machines (docs/containers.md): the tests build the
manifests KubeSpawner would submit and never contact an API server (the kubeconfig names
a loopback port nothing listens on).
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import kubernetes_validate
import pytest
from jupyterhub import roles as hub_roles
from traitlets.config import Config

from hub_ext.spawner import QustodyKubeSpawner, SpawnRefused, hardening, validate_config
from hub_ext.spawner.kubernetes import pod_problems

REF = "registry.example/qustody/singleuser@sha256:" + "a" * 64
K8S_VERSION = "1.37.0"
PROFILES = {
    "student": {"roles": ["student"], "images": ["qustody"], "mem_limit": "1G", "cpu_limit": 1,
                "idle_timeout": 600, "max_age": 3600, "pids_limit": 128},
    "researcher": {"roles": ["researcher"], "images": ["qustody"], "mem_limit": "4G",
                   "cpu_limit": 2.5, "idle_timeout": 3600, "max_age": 7200},
}
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: none, user: {token: not-a-token}}]
contexts: [{name: none, context: {cluster: none, user: none, namespace: qustody}}]
current-context: none
"""


class _Role:
    def __init__(self, name: str) -> None:
        self.name = name


class _User:
    id = 7
    groups: list[Any] = []  # noqa: RUF012 - read only
    settings: dict[str, Any] = {}  # noqa: RUF012 - read only
    kind = "user"

    def __init__(self, name: str, roles: tuple[str, ...]) -> None:
        self.name = name
        self.url = f"/user/{name}/"
        self.orm_user = roles  # the patched get_roles_for reads roles from here


class _Handler:
    expanded_scopes = ()

    def __init__(self, user: _User) -> None:
        self.current_user = user


@pytest.fixture(autouse=True)
def _no_cluster(tmp_path, monkeypatch, jp_asyncio_loop):
    from kubernetes_asyncio.config import kube_config

    config = tmp_path / "kubeconfig"
    config.write_text(KUBECONFIG)
    # the client reads $KUBECONFIG once, at import; point its default at this file
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(config))
    monkeypatch.setattr(hub_roles, "get_roles_for", lambda orm_user: [_Role(r) for r in orm_user])
    yield
    # KubeSpawner's shared API client closes when its task is cancelled, which JupyterHub
    # does to every task at shutdown; do the same before the test's loop closes
    tasks = asyncio.all_tasks(jp_asyncio_loop)
    for task in tasks:
        task.cancel()
    jp_asyncio_loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def config(**policy: Any) -> Config:
    c = Config()
    c.SpawnPolicy.allowed_images = {"qustody": REF}
    c.SpawnPolicy.profiles = copy.deepcopy(PROFILES)
    for key, value in policy.items():
        setattr(c.SpawnPolicy, key, value)
    return c


def spawner(c: Config | None = None, name: str = "alice@uni",
            roles: tuple[str, ...] = ("student",), **options: str) -> QustodyKubeSpawner:
    user = _User(name, roles)
    sp = QustodyKubeSpawner(_mock=True, user=user, config=c or config())
    sp.api_token = "server-token-" + "x" * 20
    sp.handler = _Handler(user)
    sp.user_options = dict(options)
    return sp


async def pod_of(sp: QustodyKubeSpawner, started: float = 1_700_000_000) -> dict[str, Any]:
    """The pod as KubeSpawner's start would create it: the manifest, then its hook."""
    decision = sp.begin(started)
    sp.apply_policy(decision)
    pod = await sp.get_pod_manifest()
    return sp.as_json(await sp.modify_pod_hook(sp, pod))


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    [container] = pod["spec"]["containers"]
    return {e["name"]: e.get("value") for e in container.get("env") or []}


async def test_the_pod_and_its_home_claim_are_valid_kubernetes_objects():
    sp = spawner()
    pod = await pod_of(sp)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    pvc = sp.as_json(sp.get_pvc_manifest())
    kubernetes_validate.validate(pvc, K8S_VERSION, strict=True)
    assert pvc["spec"]["resources"]["requests"]["storage"] == "10Gi"
    assert pod_problems(pod, sp.policy, sp._decision) == []


async def test_the_pod_meets_the_restricted_profile_and_the_policy():
    sp = spawner(roles=("researcher",), profile="researcher")
    pod = await pod_of(sp)
    spec = pod["spec"]
    [c] = spec["containers"]
    csc = c["securityContext"]
    assert csc["runAsNonRoot"] is True and csc["runAsUser"] == 1000
    assert csc["readOnlyRootFilesystem"] is True
    assert csc["allowPrivilegeEscalation"] is False and csc["privileged"] is False
    assert csc["capabilities"] == {"drop": ["ALL"]}
    assert csc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert c["image"] == REF
    assert hardening.k8s_bytes(c["resources"]["limits"]["memory"]) == 4 * 1024**3
    assert hardening.k8s_cores(c["resources"]["limits"]["cpu"]) == 2.5
    kinds = {v["name"]: set(v) - {"name"} for v in spec["volumes"]}
    assert kinds == {"home": {"persistentVolumeClaim"}, "tmpfs-0": {"emptyDir"},
                     "tmpfs-1": {"emptyDir"}}
    sizes = {v["emptyDir"]["sizeLimit"] for v in spec["volumes"] if "emptyDir" in v}
    assert sizes == {str(512 * 1024**2), str(16 * 1024**2)}
    assert {m["mountPath"] for m in c["volumeMounts"]} == {"/home/jovyan", "/tmp", "/run/jupyter"}


async def test_the_server_gets_what_docker_servers_get():
    """Environment, arguments, labels and culler state come from the shared launch."""
    sp = spawner()
    pod = await pod_of(sp, started=1_700_000_123)
    env = env_of(pod)
    decision = sp._decision
    assert env["QUSTODY_STARTED_AT"] == "1700000123"
    assert env["QUSTODY_SESSION_ID"] == decision.session_id
    assert env["QUSTODY_MAX_AGE_SECONDS"] == "3600"
    assert env["QUSTODY_IDLE_TIMEOUT_SECONDS"] == "600"
    assert env["JUPYTERHUB_DISABLE_USER_CONFIG"] == "1"
    [c] = pod["spec"]["containers"]
    assert "--MappingKernelManager.cull_idle_timeout=600" in c["args"]
    assert c["args"][0] == "jupyterhub-singleuser"
    state = sp.get_state()["qustody"]
    assert state["started_at"] == 1_700_000_123 and state["max_age"] == 3600
    assert state["image"] == "sha256:" + "a" * 64
    labels, notes = pod["metadata"]["labels"], pod["metadata"]["annotations"]
    assert labels["io.qustody/session-id"] == decision.session_id
    assert notes["io.qustody.user"] == "alice@uni"
    assert notes["io.qustody.image-digest"] == "sha256:" + "a" * 64


async def test_a_profile_the_roles_do_not_allow_is_refused_before_any_pod():
    sp = spawner(roles=("student",), profile="researcher")
    with pytest.raises(SpawnRefused, match="researcher"):
        await pod_of(sp)


async def test_an_image_pinned_by_local_id_is_refused_on_kubernetes():
    sp = spawner(config(allowed_images={"qustody": "sha256:" + "b" * 64}))
    with pytest.raises(SpawnRefused, match="repo@sha256"):
        await pod_of(sp)


async def test_a_pod_changed_after_the_policy_is_not_created():
    sp = spawner()
    sp.apply_policy(sp.begin(1_700_000_000))
    sp.extra_pod_config = {**sp.extra_pod_config, "hostNetwork": True}
    with pytest.raises(SpawnRefused, match="network namespace"):
        await sp.modify_pod_hook(sp, await sp.get_pod_manifest())


async def test_an_admins_pod_hook_runs_before_the_check_and_cannot_weaken_the_pod():
    """KubeSpawner's modify_pod_hook is the last step before the pod is created: the
    admin's hook still runs (e.g. to add tolerations), and the policy checks its result."""
    c = config()
    calls = []

    def add_host_path(spawner, pod):
        calls.append(pod.metadata.name)
        from kubernetes_asyncio.client import V1HostPathVolumeSource, V1Volume

        pod.spec.volumes.append(V1Volume(name="host", host_path=V1HostPathVolumeSource("/")))
        return pod

    c.KubeSpawner.modify_pod_hook = add_host_path
    sp = spawner(c)
    with pytest.raises(SpawnRefused, match="host paths mounted: /"):
        await pod_of(sp)
    assert calls  # the admin's hook ran, then the check refused its result

    harmless = config()
    harmless.KubeSpawner.modify_pod_hook = lambda spawner, pod: pod
    fine = spawner(harmless)
    assert pod_problems(await pod_of(fine), fine.policy, fine._decision) == []


async def test_no_pod_without_a_decision():
    sp = spawner()
    sp.apply_policy(sp.begin(1_700_000_000))
    sp._decision = None
    with pytest.raises(SpawnRefused, match="no policy decision"):
        await sp.modify_pod_hook(sp, await sp.get_pod_manifest())


async def test_a_uid_without_a_group_is_the_same_user_on_kubernetes():
    sp = spawner(config(run_as="1000"))
    pod = await pod_of(sp)
    assert pod["spec"]["containers"][0]["securityContext"]["runAsGroup"] == 1000


def test_the_policys_kubespawner_settings_are_refused_in_a_config():
    for section, key, value in [("KubeSpawner", "profile_list", []),
                                ("QustodyKubeSpawner", "extra_pod_config", {"hostPID": True}),
                                ("KubeSpawner", "service_account", "default")]:
        c = config()
        setattr(getattr(c, section), key, value)
        with pytest.raises(ValueError, match=f"c.{section}.{key} is set"):
            validate_config(c)


# -- one set of hardening checks for both backends -------------------------------------------


def _docker_container(policy: Any, decision: Any) -> dict[str, Any]:
    p = decision.profile
    return {
        "Image": "sha256:" + "a" * 64,
        "Config": {"User": policy.run_as, "Env": []},
        "HostConfig": {
            "ReadonlyRootfs": True, "CapDrop": ["ALL"], "CapAdd": None, "Privileged": False,
            "SecurityOpt": ["no-new-privileges:true"], "Memory": p.mem_limit,
            "MemorySwap": p.mem_limit, "CpuQuota": int(p.cpu_limit * 100_000),
            "CpuPeriod": 100_000, "NetworkMode": policy.network_mode, "IpcMode": "private",
            "PidMode": "", "Devices": [], "Binds": [],
        },
    }


def _set(obj: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        obj = obj[int(key)] if key.isdigit() else obj[key]
    obj[last] = value


#: The same weakening, made to a Docker container and to a pod, and the problem both show.
WEAKENINGS = [
    ("HostConfig.ReadonlyRootfs", False, "spec.containers.0.securityContext.readOnlyRootFilesystem",
     False, "root filesystem is not read-only"),
    ("HostConfig.CapDrop", [], "spec.containers.0.securityContext.capabilities", {},
     "capabilities not all dropped"),
    ("HostConfig.CapAdd", ["SYS_ADMIN"], "spec.containers.0.securityContext.capabilities",
     {"drop": ["ALL"], "add": ["SYS_ADMIN"]}, "capabilities added"),
    ("HostConfig.Privileged", True, "spec.containers.0.securityContext.privileged", True,
     "privileged"),
    ("HostConfig.SecurityOpt", [],
     "spec.containers.0.securityContext.allowPrivilegeEscalation", True,
     "privilege escalation is allowed"),
    ("HostConfig.SecurityOpt", ["no-new-privileges:true", "seccomp=unconfined"],
     "spec.containers.0.securityContext.seccompProfile", {"type": "Unconfined"},
     "seccomp unconfined"),
    ("Config.User", "0:0", "spec.containers.0.securityContext.runAsUser", 0, "runs as 0"),
    ("HostConfig.PidMode", "host", "spec.hostPID", True, "shares the host's PID namespace"),
    ("HostConfig.IpcMode", "host", "spec.hostIPC", True, "shares the host's IPC namespace"),
    ("HostConfig.NetworkMode", "host", "spec.hostNetwork", True,
     "shares the host's network namespace"),
    ("HostConfig.Memory", 8 * 1024**3, "spec.containers.0.resources.limits.memory", "8Gi",
     "memory limit differs"),
    ("HostConfig.CpuQuota", 400_000, "spec.containers.0.resources.limits.cpu", "4",
     "CPU limit differs"),
    ("HostConfig.Binds", ["/var/run/docker.sock:/var/run/docker.sock:rw"], "spec.volumes",
     [{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}],
     "host paths mounted: /var/run/docker.sock"),
]


@pytest.mark.parametrize(("docker_path", "docker_value", "pod_path", "pod_value", "problem"),
                         WEAKENINGS, ids=[w[-1] for w in WEAKENINGS])
async def test_docker_and_kubernetes_fail_the_same_hardening_check(
        docker_path, docker_value, pod_path, pod_value, problem):
    sp = spawner()
    pod = await pod_of(sp)
    policy, decision = sp.policy, sp._decision
    container = _docker_container(policy, decision)
    docker_expected = policy.expected(decision, container["Image"])
    pod_expected = policy.expected(decision, REF)
    assert hardening.problems(hardening.from_docker(container), docker_expected) == []
    assert hardening.problems(hardening.from_pod(pod), pod_expected) == []

    _set(container, docker_path, docker_value)
    _set(pod, pod_path, pod_value)
    docker_found = hardening.problems(hardening.from_docker(container), docker_expected)
    pod_found = hardening.problems(hardening.from_pod(pod), pod_expected)
    assert [x for x in docker_found if problem in x], docker_found
    assert [x for x in pod_found if problem in x], pod_found
    assert pod_problems(pod, policy, decision)  # and the spawner would refuse the pod


@pytest.mark.parametrize(("path", "value", "problem"), [
    ("spec.automountServiceAccountToken", True, "service-account token"),
    ("spec.volumes", [{"name": "home", "persistentVolumeClaim": {"claimName": "x"}},
                      {"name": "data", "nfs": {"server": "10.0.0.1", "path": "/"}}],
     "restricted profile refuses (nfs)"),
    ("spec.containers.0.securityContext.runAsNonRoot", False, "runAsNonRoot"),
    ("spec.securityContext.sysctls", [{"name": "net.ipv4.ip_forward", "value": "1"}], "sysctls"),
    ("spec.containers.0.ports", [{"containerPort": 8888, "hostPort": 8888}], "host port"),
    ("spec.initContainers", [{"name": "setup", "image": REF}], "containers beside the server"),
    ("spec.containers.0.image", "registry.example/qustody/singleuser:latest", "image differs"),
    ("spec.securityContext.runAsUser", 0, "runAsUser 0"),
    ("spec.securityContext.seccompProfile", {"type": "Unconfined"}, "seccomp profile is unconfined"),
    ("spec.containers.0.securityContext.seLinuxOptions", {"type": "spc_t"}, "SELinux"),
    ("spec.containers.0.securityContext.appArmorProfile", {"type": "Unconfined"}, "AppArmor"),
    ("metadata.annotations", {"container.apparmor.security.beta.kubernetes.io/notebook":
                              "unconfined"}, "AppArmor unconfined (annotation)"),
    ("spec.securityContext.windowsOptions", {"hostProcess": True}, "Windows host process"),
])
async def test_a_pod_outside_the_restricted_profile_is_refused(path, value, problem):
    sp = spawner()
    pod = await pod_of(sp)
    _set(pod, path, value)
    found = pod_problems(pod, sp.policy, sp._decision)
    assert any(problem in x for x in found), found


class _Group:
    def __init__(self, name: str) -> None:
        self.name = name


def _course(course_id: str) -> str:
    return (f'id = "{course_id}"\ntitle = "Intro QC"\n[term]\nstart = 2026-01-01T00:00:00Z\n'
            f'end = 2036-01-01T00:00:00Z\n[roster]\ngroup = "{course_id}"\n'
            f'[materials]\nvolume = "qustody-materials-{course_id}"\n')


async def test_course_materials_are_their_read_only_claim_and_a_missing_one_is_left_out(
    tmp_path, monkeypatch
):
    """A student of course-101 and course-102 gets course-101's materials claim, read-only,
    where Docker mounts the volume; course-102's claim does not exist in the namespace, so
    the pod does without it (it would wait for it forever). The claim lookup is a
    stand-in for the API server, which cannot run here; the pod is KubeSpawner's."""
    from kubernetes_asyncio.client.exceptions import ApiException

    courses = tmp_path / "courses"
    courses.mkdir()
    for course_id in ("course-101", "course-102"):
        (courses / f"{course_id}.toml").write_text(_course(course_id))
    sp = spawner(config(courses_dir=str(courses)))
    sp.user.groups = [_Group("course-101:students"), _Group("course-102:students")]
    asked = []

    async def read_claim(name: str, namespace: str) -> object:
        asked.append((name, namespace))
        if name != "qustody-materials-course-101":
            raise ApiException(status=404, reason="Not Found")
        return object()

    monkeypatch.setattr(sp.api, "read_namespaced_persistent_volume_claim", read_claim)
    sp._materials = await sp.existing_materials()
    assert sorted(asked) == [("qustody-materials-course-101", sp.namespace),
                             ("qustody-materials-course-102", sp.namespace)]
    pod = await pod_of(sp)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    [c] = pod["spec"]["containers"]
    [mount] = [m for m in c["volumeMounts"] if m["mountPath"].startswith("/srv/qustody/")]
    assert mount == {"name": "materials-0", "mountPath": "/srv/qustody/materials/course-101",
                     "readOnly": True}
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "materials-0"]
    assert volume["persistentVolumeClaim"] == {"claimName": "qustody-materials-course-101",
                                               "readOnly": True}
    assert pod_problems(pod, sp.policy, sp._decision, sp._materials) == []
    # the same claim, writable (an admin's hook): the pod is not created
    pod["spec"]["containers"][0]["volumeMounts"][-1]["readOnly"] = False
    assert pod_problems(pod, sp.policy, sp._decision, sp._materials) == [
        "course materials at /srv/qustody/materials/course-101 are not their read-only claim"]
    # and a researcher (no course group) gets no materials at all
    other = spawner(config(courses_dir=str(courses)), roles=("researcher",),
                    profile="researcher")
    assert await other.existing_materials() == {}
    assert not [m for m in (await pod_of(other))["spec"]["containers"][0]["volumeMounts"]
                if m["mountPath"].startswith("/srv/qustody/")]


async def test_a_mount_the_policy_did_not_give_is_refused(tmp_path):
    sp = spawner()
    pod = await pod_of(sp)
    pod["spec"]["containers"][0]["volumeMounts"].append(
        {"name": "home", "mountPath": "/srv/qustody/materials/course-101", "readOnly": True})
    assert any("mounts differ from the policy" in p
               for p in pod_problems(pod, sp.policy, sp._decision))


@pytest.mark.parametrize(("change", "problem"), [
    (lambda pod: pod["spec"]["volumes"][-1]["persistentVolumeClaim"].update(
        claimName="qustody-home-alice"), "are not their read-only claim"),
    (lambda pod: pod["spec"]["volumes"][-1]["persistentVolumeClaim"].pop("readOnly"),
     "are not their read-only claim"),
    (lambda pod: pod["spec"]["volumes"][-1].update(
        persistentVolumeClaim=None, emptyDir={"medium": "Memory", "sizeLimit": "1Mi"}),
     "are not their read-only claim"),
])
async def test_the_materials_mount_must_be_the_courses_own_read_only_claim(
    tmp_path, monkeypatch, change, problem
):
    courses = tmp_path / "courses"
    courses.mkdir()
    (courses / "course-101.toml").write_text(_course("course-101"))
    sp = spawner(config(courses_dir=str(courses)))
    sp.user.groups = [_Group("course-101:students")]

    async def read_claim(name: str, namespace: str) -> object:
        return object()

    monkeypatch.setattr(sp.api, "read_namespaced_persistent_volume_claim", read_claim)
    sp._materials = await sp.existing_materials()
    pod = await pod_of(sp)
    assert pod["spec"]["volumes"][-1]["name"] == "materials-0"
    change(pod)
    assert any(problem in p for p in pod_problems(pod, sp.policy, sp._decision, sp._materials))
