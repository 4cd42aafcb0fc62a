"""The reference JupyterHub configuration for Qustody, with the demo's defaults embedded.

`make demo` runs it (through ``python -m hub_ext.demo``); the hub tests load it and
override what they need. Everything listens on 127.0.0.1.

Environment (all optional except the demo password):

- ``QUSTODY_STATE_DIR``: where the SQLite database and cookie secret live (``.demo``)
- ``QUSTODY_HUB_PORT`` / ``QUSTODY_HUB_API_PORT`` / ``QUSTODY_PROXY_API_PORT``: public and
  internal hub ports, and the proxy's API port
- ``QUSTODY_IMAGE_DIGEST``: ``sha256:<id>`` of the single-user image (``make image``
  prints it); with a Docker engine this selects the hardened Docker spawner. Without it
  the hub refuses to start outside demo mode (servers would run as local processes);
  ``QUSTODY_SPAWNER=local`` chooses them explicitly, ``QUSTODY_SPAWNER=kubernetes``
  KubeSpawner pods (``qustody[kubernetes]``; the digest as ``repo@sha256:...``)
- ``QUSTODY_USER_NETWORK`` / ``QUSTODY_USER_SUBNET``: name and subnet of the internal
  Docker network user containers run on (``SpawnPolicy.network_mode`` / ``network_subnet``);
  ``QUSTODY_USER_NETWORK=host`` with ``QUSTODY_ALLOW_HOST_NETWORK=1`` shares the host's
  network instead, in demo mode only
- ``QUSTODY_DEMO_MODE=1`` (``make demo`` sets it): demo mode; so is the shared-password login
- ``QUSTODY_OIDC_*``: the OpenID provider (docs/identity.md); ``make demo`` starts one
- ``QUSTODY_DEMO_PASSWORD``: without OIDC, the hub uses JupyterHub's shared-password login
  (the hub tests do) and refuses to start without this password;
  ``QUSTODY_DEMO_ADMIN_PASSWORD`` (32+ characters) for admins
"""

import os
import sys

from hub_ext.audit.hub import hub_audit, service_environment
from hub_ext.audit.web import audit_page
from hub_ext.courses.hub import courses, courses_dir
from hub_ext.culling import culler
from hub_ext.identity.hubconfig import configure_oidc, hand_roles_to_authenticator
from hub_ext.proxy import QustodyProxy
from hub_ext.qpu.hub import qpu_gateway
from hub_ext.ratelimit import setup_limits
from hub_ext.server_api.hub import internal_url, server_api
from hub_ext.spawner import (
    HardenedDockerSpawner,
    QustodyLocalProcessSpawner,
    SpawnPolicy,
    validate_config,
)
from hub_ext.upstream import guard_service_health_check
from hub_ext.volumes import home_template_error
from hub_ext.wiring import apply

c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by JupyterHub

STATE = os.path.abspath(os.environ.get("QUSTODY_STATE_DIR", ".demo"))
os.makedirs(STATE, exist_ok=True)

# -- network: loopback only --------------------------------------------------------------
c.JupyterHub.bind_url = f"http://127.0.0.1:{os.environ.get('QUSTODY_HUB_PORT', '8000')}"
c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{os.environ.get('QUSTODY_HUB_API_PORT', '8081')}"
c.ConfigurableHTTPProxy.api_url = (
    f"http://127.0.0.1:{os.environ.get('QUSTODY_PROXY_API_PORT', '8001')}"
)
c.JupyterHub.db_url = f"sqlite:///{STATE}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = f"{STATE}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = f"{STATE}/jupyterhub.pid"
c.ConfigurableHTTPProxy.pid_file = f"{STATE}/jupyterhub-proxy.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.last_activity_interval = 60
c.JupyterHub.allow_named_servers = True
c.JupyterHub.named_server_limit_per_user = 2

# -- the audit log: one hash-chained, MAC'd JSON-lines file for the hub and its services --
c.AuditLog.path = os.environ.get("QUSTODY_AUDIT_LOG", f"{STATE}/audit/audit.jsonl")
c.AuditLog.key_file = os.environ.get("QUSTODY_AUDIT_KEY_FILE", f"{STATE}/audit.key")
# the demo creates its key; a production hub sets a key file it provisioned itself
c.AuditLog.create_key_file = "QUSTODY_AUDIT_KEY_FILE" not in os.environ

# -- identity: OIDC (QUSTODY_OIDC_*, docs/identity.md); else the tests' shared password ---
oidc = configure_oidc(c, state_dir=STATE)
password = os.environ.get("QUSTODY_DEMO_PASSWORD", "")
if not oidc and not password:
    raise SystemExit(
        "jupyterhub_config.py: set QUSTODY_DEMO_PASSWORD (make demo does) or configure a real "
        "authenticator; the demo login refuses to run without a password."
    )
if not oidc:
    c.JupyterHub.authenticator_class = "shared-password"
    c.SharedPasswordAuthenticator.user_password = password
if os.environ.get("QUSTODY_DEMO_ADMIN_PASSWORD") and not oidc:
    # at least 32 characters; without it, admins cannot log in with a password
    c.SharedPasswordAuthenticator.admin_password = os.environ["QUSTODY_DEMO_ADMIN_PASSWORD"]
# with OIDC, roles come from the provider's groups (QustodyAuthenticator.group_roles)
DEMO_USERS = {} if oidc else {"alice": "student", "bob": "researcher", "admin": "admin"}
c.Authenticator.allowed_users = {u for u, r in DEMO_USERS.items() if r != "admin"}
c.Authenticator.admin_users = {u for u, r in DEMO_USERS.items() if r == "admin"}

# -- the spawn policy --------------------------------------------------------------------
c.SpawnPolicy.profiles = {
    "student": {
        "display_name": "Student",
        "description": "Course work and small simulations",
        # instructors and TAs prepare and try course work in the environment students get
        "roles": ["student", "instructor", "assistant"],
        "images": ["qustody"],
        "mem_limit": "1G",
        "cpu_limit": 1.0,
        "pids_limit": 256,
        "idle_timeout": 30 * 60,
        "max_age": 4 * 3600,
        "kernel_idle_timeout": 15 * 60,
    },
    "researcher": {
        "display_name": "Researcher",
        "description": "Larger simulations on the Aer simulator",
        "roles": ["researcher", "admin"],
        "images": ["qustody"],
        "mem_limit": "4G",
        "cpu_limit": 2.0,
        "pids_limit": 1024,
        "idle_timeout": 4 * 3600,
        "max_age": 12 * 3600,
        "kernel_idle_timeout": 2 * 3600,
    },
    "admin": {
        "display_name": "Admin",
        "description": "Hub administration",
        "roles": ["admin"],
        "images": ["qustody"],
        "mem_limit": "2G",
        "cpu_limit": 1.0,
        "pids_limit": 512,
        "idle_timeout": 3600,
        "max_age": 8 * 3600,
        "kernel_idle_timeout": 3600,
    },
}
# instructors may start their course's students' servers with the student profile only
c.SpawnPolicy.course_profiles = {"*": "student"}
# each user's home: a Docker volume (a PVC on Kubernetes) of this name; two hubs on one
# engine need their own names. `make demo` gives each state directory its own.
if os.environ.get("QUSTODY_HOME_VOLUME_TEMPLATE"):
    _homes = os.environ["QUSTODY_HOME_VOLUME_TEMPLATE"]
    _error = home_template_error(_homes)
    if _error:
        raise SystemExit(f"jupyterhub_config.py: QUSTODY_HOME_VOLUME_TEMPLATE={_homes[:80]!r} "
                         f"{_error}")
    c.SpawnPolicy.home_volume_template = _homes
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 30
c.Spawner.poll_interval = 10
c.Spawner.default_url = "/lab"

# Demo mode: `make demo` (QUSTODY_DEMO_MODE=1), or the shared-password login above, which
# has no real users. Only a demo may run servers as local processes or on the host network.
DEMO = os.environ.get("QUSTODY_DEMO_MODE", "") == "1" or not oidc

image = os.environ.get("QUSTODY_IMAGE_DIGEST", "")
spawner = os.environ.get("QUSTODY_SPAWNER", "") or ("docker" if image else "")
if not spawner and not DEMO:
    raise SystemExit(
        "jupyterhub_config.py: QUSTODY_IMAGE_DIGEST is not set, so servers would run as local "
        "processes under the hub's own Unix user, able to read every user's files and the "
        "hub's keys. Refusing to start outside demo mode. Build the single-user image "
        "(`make image`) and set QUSTODY_IMAGE_DIGEST to the sha256:<id> it prints (or "
        "QUSTODY_SPAWNER=kubernetes with the image digest)."
    )
spawner = spawner or "local"
if spawner == "docker":
    c.JupyterHub.spawner_class = HardenedDockerSpawner
    c.SpawnPolicy.allowed_images = {"qustody": image}
    # user containers run on Qustody's internal network (created at start if missing) and
    # reach the hub only through the network proxy this proxy class runs on its bridge
    c.JupyterHub.proxy_class = QustodyProxy
    if os.environ.get("QUSTODY_USER_NETWORK"):
        c.SpawnPolicy.network_mode = os.environ["QUSTODY_USER_NETWORK"]
    if os.environ.get("QUSTODY_USER_SUBNET"):
        c.SpawnPolicy.network_subnet = os.environ["QUSTODY_USER_SUBNET"]
    # the host network (demo only: refused by validate_config outside demo mode)
    c.SpawnPolicy.allow_host_network = os.environ.get("QUSTODY_ALLOW_HOST_NETWORK", "") == "1"
elif spawner == "kubernetes":
    # the same policy as a KubeSpawner pod (pip install "qustody[kubernetes]"); the image
    # must be repo@sha256:<digest>, pullable by the cluster
    c.JupyterHub.spawner_class = "qustody-kubernetes"
    c.SpawnPolicy.allowed_images = {"qustody": image}
else:
    c.JupyterHub.spawner_class = QustodyLocalProcessSpawner
    # The local-process spawner runs no image; the entry only satisfies the policy's shape.
    c.SpawnPolicy.allowed_images = {"qustody": "sha256:" + "0" * 64}
    print(
        "\n" + "!" * 78 + "\n"
        "!! WARNING: no Docker engine or image: servers run as LOCAL PROCESSES with NO\n"
        "!! container isolation (no read-only root, no capability drop, no limits).\n"
        "!! Demo use only. Run `make demo` as root on Debian to get hardened containers.\n"
        + "!" * 78 + "\n",
        file=sys.stderr,
        flush=True,
    )

# -- roles ---------------------------------------------------------------------------------
# Users get roles from DEMO_USERS here, or from IdP groups under OIDC (where
# hand_roles_to_authenticator moves the roles' scopes to the authenticator's managed roles).
# The components below add their scopes to these roles (hub_ext.wiring joins same-name roles).
c.JupyterHub.load_roles = [
    {"name": "student", "description": "Qustody student profile", "scopes": ["self"],
     "users": [u for u, r in DEMO_USERS.items() if r == "student"]},
    {"name": "researcher", "description": "Qustody researcher profile", "scopes": ["self"],
     "users": [u for u, r in DEMO_USERS.items() if r == "researcher"]},
]

# -- secrets: delivered at start through a single-use claim ticket (docs/secrets.md) --------
c.SecretBroker.backend = "embedded"  # or "vault" (configure c.VaultBroker)
c.SecretBroker.db_path = f"{STATE}/secrets.sqlite"
c.SecretBroker.master_key_file = f"{STATE}/secrets.key"
c.SecretBroker.create_master_key = True  # the demo creates its key; production provisions one
c.SecretClassPolicy.profile_classes = {
    "student": ["sandbox", "simulator", "personal"],
    "researcher": ["sandbox", "dev", "prod", "simulator", "hardware", "personal"],
    "admin": ["sandbox", "dev", "personal"],
}
c.SecretClassPolicy.role_classes = {
    "student": ["sandbox", "simulator", "personal"],
    "researcher": ["sandbox", "dev", "prod", "simulator", "hardware", "personal"],
    "admin": ["sandbox", "dev", "personal"],
}
# users may move a key out of a notebook into a secret of their own ("move to a secret"
# in JupyterLab); such secrets get this class, and never overwrite an existing one
c.SecretBroker.self_service_class = "personal"

# security alerts from the audit log (docs/metrics.md): thresholds and a webhook, e.g.
# c.AlertRules.login_failures = 5
# c.AlertRules.webhook_url = "https://alerts.example.org/qustody"

# -- the components -------------------------------------------------------------------------
# Each function returns what its component adds (services, roles, scopes, server-token
# scopes, environment, settings, files); apply() merges them and stops the hub on a
# conflict. They read the settings above, so they come after them.
hub_audit(c)  # a bad c.AuditLog setting stops the hub here (the demo's key is created)
setup_limits(c)  # the same for c.RequestLimits (rate limits of the endpoints servers call)
# the service user servers call: secret claims (a bad secrets setting stops the hub here),
# audit reports (stamped with the calling server), the gateway's provider credentials
api = server_api(c, STATE, profiles=list(c.SpawnPolicy.profiles),
                 courses_dir=str(courses_dir(STATE)))
gateway = qpu_gateway(c, STATE, courses_dir=str(courses_dir(STATE)),
                      credentials_url=internal_url(api))
apply(
    c,
    api,
    # the auditor page (read-only; the "auditor" role: custom:audit:read, no server access)
    audit_page(c, port=int(os.environ.get("QUSTODY_AUDIT_PAGE_PORT", "8082")),
               courses_dir=str(courses_dir(STATE)),
               server_max_age=SpawnPolicy(config=c).server_max_ages()),
    culler(cull_every=60, default_idle_timeout=3600, environment=service_environment(c)),
    # the QPU gateway: service, custom scopes, roles, server-token scopes
    gateway,
    # one <course>.toml each (docs/courses.md; `make demo` writes course-101) and the
    # instructor page (/services/courses/): a course's students, their servers, QPU use
    courses(c, STATE, demo=os.environ.get("QUSTODY_DEMO_COURSE", "") == "1",
            port=int(os.environ.get("QUSTODY_COURSES_PAGE_PORT", "8083")),
            qpu_url=gateway.environment["QUSTODY_QPU_URL"], docker=spawner == "docker",
            # how often the courses service takes due term steps (releases, collects, the
            # term's close and the end of retention)
            term_interval=float(os.environ.get("QUSTODY_TERM_INTERVAL", "60"))),
)
validate_config(c, demo=DEMO)  # the spawn policy; host network only in demo mode
guard_service_health_check()  # no traceback at shutdown from JupyterHub's health check
if oidc:  # roles come from IdP groups: the roles' scopes go to the authenticator
    hand_roles_to_authenticator(c)
