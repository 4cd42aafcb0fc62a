"""A small Vault HTTP API server for tests: the documented endpoints the broker uses.

Implements (https://developer.hashicorp.com/vault/api-docs): KV v2 ``data`` (read,
write) and ``metadata`` (list, read, delete); token ``lookup-self``, ``revoke-self``,
``create``; JWT auth ``login`` (RS256 signature checked against the configured public
key, ``exp`` and ``aud`` checked); AppRole ``login``, ``role-id`` and ``secret-id``;
``sys/leases/revoke``; ``sys/capabilities-self``; response wrapping (``X-Vault-Wrap-TTL`` on any request,
``sys/wrapping/wrap`` and ``sys/wrapping/unwrap``, single use). ACLs are path prefixes
with capabilities; a JWT login gets read/list on ``<mount>/*/qustody/user/<user>`` and
on ``project/<group>`` for each group claim, the way a templated Vault policy would.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import hvac
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from tornado import web

AUDIENCE = "qustody-hub"


@dataclass
class Token:
    id: str
    accessor: str
    policies: list[str]
    acl: list[tuple[str, set[str]]]  # (path prefix, capabilities); "*" for all
    expires: float
    display_name: str = "token"
    uses: int = 0  # 0: unlimited


@dataclass
class State:
    jwt_public_key: rsa.RSAPublicKey
    audience: str
    user_claim: str = "preferred_username"
    root: str = field(default_factory=lambda: "root-" + secrets.token_hex(8))
    tokens: dict[str, Token] = field(default_factory=dict)
    kv: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # path -> versions
    wrapped: dict[str, dict[str, Any]] = field(default_factory=dict)
    approle: dict[str, dict[str, Any]] = field(default_factory=dict)  # role name -> spec
    secret_ids: dict[str, str] = field(default_factory=dict)  # secret id -> role name
    revoked_leases: list[str] = field(default_factory=list)
    token_ttl: int = 300

    def __post_init__(self) -> None:
        self.tokens[self.root] = Token(self.root, "acc-root", ["root"], [("", {"*"})], 1e18, "root")

    def issue(
        self, policies: list[str], acl: list[tuple[str, set[str]]], ttl: int, name: str
    ) -> Token:
        token = Token(
            "hvs." + secrets.token_urlsafe(24),
            secrets.token_hex(8),
            policies,
            acl,
            time.time() + ttl,
            name,
        )
        self.tokens[token.id] = token
        return token


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Handler(web.RequestHandler):
    state: State

    def initialize(self, state: State) -> None:
        self.state = state

    def check_xsrf_cookie(self) -> None:
        pass

    SUPPORTED_METHODS = ("GET", "POST", "PUT", "DELETE", "LIST")

    def fail(self, code: int, *errors: str) -> None:
        raise _Fail(code, list(errors))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        errors = exc.errors if isinstance(exc, _Fail) else [self._reason]
        self.finish({"errors": errors})

    def body(self) -> dict[str, Any]:
        if not self.request.body:
            return {}
        try:
            data = json.loads(self.request.body)
        except ValueError:
            self.fail(400, "failed to parse JSON input")
        if not isinstance(data, dict):
            self.fail(400, "failed to parse JSON input")
        return data

    def token(self, required: bool = True) -> Token | None:
        tid = self.request.headers.get("X-Vault-Token", "")
        token = self.state.tokens.get(tid)
        if token is None or token.expires < time.time():
            if required:
                self.fail(403, "permission denied")
            return None
        return token

    def allowed(self, path: str, cap: str) -> None:
        token = self.token()
        assert token is not None
        for prefix, caps in token.acl:
            if path.startswith(prefix) and ("*" in caps or cap in caps):
                return
        self.fail(403, "permission denied")

    def reply(
        self,
        data: dict[str, Any] | None = None,
        auth: dict[str, Any] | None = None,
        code: int = 200,
        lease_id: str = "",
    ) -> None:
        if data is None and auth is None:
            self.set_status(204)
            self.finish()
            return
        body = {
            "request_id": secrets.token_hex(8),
            "lease_id": lease_id,
            "renewable": False,
            "lease_duration": 0,
            "data": data,
            "auth": auth,
            "wrap_info": None,
            "warnings": None,
        }
        wrap_ttl = self.request.headers.get("X-Vault-Wrap-TTL")
        if wrap_ttl:
            ttl = int(wrap_ttl.rstrip("s"))
            wrapper = self.state.issue([], [("sys/wrapping/unwrap", {"update"})], ttl, "wrap")
            wrapper.uses = 1
            self.state.wrapped[wrapper.id] = body
            body = {
                "request_id": secrets.token_hex(8),
                "lease_id": "",
                "renewable": False,
                "lease_duration": 0,
                "data": None,
                "auth": None,
                "warnings": None,
                "wrap_info": {
                    "token": wrapper.id,
                    "accessor": wrapper.accessor,
                    "ttl": ttl,
                    "creation_time": time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "creation_path": self.request.path[4:],
                },
            }
        self.set_status(code)
        self.finish(body)

    def auth_block(self, token: Token) -> dict[str, Any]:
        ttl = max(0, int(token.expires - time.time()))
        return {
            "client_token": token.id,
            "accessor": token.accessor,
            "policies": token.policies,
            "token_policies": token.policies,
            "lease_duration": ttl,
            "renewable": False,
            "metadata": {"name": token.display_name},
        }

    # -- routing -------------------------------------------------------------------------

    async def get(self, path: str) -> None:
        if self.get_query_argument("list", "") == "true":
            return self.route("LIST", path)
        return self.route("GET", path)

    async def post(self, path: str) -> None:
        return self.route("POST", path)

    async def put(self, path: str) -> None:
        return self.route("POST", path)

    async def delete(self, path: str) -> None:
        return self.route("DELETE", path)

    async def list(self, path: str) -> None:
        return self.route("LIST", path)

    def route(self, method: str, path: str) -> None:
        s = self.state
        parts = path.split("/")
        if path == "auth/token/lookup-self" and method == "GET":
            t = self.token()
            assert t is not None
            return self.reply(
                {
                    "id": t.id,
                    "accessor": t.accessor,
                    "policies": t.policies,
                    "ttl": max(0, int(t.expires - time.time())),
                    "display_name": t.display_name,
                }
            )
        if path == "auth/token/revoke-self" and method == "POST":
            t = self.token()
            assert t is not None
            del s.tokens[t.id]
            return self.reply()
        if path == "auth/token/create" and method == "POST":
            t = self.token()
            assert t is not None
            b = self.body()
            ttl = _seconds(b.get("ttl", "0")) or int(t.expires - time.time())
            ttl = min(ttl, int(t.expires - time.time()))  # a child never outlives its parent
            child = s.issue(list(b.get("policies") or t.policies), t.acl, ttl, "child")
            return self.reply(auth=self.auth_block(child))
        if len(parts) == 3 and parts[0] == "auth" and parts[2] == "login" and parts[1] != "approle":
            return self.jwt_login()
        if path == "auth/approle/login" and method == "POST":
            b = self.body()
            role = s.secret_ids.pop(str(b.get("secret_id", "")), None)
            spec = s.approle.get(role or "")
            if spec is None or spec["role_id"] != b.get("role_id"):
                self.fail(400, "invalid role or secret ID")
            t = s.issue(spec["policies"], spec["acl"], spec["ttl"], f"approle-{role}")
            return self.reply(auth=self.auth_block(t))
        if parts[:3] == ["auth", "approle", "role"] and len(parts) == 5:
            self.allowed(path, "update" if method == "POST" else "read")
            spec = s.approle.get(parts[3])
            if spec is None:
                self.fail(404)
            if parts[4] == "role-id":
                return self.reply({"role_id": spec["role_id"]})
            if parts[4] == "secret-id" and method == "POST":
                sid = secrets.token_hex(16)
                s.secret_ids[sid] = parts[3]
                return self.reply({"secret_id": sid, "secret_id_accessor": secrets.token_hex(8)})
        if path == "sys/wrapping/wrap" and method == "POST":
            self.token()
            if not self.request.headers.get("X-Vault-Wrap-TTL"):
                self.fail(400, "wrap TTL must be set")
            return self.reply(self.body())
        if path == "sys/wrapping/unwrap" and method == "POST":
            tid = str(self.body().get("token") or self.request.headers.get("X-Vault-Token", ""))
            body = s.wrapped.pop(tid, None)
            s.tokens.pop(tid, None)
            if body is None:
                self.fail(400, "wrapping token is not valid or does not exist")
            self.set_status(200)
            return self.finish(body)
        if path == "sys/capabilities-self" and method in ("POST", "PUT"):
            # every token may ask (Vault's default policy); answers per path, prefix ACLs
            token = self.token()
            assert token is not None
            paths = self.body().get("paths") or []
            caps = {p: sorted({c for prefix, cs in token.acl if p.startswith(prefix)
                               for c in cs} or {"deny"}) for p in paths}
            self.set_status(200)
            return self.finish({**caps, "data": caps})
        if path == "sys/leases/revoke" and method in ("POST", "PUT"):
            self.allowed(path, "update")
            s.revoked_leases.append(str(self.body().get("lease_id", "")))
            return self.reply()
        if len(parts) >= 3 and parts[1] in ("data", "metadata"):
            return self.kv(method, parts[0], parts[1], "/".join(parts[2:]))
        self.fail(404)

    def jwt_login(self) -> None:
        s = self.state
        b = self.body()
        jwt = str(b.get("jwt", ""))
        try:
            head, payload, sig = jwt.split(".")
            header = json.loads(_b64url(head))
            if header.get("alg") != "RS256":
                raise ValueError("alg")
            s.jwt_public_key.verify(
                _b64url(sig), f"{head}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
            claims = json.loads(_b64url(payload))
        except (ValueError, InvalidSignature):
            self.fail(400, "error validating token: invalid signature")
        if claims.get("exp", 0) < time.time():
            self.fail(400, "error validating claims: token is expired")
        aud = claims.get("aud")
        if s.audience not in (aud if isinstance(aud, list) else [aud]):
            self.fail(400, "error validating claims: invalid audience (aud) claim")
        user = claims.get(s.user_claim)
        if not isinstance(user, str) or not user:
            self.fail(400, f"claim {s.user_claim!r} not found in token")
        acl = [
            (f"{m}/{k}/qustody/user/{user}", {"read", "list"})
            for m in ("secret",)
            for k in ("data", "metadata")
        ]
        for group in claims.get("groups") or []:
            acl += [
                (f"secret/{k}/qustody/project/{group}", {"read", "list"})
                for k in ("data", "metadata")
            ]
        t = s.issue(["default", "qustody-user"], acl, s.token_ttl, f"jwt-{user}")
        self.reply(auth=self.auth_block(t))

    def kv(self, method: str, mount: str, kind: str, path: str) -> None:
        s = self.state
        key = f"{mount}/{path}".rstrip("/")
        full = f"{mount}/{kind}/{path}"
        if kind == "data" and method == "GET":
            self.allowed(full, "read")
            versions = s.kv.get(key)
            if not versions:
                self.fail(404)
            want = int(self.get_query_argument("version", "0") or 0) or len(versions)
            if not 1 <= want <= len(versions):
                self.fail(404)
            v = versions[want - 1]
            return self.reply(
                {
                    "data": v["data"],
                    "metadata": {
                        "version": want,
                        "created_time": v["created"],
                        "deletion_time": "",
                        "destroyed": False,
                        "custom_metadata": None,
                    },
                }
            )
        if kind == "data" and method == "POST":
            self.allowed(full, "update")
            data = self.body().get("data")
            if not isinstance(data, dict):
                self.fail(400, "no data provided")
            versions = s.kv.setdefault(key, [])
            versions.append({"data": data, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ")})
            return self.reply(
                {
                    "version": len(versions),
                    "created_time": versions[-1]["created"],
                    "deletion_time": "",
                    "destroyed": False,
                }
            )
        if kind == "metadata" and method == "LIST":
            self.allowed(full, "list")
            prefix = key + "/"
            keys = sorted(
                {
                    k[len(prefix) :].split("/")[0] + ("/" if "/" in k[len(prefix) :] else "")
                    for k in s.kv
                    if k.startswith(prefix)
                }
            )
            if not keys:
                self.fail(404)
            return self.reply({"keys": keys})
        if kind == "metadata" and method == "GET":
            self.allowed(full, "read")
            versions = s.kv.get(key)
            if not versions:
                self.fail(404)
            return self.reply(
                {
                    "current_version": len(versions),
                    "versions": {
                        str(i + 1): {"created_time": v["created"]} for i, v in enumerate(versions)
                    },
                }
            )
        if kind == "metadata" and method == "DELETE":
            self.allowed(full, "delete")
            s.kv.pop(key, None)
            return self.reply()
        self.fail(405)


class _Fail(web.HTTPError):
    def __init__(self, code: int, errors: list[str]) -> None:
        super().__init__(code)
        self.errors = errors


def _seconds(value: Any) -> int:
    text = str(value)
    if text.endswith("m"):
        return int(text[:-1]) * 60
    if text.endswith("h"):
        return int(text[:-1]) * 3600
    return int(text.rstrip("s") or 0)


def make_app(state: State) -> web.Application:
    return web.Application([(r"/v1/(.*)", Handler, {"state": state})])


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class Vault:
    kind: str
    url: str
    root: str
    key: rsa.RSAPrivateKey
    state: State | None = None

    def id_token(
        self, user: str, key: rsa.RSAPrivateKey | None = None, ttl: int = 300, aud: str = AUDIENCE
    ) -> str:
        now = int(time.time())
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": "test"}).encode())
        body = _b64(
            json.dumps(
                {
                    "iss": "https://idp.test",
                    "sub": f"sub-{user}",
                    "aud": aud,
                    "preferred_username": user,
                    "iat": now,
                    "nbf": now - 5,
                    "exp": now + ttl,
                }
            ).encode()
        )
        sig = (key or self.key).sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{head}.{body}.{_b64(sig)}"

    def root_client(self) -> hvac.Client:
        return hvac.Client(url=self.url, token=self.root)

    def put(self, path: str, value: str, cls: str) -> None:
        self.root_client().secrets.kv.v2.create_or_update_secret(
            path=path, secret={"value": value, "class": cls}, mount_point="secret"
        )
