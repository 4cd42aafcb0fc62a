"""Check a hub's spawn settings once, at start-up (``validate_config``)."""

from __future__ import annotations

from traitlets.config import Config

from .policy import SpawnPolicy

#: DockerSpawner settings the policy owns; setting them directly is refused at start-up.
_OWNED = {
    "allowed_images": "SpawnPolicy.allowed_images",
    "image": "SpawnPolicy.allowed_images and profiles",
    "volumes": "SpawnPolicy.home_volume_template",
    "read_only_volumes": "SpawnPolicy (no host mounts)",
    "mounts": "SpawnPolicy (no host mounts)",
    "extra_host_config": "SpawnPolicy",
    "extra_create_kwargs": "SpawnPolicy",
    "mem_limit": "SpawnPolicy.profiles[...]['mem_limit']",
    "cpu_limit": "SpawnPolicy.profiles[...]['cpu_limit']",
    "network_name": "SpawnPolicy.network_mode",
    "use_internal_ip": "SpawnPolicy.network_mode",
    "hub_connect_url": "SpawnPolicy.network_proxy_port (servers reach the hub there)",
    "host_ip": "SpawnPolicy.network_mode (no port is published on the host)",
    "links": "SpawnPolicy",
    "env_keep": "nothing: servers inherit no environment from the hub",
}


#: KubeSpawner settings the policy owns; setting them is refused at start-up.
KUBE_OWNED = {
    "profile_list": "SpawnPolicy.profiles",
    "image": "SpawnPolicy.allowed_images and profiles",
    "cpu_limit": "SpawnPolicy.profiles[...]['cpu_limit']",
    "mem_limit": "SpawnPolicy.profiles[...]['mem_limit']",
    "uid": "SpawnPolicy.run_as",
    "gid": "SpawnPolicy.run_as",
    "privileged": "SpawnPolicy",
    "allow_privilege_escalation": "SpawnPolicy",
    "container_security_context": "SpawnPolicy",
    "pod_security_context": "SpawnPolicy",
    "volumes": "SpawnPolicy.home_volume_template and tmpfs",
    "volume_mounts": "SpawnPolicy.home_mount and tmpfs",
    "extra_pod_config": "SpawnPolicy",
    "extra_container_config": "SpawnPolicy",
    "init_containers": "SpawnPolicy (no containers beside the server)",
    "extra_containers": "SpawnPolicy (no containers beside the server)",
    "service_account": "nothing: servers get no Kubernetes API token",
    "automount_service_account_token": "nothing: servers get no Kubernetes API token",
    "env_keep": "nothing: servers inherit no environment from the hub",
}


def validate_config(config: Config, *, demo: bool = False) -> SpawnPolicy:
    """Check the spawn policy in a hub config once, at start-up.

    Raises ValueError with a message that says what to change. Call it at the end of
    ``jupyterhub_config.py``: ``validate_config(c)``. ``demo`` says the hub runs in demo
    mode (``make demo``, or the shared-password demo login): only then may containers
    share the host's network (``SpawnPolicy.allow_host_network``).
    """
    sections = [("Spawner", _OWNED), ("DockerSpawner", _OWNED), ("HardenedDockerSpawner", _OWNED),
                ("KubeSpawner", KUBE_OWNED), ("QustodyKubeSpawner", KUBE_OWNED)]
    for section, owned in sections:
        if section not in config:
            continue
        for key in config[section]:
            if key in owned and not (key == "env_keep" and not config[section][key]):
                raise ValueError(
                    f"c.{section}.{key} is set, but the hardened spawner owns it: use "
                    f"{owned[key]} instead (or remove the setting)."
                )
    policy = SpawnPolicy(config=config)
    policy.check()
    if policy.host_network and not demo:
        raise ValueError(
            "SpawnPolicy.network_mode = 'host' (with allow_host_network) is for demos only, "
            "and this hub is not in demo mode: every kernel would share the host's loopback "
            "services and ports. Remove both settings to use Qustody's internal network."
        )
    if policy.host_firewall == "off" and not policy.host_network and not demo:
        policy.log.warning(FIREWALL_OFF)
    return policy


#: The warning for ``SpawnPolicy.host_firewall = "off"`` outside demo mode.
FIREWALL_OFF = (
    "SECURITY: SpawnPolicy.host_firewall = 'off': no firewall on the host for the user "
    "network. Every container can reach any host service listening on all addresses or on "
    "the bridge (sshd, databases, ...) and every other user's server. Set it back to "
    "'nftables' unless a firewall of your own does the same."
)
