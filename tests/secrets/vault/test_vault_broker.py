"""The Vault broker against a real OpenBao: users read with their own identity, rotation,
revocation of the user's token when the server stops, bad ID tokens, and the hub's
wrapped AppRole login."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hvac
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from hvac import exceptions as vault_errors
from localjwt import Vault
from standin_leases import LeasingProxy
from traitlets.config import Config

from hub_ext.secrets.model import SecretError, SecretExists
from hub_ext.secrets.vault import VaultBroker

ALICE = "alice-ibm-token-0123456789"
BOB = "bobs-own-token-9876543210"


def broker(vault: Vault, **traits: Any) -> VaultBroker:
    c = Config()
    c.VaultBroker.url = vault.url
    c.VaultBroker.namespaces = ["user:{username}", "user:bob"]
    for k, v in traits.items():
        setattr(c.VaultBroker, k, v)
    return VaultBroker(config=c)


@pytest.fixture
def stocked(vault: Vault) -> Vault:
    vault.put("qustody/user/alice/QISKIT_IBM_TOKEN", ALICE, "hardware")
    vault.put("qustody/user/alice/SANDBOX_KEY", "alice-sandbox-key-42", "sandbox")
    vault.put("qustody/user/bob/BOB_TOKEN", BOB, "prod")
    return vault


def test_user_reads_own_secrets_with_own_identity_only(stocked: Vault) -> None:
    b = broker(stocked)
    got = b.secrets_for_spawn("alice", "", {"id_token": stocked.id_token("alice")})
    assert {(s.name, s.cls, s.value, s.version) for s in got} == {
        ("QISKIT_IBM_TOKEN", "hardware", ALICE, 1),
        ("SANDBOX_KEY", "sandbox", "alice-sandbox-key-42", 1),
    }
    # user:bob is configured for everyone, but alice's Vault token cannot read it
    assert BOB not in [s.value for s in got]
    assert [
        s.value for s in b.secrets_for_spawn("bob", "", {"id_token": stocked.id_token("bob")})
    ] == [BOB]


def test_rotation_is_seen_and_release_revokes_the_users_token(stocked: Vault) -> None:
    b = broker(stocked)
    auth = {"id_token": stocked.id_token("alice")}
    b.secrets_for_spawn("alice", "", auth)
    stocked.put("qustody/user/alice/QISKIT_IBM_TOKEN", "alice-rotated-token-555", "hardware")
    got = {s.name: s for s in b.secrets_for_spawn("alice", "", auth)}
    assert (got["QISKIT_IBM_TOKEN"].value, got["QISKIT_IBM_TOKEN"].version) == (
        "alice-rotated-token-555",
        2,
    )
    token = b._tokens[("alice", "")]
    assert hvac.Client(url=stocked.url, token=token).auth.token.lookup_self()["data"]["ttl"] <= 300
    b.release("alice", "")
    with pytest.raises(vault_errors.Forbidden):
        hvac.Client(url=stocked.url, token=token).auth.token.lookup_self()
    assert ("alice", "") not in b._tokens


@pytest.mark.parametrize("case", ["other-key", "expired", "wrong-audience", "garbage"])
def test_bad_id_tokens_are_refused_clearly(stocked: Vault, case: str) -> None:
    if case == "other-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = stocked.id_token("alice", key=other)
    elif case == "expired":
        token = stocked.id_token("alice", ttl=-60)
    elif case == "wrong-audience":
        token = stocked.id_token("alice", aud="someone-else")
    else:
        token = "not.a.jwt"
    with pytest.raises(SecretError, match="Vault refused alice's login") as e:
        broker(stocked).secrets_for_spawn("alice", "", {"id_token": token})
    assert token not in str(e.value)


def test_no_id_token_is_a_clear_error(stocked: Vault) -> None:
    with pytest.raises(SecretError, match="no OIDC ID token"):
        broker(stocked).secrets_for_spawn("alice", "", {})
    with pytest.raises(SecretError, match="no OIDC ID token"):
        broker(stocked).secrets_for_spawn("alice", "", None)


def test_hub_logs_in_with_a_wrapped_approle_secret_id_once(stocked: Vault, tmp_path: Path) -> None:
    root = stocked.root_client()
    role_id = root.auth.approle.read_role_id("qustody-hub")["data"]["role_id"]
    wrapped = root.auth.approle.generate_secret_id("qustody-hub", wrap_ttl="60s")
    path = tmp_path / "secret-id"
    path.write_text(wrapped["wrap_info"]["token"])
    path.chmod(0o600)
    traits = {
        "hub_auth": "approle",
        "approle_role_id": role_id,
        "approle_secret_id_file": str(path),
        "approle_secret_id_wrapped": True,
    }
    b = broker(stocked, **traits)
    assert b._hub is not None and b._hub.auth.token.lookup_self()["data"]["ttl"] > 0
    # the wrapping token was single-use: a copy of the file is worthless
    with pytest.raises(SecretError, match="could not log in to Vault"):
        broker(stocked, **traits)


def test_configuration_errors_stop_start_up(vault: Vault) -> None:
    with pytest.raises(SecretError, match=r"VaultBroker\.url is not set"):
        VaultBroker(config=Config())
    with pytest.raises(Exception, match=r"hub_auth=.*must be"):
        broker(vault, hub_auth="token")
    with pytest.raises(Exception, match="not a namespace"):
        broker(vault, namespaces=["team:{username}"])
    with pytest.raises(SecretError, match="approle_secret_id_file is not set"):
        broker(vault, hub_auth="approle")
    # users' ID tokens and secrets travel to Vault: TLS, or this machine's dev server
    for url in ("http://vault.example.org:8200", "ftp://127.0.0.1", "https://"):
        with pytest.raises(Exception, match=r"VaultBroker\.url must be https://"):
            broker(vault, url=url)


def test_hub_delivery_from_vault_applies_the_class_policy(stocked: Vault) -> None:
    from hub_ext.secrets.delivery import SecretDelivery

    c = Config()
    c.SecretBroker.backend = "vault"
    c.VaultBroker.url = stocked.url
    c.SecretClassPolicy.profile_classes = {"student": ["sandbox"], "researcher": ["*"]}
    c.SecretClassPolicy.role_classes = {"student": ["sandbox"], "researcher": ["*"]}
    from hub_ext.secrets.tickets import TicketSigner

    key = b"k" * 32
    d = SecretDelivery(c, ["student", "researcher"], ticket_key=key)
    auth = {"id_token": stocked.id_token("alice")}
    text, _ = TicketSigner(key).issue("alice", "", "tok", "student", ("researcher",))
    _, got = d.redeem(text, "alice", "", "tok", auth, ("researcher",))
    assert [(s.name, s.cls) for s in got] == [("SANDBOX_KEY", "sandbox")]  # no hardware
    text, _ = TicketSigner(key).issue("alice", "r", "tok2", "researcher", ("researcher",))
    _, got = d.redeem(text, "alice", "r", "tok2", auth, ("researcher",))
    assert {s.name for s in got} == {"QISKIT_IBM_TOKEN", "SANDBOX_KEY"}
    token = d.broker._tokens[("alice", "r")]  # type: ignore[attr-defined]
    d.server_stopped("alice", "r")  # the user's Vault token dies with the server
    with pytest.raises(vault_errors.Forbidden):
        hvac.Client(url=stocked.url, token=token).auth.token.lookup_self()


def test_release_revokes_leases_with_the_hubs_own_token(stocked: Vault, tmp_path: Path) -> None:
    """Leased reads come from the stand-in proxy (KV v2 never leases); the revocation
    itself is answered by the real OpenBao, which checks the hub's AppRole policy."""
    root = stocked.root_client()
    role_id = root.auth.approle.read_role_id("qustody-hub")["data"]["role_id"]
    path = tmp_path / "secret-id"
    path.write_text(root.auth.approle.generate_secret_id("qustody-hub")["data"]["secret_id"])
    path.chmod(0o600)
    proxy = LeasingProxy(stocked.url).start()
    try:
        b = broker(
            stocked, url=proxy.url, hub_auth="approle", approle_role_id=role_id,
            approle_secret_id_file=str(path),
        )
        got = b.secrets_for_spawn("alice", "", {"id_token": stocked.id_token("alice")})
        assert len(got) == 2 and len(proxy.issued) == 2
        assert b._hub is not None
        b.release("alice", "")
        assert sorted(r.lease_id for r in proxy.revoked) == sorted(proxy.issued)
        assert {(r.token, r.status) for r in proxy.revoked} == {(b._hub.token, 204)}
        b.release("alice", "")  # nothing left: a second release revokes nothing
        assert len(proxy.revoked) == 2
    finally:
        proxy.stop()


def test_revocation_logs_the_hub_in_again_and_keeps_what_it_could_not_revoke(
    stocked: Vault, tmp_path: Path
) -> None:
    """The hub's own Vault token is never renewed: once Vault refuses it, the hub logs in
    again (with the secret id it unwrapped at start: a wrapping token unwraps once) and
    revokes. Leases Vault could not be asked to revoke (it is down) stay in the release
    file, and a later release revokes them."""
    root = stocked.root_client()
    role_id = root.auth.approle.read_role_id("qustody-hub")["data"]["role_id"]
    path = tmp_path / "secret-id"
    wrapped = root.auth.approle.generate_secret_id("qustody-hub", wrap_ttl="60s")
    path.write_text(wrapped["wrap_info"]["token"])
    path.chmod(0o600)
    proxy = LeasingProxy(stocked.url).start()
    try:
        b = broker(stocked, url=proxy.url, hub_auth="approle", approle_role_id=role_id,
                   approle_secret_id_file=str(path), approle_secret_id_wrapped=True)
        assert b._hub is not None
        b.secrets_for_spawn("alice", "", {"id_token": stocked.id_token("alice")})
        root.auth.token.revoke(b._hub.token)  # as if its TTL had run out
        b.release("alice", "")
        assert sorted(r.lease_id for r in proxy.revoked if r.status == 204) == sorted(
            proxy.issued)

        b.secrets_for_spawn("alice", "r", {"id_token": stocked.id_token("alice")})
        leased = proxy.issued[2:]
        assert leased
        real = b._hub.sys.revoke_lease

        def down(**_: Any) -> None:
            raise requests.ConnectionError("Vault is not answering")

        b._hub.sys.revoke_lease = down  # type: ignore[method-assign]
        b.release("alice", "r")  # Vault is down: nothing revoked, nothing forgotten
        kept = json.loads(Path(b._release_path).read_text())
        assert any(set(leased) <= set(e.get("leases", [])) for e in kept.values()), kept
        b._hub.sys.revoke_lease = real  # type: ignore[method-assign]
        b.release("alice", "r")
        assert {r.lease_id for r in proxy.revoked if r.status == 204} >= set(leased)
    finally:
        proxy.stop()


def _hub_approle(vault: Vault, tmp_path: Path) -> dict[str, Any]:
    root = vault.root_client()
    path = tmp_path / "hub-secret-id"
    path.write_text(root.auth.approle.generate_secret_id("qustody-hub")["data"]["secret_id"])
    path.chmod(0o600)
    return {
        "hub_auth": "approle",
        "approle_role_id": root.auth.approle.read_role_id("qustody-hub")["data"]["role_id"],
        "approle_secret_id_file": str(path),
    }


def test_a_restarted_hub_revokes_the_tokens_of_servers_started_before(
    stocked: Vault, tmp_path: Path, state_dir: Path
) -> None:
    """The user's token lives only in the hub's memory; a hub that restarts while servers
    run must still revoke those tokens when the servers stop, from what it recorded: the
    accessor (which cannot read), never the token."""
    hub_login = _hub_approle(stocked, tmp_path)
    before = broker(stocked, **hub_login)
    before.secrets_for_spawn("alice", "", {"id_token": stocked.id_token("alice")})
    before.secrets_for_spawn("bob", "lab", {"id_token": stocked.id_token("bob")})
    alice_token, bob_token = before._tokens[("alice", "")], before._tokens[("bob", "lab")]
    record = (state_dir / "vault-release.json").read_text()
    assert oct((state_dir / "vault-release.json").stat().st_mode & 0o777) == "0o600"
    assert alice_token not in record and bob_token not in record
    assert set(json.loads(record)) == {"alice/", "bob/lab"}

    after = broker(stocked, **hub_login)  # the hub restarted: no tokens in memory
    assert not after._tokens
    after.release("alice", "")
    with pytest.raises(vault_errors.Forbidden):
        hvac.Client(url=stocked.url, token=alice_token).auth.token.lookup_self()
    # bob's server still runs: his token is untouched, and still known to a third start
    assert hvac.Client(url=stocked.url, token=bob_token).auth.token.lookup_self()
    assert set(json.loads((state_dir / "vault-release.json").read_text())) == {"bob/lab"}
    broker(stocked, **hub_login).release("bob", "lab")
    with pytest.raises(vault_errors.Forbidden):
        hvac.Client(url=stocked.url, token=bob_token).auth.token.lookup_self()
    assert json.loads((state_dir / "vault-release.json").read_text()) == {}


def test_without_a_hub_login_a_restart_leaves_old_tokens_to_expire_and_says_so(
    stocked: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    before = broker(stocked)
    before.secrets_for_spawn("alice", "", {"id_token": stocked.id_token("alice")})
    token = before._tokens[("alice", "")]
    with caplog.at_level("WARNING"):
        after = broker(stocked)
        after.release("alice", "")
    assert "cannot be revoked when they stop (VaultBroker.hub_auth is not set)" in caplog.text
    assert "left to expire: set VaultBroker.hub_auth" in caplog.text
    # the token's TTL (the JWT role's token_ttl) is what limits it
    assert 0 < hvac.Client(url=stocked.url, token=token).auth.token.lookup_self()["data"]["ttl"] <= 300


def test_an_unreadable_release_file_stops_start_up_clearly(stocked: Vault, state_dir: Path) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "vault-release.json").write_bytes(b"\xff{not json")
    with pytest.raises(SecretError, match=r"release_file .* is unreadable"):
        broker(stocked)


def test_users_store_their_own_secrets_only_where_vaults_policy_lets_them(stocked: Vault) -> None:
    """Self-service storing writes with the user's own Vault token: the read-only policy
    refuses it clearly; once the policy allows writes to the user's own path, the secret
    is created there, and check-and-set 0 refuses a name that exists."""
    b = broker(stocked)
    auth = {"id_token": stocked.id_token("alice")}
    with pytest.raises(SecretError, match="Vault's policy does not let you write"):
        b.add_own("alice", "", auth, "MOVED_KEY", "personal", "moved-value-123456", 50)
    root = stocked.root_client()
    accessor = root.sys.list_auth_methods()["data"]["jwt/"]["accessor"]
    me = f"{{{{identity.entity.aliases.{accessor}.name}}}}"
    policy = root.sys.read_policy("qustody-user")["data"]["rules"]
    root.sys.create_or_update_policy(
        "qustody-user",
        policy + f'path "secret/data/qustody/user/{me}/*" {{ capabilities = ["create", "update", "read"] }}\n',
    )
    b.release("alice", "")  # a new token carries the new policy
    stored = b.add_own("alice", "", auth, "MOVED_KEY", "personal", "moved-value-123456", 50)
    assert (stored.name, stored.cls, stored.version, str(stored.namespace)) == (
        "MOVED_KEY",
        "personal",
        1,
        "user:alice",
    )
    got = {s.name: s for s in b.secrets_for_spawn("alice", "", auth)}
    assert got["MOVED_KEY"].value == "moved-value-123456" and got["MOVED_KEY"].cls == "personal"
    with pytest.raises(SecretExists, match="already have a secret named QISKIT_IBM_TOKEN"):
        b.add_own("alice", "", auth, "QISKIT_IBM_TOKEN", "personal", "overwrite-attempt-1", 50)
    assert got["QISKIT_IBM_TOKEN"].value == ALICE
    assert {s.value for s in b.secrets_for_spawn("alice", "", auth)} >= {ALICE}  # unchanged
    with pytest.raises(SecretError, match="self_service_limit = 3"):
        b.add_own("alice", "", auth, "ONE_MORE", "personal", "one-more-value-123", 3)


def test_a_courses_shared_secrets_are_read_by_name_with_the_users_own_token(
    stocked: Vault,
) -> None:
    """course_secrets reads only the names the course file gives (nothing else is listed
    or read), with the user's own Vault token, whose policy must allow the course path;
    without that policy nothing is read."""
    from openbao import USER_ROLE

    root = stocked.root_client()
    stocked.put("qustody/course/course-101/COURSE_KEY", "course-shared-key-77", "sandbox")
    stocked.put("qustody/course/course-101/GRADER_KEY", "course-grader-key-88", "sandbox")
    # alice's role may read the course path (a site's group policy would do this)
    root.sys.create_or_update_policy(
        "course-101", 'path "secret/data/qustody/course/course-101/*" '
        '{ capabilities = ["read"] }\n')
    role = root.read("auth/jwt/role/" + USER_ROLE)["data"]
    b = broker(stocked)
    auth = {"id_token": stocked.id_token("alice")}
    assert b.course_secrets("alice", "", auth, "course-101", ("COURSE_KEY",)) == []
    b.release("alice", "")  # a new Vault token, with the policy below
    root.write_data("auth/jwt/role/" + USER_ROLE,
                    data={**role, "token_policies": [USER_ROLE, "course-101"]})
    got = b.course_secrets("alice", "", {"id_token": stocked.id_token("alice")}, "course-101",
                           ("COURSE_KEY", "MISSING_KEY"))
    assert [(s.name, s.value, str(s.namespace)) for s in got] == [
        ("COURSE_KEY", "course-shared-key-77", "course:course-101")]
