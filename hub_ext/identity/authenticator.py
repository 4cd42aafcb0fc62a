"""``QustodyAuthenticator``: OpenID Connect login with enforced MFA, IdP-group roles,
short sessions and revocation (entry point ``jupyterhub.authenticators: qustody``).

The hub is the policy point and does not trust that the provider was configured well:
it verifies every ID token itself (:mod:`hub_ext.identity.tokens`), decides roles and MFA
(:mod:`hub_ext.identity.policy`), re-validates with the refresh token every
``auth_refresh_age`` seconds and ends sessions the provider no longer vouches for
(:mod:`hub_ext.identity.sessions`), also for users who make no requests (a sweep).
Each hub name is bound to the provider's immutable ``(iss, sub)`` at its first login
(:mod:`hub_ext.identity.bindings`), OAuth state is single-use
(:mod:`hub_ext.identity.login_state`) and the discovery document is cached.

It uses oauthenticator's public extension points only (its handler and authenticator
classes and their documented methods); the login state is Qustody's own
(:mod:`hub_ext.identity.oauth_state`).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthCallbackHandler, OAuthLoginHandler
from tornado import web
from tornado.httpclient import HTTPClientError
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Callable, Dict, Enum, Integer, List, Set, Unicode, default, validate

from hub_ext.audit.hub import hub_can_record, hub_emit
from hub_ext.identity.bindings import BindingStore
from hub_ext.identity.demotion import stop_servers_beyond
from hub_ext.identity.login_limits import LoginLimited
from hub_ext.identity.login_state import LoginStates, Outcome
from hub_ext.identity.logout import QustodyLogoutHandler
from hub_ext.identity.oauth_state import (
    decode_state,
    encode_state,
    local_next_url,
    new_state_id,
    pkce_pair,
)
from hub_ext.identity.policy import (
    COURSE_NAME,
    Decision,
    MfaRule,
    assured_staff,
    claim_list,
    decide,
    validate_group_roles,
    validate_mfa,
)
from hub_ext.identity.refusal import SignInRefused
from hub_ext.identity.roles import (
    BASE_SCOPES,
    COURSE_STAFF,
    EVERY_USER,
    STAFF_EXTRA,
    hub_groups,
    managed_roles,
    roles_for,
)
from hub_ext.identity.sessions import end_session
from hub_ext.identity.tokens import Expected, IdTokenError, JwksCache, verify_id_token
from hub_ext.ratelimit import request_ip

CRYPT_KEY_MESSAGE = (
    "QustodyAuthenticator keeps identity tokens in auth_state, which must be encrypted: set "
    "JUPYTERHUB_CRYPT_KEY (e.g. `openssl rand -hex 32`) in the hub's environment. Only the "
    "demo (QUSTODY_DEMO_MODE=1) generates one for you."
)


def require_crypt_key() -> None:
    """Refuse to run without an auth_state encryption key."""
    if not os.environ.get("JUPYTERHUB_CRYPT_KEY", "").strip():
        raise ValueError(CRYPT_KEY_MESSAGE)


class ProviderUnavailable(Exception):
    """The identity provider did not answer (network error or 5xx). ``repeated``: the
    remembered failure of a recent attempt, no new request made (and nothing to audit)."""

    repeated = False


#: After a failed discovery, seconds before the next attempt: an outage is neither
#: hammered nor written to the audit log once per visit to the login page.
DISCOVERY_RETRY = 10


class QustodyLoginHandler(LoginLimited, OAuthLoginHandler):  # type: ignore[misc]
    """oauthenticator's redirect to the provider, plus a nonce bound to the state cookie
    and provider discovery (a clear page when the provider is down); rate-limited per
    address (:mod:`hub_ext.identity.login_limits`)."""

    async def get(self) -> None:
        authenticator: QustodyAuthenticator = self.authenticator
        await authenticator.discover_or_page(self, allow_stale=False)
        state: dict[str, Any] = {
            "state_id": new_state_id(),
            "next_url": local_next_url(self.get_argument("next", None)),
            "nonce": secrets.token_urlsafe(24),
            "issued_at": time.time(),  # signed with the cookie: the callback's freshness check
        }
        code_verifier, code_challenge = pkce_pair()
        state["code_verifier"] = code_verifier
        params = {
            **authenticator.extra_authorize_params,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
            "nonce": state["nonce"],
            "state": encode_state({"state_id": state["state_id"]}),
        }
        if self.get_argument("reauth", "") == "1":
            # "Sign in again" after a refusal for a missing second factor: an SSO session
            # at the provider must not answer for the user without asking
            params["prompt"] = "login"
        self.set_state_cookie(encode_state(state))
        self.authorize_redirect(
            redirect_uri=authenticator.get_callback_url(self),
            client_id=authenticator.client_id,
            scope=authenticator.scope,
            extra_params=params,
            response_type="code",
        )


class QustodyCallbackHandler(LoginLimited, OAuthCallbackHandler):  # type: ignore[misc]
    """oauthenticator's callback, rate-limited per address before the state is read or
    the provider asked; a refusal is logged without the URL's code and state."""

    def check_state(self) -> None:
        """The state id the provider sent back is the one in this browser's signed cookie
        (read through Qustody's own encoding)."""
        cookie = decode_state(self.get_state_cookie()).get("state_id")
        url = decode_state(self.get_state_url()).get("state_id")
        if not isinstance(cookie, str) or not cookie:
            raise web.HTTPError(400, "OAuth state missing from cookies")
        if not isinstance(url, str) or not secrets.compare_digest(cookie, url):
            raise web.HTTPError(400, "OAuth state mismatch")

    def get_next_url(self, user: Any = None) -> str:
        """The page the login began on, from the state cookie; else the hub's default."""
        next_url = decode_state(self.get_state_cookie()).get("next_url")
        if isinstance(next_url, str) and next_url:
            return str(local_next_url(next_url))
        return str(BaseHandler.get_next_url(self, user))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            self.log.warning(
                "%d %s %s: %s",
                value.status_code,
                self.request.method,
                self.request.path,
                value.get_message(),
            )
        else:
            super().log_exception(typ, value, tb)


#: Page headings of the login policy's refusals (hub_ext/identity/policy.py reasons).
REFUSAL_TITLES = {
    "no-role": "Not allowed on this hub",
    "mfa-missing": "A second sign-in factor is required",
    "acr-too-low": "A stronger sign-in is required",
}


class QustodyAuthenticator(GenericOAuthenticator):  # type: ignore[misc]
    """OpenID Connect with PKCE; see docs/identity.md."""

    login_handler = QustodyLoginHandler
    logout_handler = QustodyLogoutHandler  # no sign-out (and server stop) cross-site

    support_contact = Unicode(
        "your hub administrator",
        config=True,
        help="""Whom a refused user should ask, shown on every sign-in refusal page after
        "If this keeps happening, ask ...", e.g. ``"research-it@example.org"`` or
        ``"the Qustody team (#qustody-help)"``. Plain text.""",
    )

    def refusal(
        self,
        handler: Any,
        status: int,
        title: str,
        message: str,
        *,
        retry: bool = True,
        reauth: bool = False,
        retry_label: str = "Sign in again",
    ) -> SignInRefused:
        """The error for a refused sign-in: its page offers to sign in again (``reauth``:
        the provider must ask for credentials again, OIDC ``prompt=login``) and says whom
        to ask."""
        url = ""
        if retry:
            url = url_path_join(handler.hub.base_url, "oauth_login")
            url += "?reauth=1" if reauth else ""
        return SignInRefused(
            status, title, message, retry_url=url, retry_label=retry_label,
            contact=self.support_contact,
        )
    callback_handler = QustodyCallbackHandler

    issuer = Unicode(
        "",
        config=True,
        help="""The OpenID provider's issuer URL (its discovery document lives under
        `<issuer>/.well-known/openid-configuration`). ID tokens must name exactly this `iss`.
        Required.""",
    )
    group_roles = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Identity-provider group → hub role (student, researcher, instructor,
        assistant (a TA), observer, admin, auditor). A user gets the roles of all their
        mapped groups; a user in no mapped group is refused. Group changes at the provider
        apply at the next refresh.""",
    )
    groups_claim = Unicode("groups", config=True, help="ID-token claim holding the user's groups.")
    course_rosters = Callable(
        None,
        allow_none=True,
        config=True,
        help="""A function ``(username) -> {course: role}`` from course rosters kept outside
        the identity provider (a course file's CSV roster; set by
        ``hub_ext.courses.hub.courses``). ``role`` is student, instructor,
        assistant or observer: a listed user joins the course (its hub group), and a staff
        role applies to that course only. It adds nothing to who may sign in: the user
        still needs a role from an IdP group. Applied at each login and refresh.""",
    )
    course_closed = Callable(
        None,
        allow_none=True,
        config=True,
        help="""A function ``(course) -> bool``: whether the course's term has closed (set
        by ``hub_ext.courses.hub.courses`` from the course files). The staff of a closed
        course get no role for it and leave its instructor and TA groups at their next
        login or refresh; its students stay in its groups, so the hub can tell them why
        their course server cannot start.""",
    )
    course_group_prefix = Unicode(
        "course-",
        config=True,
        help="""Provider groups starting with this prefix become hub groups (course
        membership); an instructor or a TA gets a role scoped to the students of each of
        their course groups, an observer a read-only one.
        Empty: no course groups.""",
    )
    mfa_amr_values = Set(
        Unicode(),
        default_value={"mfa", "otp", "hwk"},
        config=True,
        help="""`amr` values (RFC 8176) that count as multi-factor: a login must present at
        least one, or it is refused with a page saying MFA is required. Empty: amr is not
        checked (then set `min_acr`).""",
    )
    acr_levels = List(
        Unicode(),
        config=True,
        help="""The provider's `acr` values from weakest to strongest; `min_acr` and
        `role_min_acr` name levels in this list.""",
    )
    min_acr = Unicode(
        "", config=True, help="Minimum `acr` level for every login (empty: acr not checked)."
    )
    role_min_acr = Dict(
        key_trait=Unicode(),
        value_trait=Unicode(),
        config=True,
        help="""Stricter minimum `acr` for chosen roles, e.g. `{"admin": "urn:...:phr"}`.
        A login holding such a role without that level is refused.""",
    )
    allow_no_mfa = Bool(
        False,
        config=True,
        help="""Allow logins without any MFA requirement. Off by default: start-up fails when
        neither `mfa_amr_values` nor `min_acr` is set.""",
    )
    session_max_age = Integer(
        8 * 3600,
        config=True,
        help="""Absolute session lifetime in seconds from the provider login: after it the
        session ends (servers stopped, hub tokens revoked) and the user logs in again.
        Between 300 s and 7 days.""",
    )
    id_token_max_age = Integer(
        600,
        config=True,
        help="How old (seconds since `iat`) an ID token may be when the hub receives it.",
    )
    clock_leeway = Integer(
        30, config=True, help="Seconds of clock skew tolerated on `exp`, `iat` and `nbf`."
    )
    provider_outage_policy = Enum(
        ["logout", "grace"],
        "logout",
        config=True,
        help="""What a refresh does when the provider cannot be reached: `logout` requires a
        new login (servers keep running; new logins fail with a clear page until the
        provider is back); `grace` keeps the session for `provider_outage_grace` seconds
        after its last successful refresh.""",
    )
    provider_outage_grace = Integer(
        900, config=True, help="Seconds a session survives a provider outage under `grace`."
    )
    sweep_interval = Integer(
        60,
        config=True,
        help="""Seconds between sweeps that refresh users with running servers or hub
        tokens but no requests, so revocation at the provider reaches them too. 0: off.""",
    )
    discovery_ttl = Integer(
        300,
        config=True,
        help="""Seconds the provider's discovery document is reused before the login page
        fetches it again. Protects the provider (and the hub) from a request per visit to
        the login page; concurrent fetches are shared. A provider outage shows as a clear
        login page once the cached document is this old. 1 s to 1 day.""",
    )
    login_state_ttl = Integer(
        600,
        config=True,
        help="""Seconds a login may take between the hub's login page and the provider's
        callback. Each OAuth state is accepted once within this time; a replayed or older
        callback is refused before any provider request, with one `login-refused` record
        per state and period. 60 s to 1 hour.""",
    )
    role_extra_scopes = Dict(
        key_trait=Unicode(),
        value_trait=List(Unicode()),
        config=True,
        help="""Extra scopes per managed role, e.g. custom scopes other components declare
        (`{"auditor": ["custom:audit:read"], "researcher": ["custom:qpu:submit"]}`).""",
    )

    @default("enable_auth_state")
    def _enable_auth_state_default(self) -> bool:
        return True

    @default("manage_roles")
    def _manage_roles_default(self) -> bool:
        return True

    @default("manage_groups")
    def _manage_groups_default(self) -> bool:
        return True

    @default("scope")
    def _scope_default(self) -> list[str]:
        return ["openid", "profile", "email", "groups", "offline_access"]

    @default("username_claim")
    def _username_claim_default(self) -> str:
        return "preferred_username"

    @default("auth_refresh_age")
    def _auth_refresh_age_default(self) -> int:
        return 300

    @default("refresh_pre_spawn")
    def _refresh_pre_spawn_default(self) -> bool:
        return True

    @default("login_service")
    def _login_service_default(self) -> str:
        return "your organisation's sign-in"

    @validate("session_max_age")
    def _validate_session_max_age(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 300 <= value <= 7 * 86400:
            raise ValueError(
                f"QustodyAuthenticator.session_max_age = {value}: use 300 to 604800 seconds"
            )
        return value

    @validate("discovery_ttl")
    def _validate_discovery_ttl(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 1 <= value <= 86400:
            raise ValueError(
                f"QustodyAuthenticator.discovery_ttl = {value}: use 1 to 86400 seconds "
                "(300 is a good default)"
            )
        return value

    @validate("login_state_ttl")
    def _validate_login_state_ttl(self, proposal: Any) -> int:
        value = int(proposal.value)
        if not 60 <= value <= 3600:
            raise ValueError(
                f"QustodyAuthenticator.login_state_ttl = {value}: use 60 to 3600 seconds "
                "(long enough to sign in at the provider)"
            )
        return value

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # cross-setting checks once, at start-up
        require_crypt_key()
        if not self.issuer.startswith(("https://", "http://127.0.0.1", "http://localhost")):
            raise ValueError(
                "QustodyAuthenticator.issuer must be an https:// URL (http only on loopback)"
            )
        if not self.client_id or not self.client_secret:
            raise ValueError("QustodyAuthenticator needs client_id and client_secret")
        if not self.enable_auth_state or not self.enable_pkce:
            raise ValueError("QustodyAuthenticator needs enable_auth_state and enable_pkce on")
        if not 0 < self.auth_refresh_age <= self.session_max_age:
            raise ValueError("Authenticator.auth_refresh_age must be > 0 and <= session_max_age")
        validate_group_roles(self.group_roles)
        unknown = set(self.role_extra_scopes) - {*BASE_SCOPES, "admin", STAFF_EXTRA, EVERY_USER}
        if unknown:
            raise ValueError(
                f"QustodyAuthenticator.role_extra_scopes names unknown roles {sorted(unknown)}; "
                f"known: {sorted({*BASE_SCOPES, 'admin', STAFF_EXTRA, EVERY_USER})}"
            )
        validate_mfa(self.mfa_rule, self.allow_no_mfa)
        self._metadata: dict[str, Any] = {}
        self._metadata_at = 0.0  # time.monotonic() of the last successful discovery
        self._discovery: asyncio.Future[None] | None = None
        self._discovery_failed_at = -float("inf")
        self._jwks: JwksCache | None = None
        self._states = LoginStates(ttl=self.login_state_ttl)
        self._bindings: BindingStore | None = None
        self._locks: dict[str, asyncio.Lock] = {}
        #: user name -> when the sweep last asked the provider about them (monotonic)
        self._swept: dict[str, float] = {}
        self._app: Any = None
        self._sweeper: PeriodicCallback | None = None

    @property
    def mfa_rule(self) -> MfaRule:
        return MfaRule(
            amr_values=frozenset(self.mfa_amr_values),
            acr_levels=tuple(self.acr_levels),
            min_acr=self.min_acr,
            role_min_acr=dict(self.role_min_acr),
        )

    # -- provider discovery ------------------------------------------------------------------
    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            body = await self.httpfetch(url, label="identity provider", validate_cert=True)
        except HTTPClientError as e:  # any status: the provider cannot serve this document
            raise ProviderUnavailable(f"{url}: HTTP {e.code}") from e
        except OSError as e:
            raise ProviderUnavailable(f"{url}: {e.strerror or type(e).__name__}") from e
        if not isinstance(body, dict):
            raise ProviderUnavailable(f"{url}: not a JSON object")
        return body

    async def discover(self, allow_stale: bool = True) -> None:
        """Read the provider's endpoints and keys location, cached for ``discovery_ttl``;
        concurrent callers share one fetch. When a refetch fails, ``allow_stale`` keeps
        the last good document (the login page passes False so an outage shows a page)."""
        now = time.monotonic()
        if self._metadata and now - self._metadata_at < self.discovery_ttl:
            return
        try:
            if now - self._discovery_failed_at < DISCOVERY_RETRY:
                repeat = ProviderUnavailable("the last discovery attempt failed")
                repeat.repeated = True
                raise repeat
            if self._discovery is None or self._discovery.done():
                self._discovery = asyncio.ensure_future(self._fetch_metadata())
            await asyncio.shield(self._discovery)
        except ProviderUnavailable as e:
            if not e.repeated:
                self._discovery_failed_at = time.monotonic()
            if not (allow_stale and self._metadata):
                raise
            self.log.warning("identity: discovery failed, using the cached document: %s", e)

    async def _fetch_metadata(self) -> None:
        meta = await self._get_json(self.issuer.rstrip("/") + "/.well-known/openid-configuration")
        if meta.get("issuer") != self.issuer:
            raise ProviderUnavailable("the discovery document names another issuer")
        self.authorize_url = meta["authorization_endpoint"]
        self.token_url = meta["token_endpoint"]
        if self._jwks is None or self._jwks.jwks_uri != meta["jwks_uri"]:
            self._jwks = JwksCache(meta["jwks_uri"], self._get_json)
        self._metadata = meta
        self._metadata_at = time.monotonic()

    async def discover_or_page(self, handler: Any, allow_stale: bool = True) -> None:
        try:
            await self.discover(allow_stale)
        except ProviderUnavailable as e:
            if not e.repeated:
                self.log.error("identity: provider %s unreachable: %s", self.issuer, e)
                self._emit_refusal(handler, None, "idp-error", "identity provider unreachable")
            raise self.refusal(
                handler, 503, "Sign-in is unavailable",
                "The identity provider is not reachable right now, so you cannot sign in. "
                "Try again in a few minutes.", retry_label="Try again",
            ) from e

    # -- login -------------------------------------------------------------------------------
    def build_access_tokens_request_params(self, handler: Any, data: Any = None
                                           ) -> dict[str, Any]:
        """The code exchange's parameters, with the PKCE verifier from the state cookie."""
        code = handler.get_argument("code", "")
        if not code:
            raise web.HTTPError(400, "Authentication Cancelled.")
        verifier = decode_state(handler.get_state_cookie()).get("code_verifier")
        if not isinstance(verifier, str) or not verifier:
            raise web.HTTPError(400, "Missing code_verifier")
        params: dict[str, Any] = {
            "code": code,
            "grant_type": "authorization_code",
            "redirect_uri": self.get_callback_url(handler),
            "data": data,
            "code_verifier": verifier,
        }
        if not self.basic_auth:  # else the client authenticates with HTTP basic auth
            params.update(client_id=self.client_id, client_secret=self.client_secret)
        params.update(self.token_params)
        return params

    async def authenticate(self, handler: Any, data: Any = None, **kwargs: Any) -> dict[str, Any]:
        cookie = handler.get_state_cookie()
        state = decode_state(cookie)
        nonce = state.get("nonce")
        if not nonce or not isinstance(state.get("state_id"), str):
            self._emit_refusal(handler, None, "state-mismatch", "login state missing")
            raise self.refusal(
                handler, 400, "Sign-in expired",
                "The sign-in state is missing or expired. Start the login again.",
            )
        self._consume_state(handler, state)
        await self.discover_or_page(handler)
        params = self.build_access_tokens_request_params(handler, data)
        try:
            token_info = await self.get_token_info(handler, params)
        except (ProviderUnavailable, OSError) as e:
            self._emit_refusal(handler, None, "idp-error", "token endpoint unreachable")
            raise self.refusal(
                handler, 503, "Sign-in is unavailable",
                "The identity provider did not answer; try again later.", retry_label="Try again",
            ) from e
        except HTTPClientError as e:
            self._emit_refusal(handler, None, "idp-error", f"token endpoint said HTTP {e.code}")
            raise self.refusal(
                handler, 403, "Sign-in refused",
                "The identity provider refused the sign-in code. Start the login again.",
            ) from e
        try:
            claims = await self._verified(handler, token_info, nonce)
        except ProviderUnavailable as e:  # its keys could not be fetched
            self._emit_refusal(handler, None, "idp-error", "signing keys unavailable")
            raise self.refusal(
                handler, 503, "Sign-in is unavailable",
                "The identity provider did not answer; try again later.", retry_label="Try again",
            ) from e
        decision = self._decide(handler, claims)
        if not decision.allowed:
            raise self.refusal(
                handler, 403, REFUSAL_TITLES.get(decision.reason, "Sign-in refused"),
                decision.message,
                # a second factor or a stronger method: the provider must ask again
                reauth=decision.reason in ("mfa-missing", "acr-too-low"),
                retry=decision.reason != "no-role",
            )
        name = self._username(claims)
        if not await self._bound(handler, name, claims):
            raise self.refusal(
                handler, 403, "Sign-in refused",
                f"The account you signed in with is not the one the hub user {name!r} "
                f"belongs to. If your user name changed at {self.login_service}, ask your hub "
                "administrator to move your hub account to it.",
                retry=False,
            )
        return self._auth_model(token_info, claims, decision, login_at=time.time())

    def _consume_state(self, handler: Any, state: dict[str, Any]) -> None:
        """Accept each login state once within ``login_state_ttl``; refuse replays and
        stale states before any provider request, reporting each state once per period."""
        state_id = state["state_id"]
        outcome = self._states.consume(state_id, state.get("issued_at"))
        if outcome is Outcome.FRESH:
            return
        if self._states.first_refusal(state_id):
            what = "replayed" if outcome is Outcome.REPLAYED else "expired"
            self.log.warning("identity: OAuth callback with a %s login state refused", what)
            self._emit_refusal(
                handler, None, f"state-{what}", f"sign-in state {what}; no provider request made"
            )
        raise self.refusal(
            handler, 400, "Sign-in expired",
            "This sign-in link was already used or has expired. Start the login again.",
        )

    def _binding_store(self) -> BindingStore:
        if self._bindings is None:
            raise RuntimeError("QustodyAuthenticator: get_handlers was not called")
        return self._bindings

    async def _bound(
        self, handler: Any, name: str, claims: dict[str, Any], user: Any = None
    ) -> bool:
        """Whether ``name`` is this provider subject's hub user, binding it at first
        login; a refusal is logged and audited here."""
        subject = str(claims["sub"])
        store = self._binding_store()
        if store.check(name, self.issuer, subject).new:
            if user is None and handler is not None:
                user = handler.find_user(name)
            unproven = await self._unproven_owner(user, subject)
            if unproven:
                self.log.warning("identity: login of %s refused: %s", name, unproven)
                self._emit_refusal(handler, name, "subject-mismatch", unproven)
                return False
        verdict = store.check_or_bind(name, self.issuer, subject)
        if verdict.new:
            self.log.info("identity: hub user %s bound to subject %s", name, subject)
        if verdict.ok:
            return True
        if verdict.reason == "subject-in-use":
            detail = f"subject {subject} is already the hub user {verdict.other}"
        else:
            detail = f"subject {subject} is not the one bound to this hub user"
        self.log.warning("identity: login of %s refused: %s", name, detail)
        self._emit_refusal(handler, name, "subject-mismatch", detail)
        return False

    async def _unproven_owner(self, user: Any, subject: str) -> str:
        """Why an unbound but existing hub user may not be bound to ``subject`` ("" if it
        may). Hub users older than subject binding have no row: binding them to whoever
        signs in first with their name would hand their home, secrets and quota to anyone
        who can rename themselves at the provider. They are bound only to the subject
        their stored session shows, or, never used, to the first sign-in (an admin
        created them); anything else waits for an admin's ``bindings set``."""
        if user is None:
            return ""  # a new hub user: this is its first login
        state = await user.get_auth_state()
        stored = (state or {}).get(self.user_auth_state_key) or {}
        if "sub" in stored:
            if str(stored["sub"]) == subject and stored.get("iss", self.issuer) == self.issuer:
                return ""
            return f"subject {subject} is not the one that last signed in as this hub user"
        if getattr(user.orm_user, "last_activity", None) is None:
            return ""  # created by an admin and never used
        return (
            "this hub user was used before subject binding and its subject is not known; "
            "an administrator binds it (python -m hub_ext.identity.bindings set)"
        )

    async def _verified(
        self, handler: Any, token_info: dict[str, Any], nonce: str | None
    ) -> dict[str, Any]:
        assert self._jwks is not None
        raw = token_info.get("id_token")
        try:
            if not isinstance(raw, str):
                raise IdTokenError("invalid-token", "the provider returned no ID token")
            expected = Expected(
                issuer=self.issuer,
                audience=self.client_id,
                leeway=self.clock_leeway,
                max_age=self.id_token_max_age,
            )
            return await verify_id_token(raw, self._jwks, expected, nonce)
        except IdTokenError as e:
            self.log.warning("identity: ID token refused: %s", e)
            self._emit_refusal(handler, None, e.reason, str(e))
            raise self.refusal(
                handler, 403, "Sign-in refused", f"The sign-in could not be verified: {e}. "
                "Start the login again."
            ) from e

    def _decide(self, handler: Any, claims: dict[str, Any]) -> Decision:
        """The policy decision; refusals are logged and audited here."""
        decision = decide(
            claims, self.group_roles, self.mfa_rule, self.groups_claim, self.course_group_prefix
        )
        if decision.allowed:
            return decision
        user = self._username(claims)
        self.log.warning("identity: login of %s refused: %s", user, decision.reason)
        if decision.audit_type == "mfa-refused":
            hub_emit(
                "mfa-refused",
                {
                    "user": user,
                    **self._ip(handler),
                    "reason": decision.reason,
                    "required_amr": sorted(self.mfa_amr_values),
                    "presented_amr": claim_list(claims, "amr")[:16],
                    **({"acr": claims["acr"]} if isinstance(claims.get("acr"), str) else {}),
                },
            )
        else:
            self._emit_refusal(handler, user, decision.reason, "not in any allowed group")
        return decision

    def _username(self, claims: dict[str, Any]) -> str:
        name = claims.get(self.username_claim) or claims["sub"]
        return str(self.normalize_username(str(name)))

    def _auth_model(
        self,
        token_info: dict[str, Any],
        claims: dict[str, Any],
        decision: Decision,
        login_at: float,
    ) -> dict[str, Any]:
        now = time.time()
        rostered, listed = self._rostered(self._username(claims))
        staff = assured_staff(self.mfa_rule, listed, claims)
        if staff != listed:
            self.log.warning("identity: %s signed in below role_min_acr for the course staff "
                             "roles of %s; those are left out", self._username(claims),
                             sorted(set(listed) - set(staff)))
        members = sorted(set(rostered) - set(listed))
        closed = self._closed(set(decision.courses) | set(staff))
        staff = {c: k for c, k in staff.items() if c not in closed}
        staff_courses = [c for c in decision.courses if c not in closed]
        auth_state = {
            "access_token": token_info["access_token"],
            "refresh_token": token_info.get("refresh_token"),
            "id_token": token_info["id_token"],  # raw, for Vault JWT login
            "scope": str(token_info.get("scope", "")).split(),
            self.user_auth_state_key: claims,
            "qustody": {
                "amr": claim_list(claims, "amr"),
                "acr": str(claims.get("acr", "")),
                "auth_time": float(claims.get("auth_time", claims["iat"])),
                "roles": list(decision.roles),
                "courses": list(decision.courses),
                "rostered": members,
                "staff": staff,
                "login_at": login_at,
                "refreshed_at": now,
                "access_expires_at": now + float(token_info.get("expires_in", 60)),
            },
        }
        return {
            "name": self._username(claims),
            "admin": "admin" in decision.roles,
            "auth_state": auth_state,
            "groups": hub_groups(decision.roles, decision.courses, staff, members, closed),
            "roles": roles_for(decision.roles, staff_courses, self.role_extra_scopes, staff),
        }

    async def get_user_groups(self, auth_state: dict[str, Any]) -> set[str]:
        record = auth_state.get("qustody", {})
        return set(
            hub_groups(
                record.get("roles", []),
                record.get("courses", []),
                record.get("staff"),
                record.get("rostered", []),
                self._closed(set(record.get("courses", []))),
            )
        )

    def _closed(self, courses: set[str]) -> set[str]:
        """The courses among ``courses`` whose term has closed. When that cannot be told,
        all of them (fail closed: their staff get no course role until it can; students
        keep their groups, and the login goes on)."""
        closed: Any = self.course_closed  # None by default (the trait allows it)
        if closed is None:
            return set()
        try:
            return {c for c in courses if closed(c)}
        except Exception as e:
            self.log.error("identity: course terms unreadable (%s): no course staff role "
                           "is granted until they are", type(e).__name__)
            return set(courses)

    def _rostered(self, name: str) -> tuple[list[str], dict[str, str]]:
        """The courses whose own roster (CSV) lists ``name``, and the staff kind per course
        where it is not student. A roster that cannot be read adds nothing (logged)."""
        rosters: Any = self.course_rosters  # None by default (the trait allows it)
        if rosters is None:
            return [], {}
        try:
            found = dict(rosters(name))
        except Exception as e:  # the courses directory is the hub's; never block a login
            self.log.error("identity: course rosters unreadable for %s: %s", name, e)
            return [], {}
        prefix = self.course_group_prefix
        courses = {
            c: k
            for c, k in found.items()
            if prefix and c.startswith(prefix) and COURSE_NAME.match(c)  # course groups only
        }
        if len(courses) < len(found):
            self.log.warning("identity: rosters of %s name non-course groups %s (ignored)",
                             name, sorted(set(found) - set(courses)))
        staff = {c: k for c, k in courses.items() if k in COURSE_STAFF}
        return sorted(courses), staff

    async def check_allowed(self, username: str, auth_model: dict[str, Any] | None) -> bool:
        # the decision was made (and refusals explained) in authenticate; deny anything else
        return bool(auth_model and auth_model.get("auth_state", {}).get("qustody", {}).get("roles"))

    async def load_managed_roles(self) -> list[dict[str, Any]]:
        return managed_roles(self.role_extra_scopes)

    async def run_post_auth_hook(self, handler: Any, auth_model: dict[str, Any]) -> dict[str, Any]:
        auth_model = await super().run_post_auth_hook(handler, auth_model)
        record = auth_model["auth_state"]["qustody"]
        user = handler.find_user(auth_model["name"])
        self._emit_role_change(user, auth_model)
        if user is not None:
            await self._stop_servers_beyond(user, auth_model)
        hub_emit(
            "login",
            {
                "user": auth_model["name"],
                **self._ip(handler),
                "idp": self.issuer,
                "amr": record["amr"][:16],
                **({"acr": record["acr"]} if record["acr"] else {}),
                "roles": [r["name"] for r in auth_model["roles"]],
            },
        )
        return auth_model

    def _emit_role_change(self, user: Any, auth_model: dict[str, Any]) -> None:
        before = {r.name for r in user.roles} if user is not None else set()
        after = {r["name"] for r in auth_model["roles"]}
        if before != after:
            hub_emit(
                "role-changed",
                {
                    "user": auth_model["name"],
                    "added": sorted(after - before),
                    "removed": sorted(before - after),
                    "source": "idp-groups",
                },
            )

    async def _stop_servers_beyond(self, user: Any, auth_model: dict[str, Any]) -> None:
        """Servers whose profile the new roles no longer allow stop before the roles (and
        course groups) are applied."""
        if self._app is not None:
            roles = {r["name"] for r in auth_model["roles"]}
            await stop_servers_beyond(self._app, user, roles, self.log)

    @staticmethod
    def _ip(handler: Any) -> dict[str, str]:
        ip = request_ip(handler)
        return {"ip": ip} if ip else {}

    def _emit_refusal(self, handler: Any, user: str | None, reason: str, detail: str) -> None:
        hub_emit(
            "login-refused",
            {
                **({"user": user} if user else {}),
                **self._ip(handler),
                "reason": reason,
                "detail": detail,
                "idp": self.issuer,
            },
        )

    # -- refresh and revocation ----------------------------------------------------------
    async def refresh_user(self, user: Any, handler: Any = None, **kwargs: Any) -> Any:
        """Re-validate with the refresh token: a fresh auth model, True (nothing to do) or
        False (log in again; the session was ended when the provider withdrew it)."""
        asked = time.time()
        lock = self._locks.setdefault(user.name, asyncio.Lock())
        async with lock:  # rotating refresh tokens must not be used twice concurrently
            return await self._refresh(user, handler, asked)

    async def _refresh(self, user: Any, handler: Any, asked: float) -> Any:
        state = await user.get_auth_state()
        record = (state or {}).get("qustody")
        if not record:
            return False
        now = time.time()
        if record["refreshed_at"] >= asked:
            return True  # refreshed by a concurrent request while this one waited
        if now - record["login_at"] > self.session_max_age:
            await self._end(user, "expired")
            return False
        if not state.get("refresh_token"):
            await self._end(user, "refresh-failed")  # the provider issued none: cannot re-check
            return False
        # refused for want of audit space before the provider rotates the refresh token:
        # refused after, the new token would be lost and the session with it
        hub_can_record("session-refreshed")
        try:
            await self.discover()
            params = self.build_refresh_token_request_params(state["refresh_token"])
            token_info = await self.get_token_info(handler, params)
        except (ProviderUnavailable, OSError) as e:
            return self._outage(user, record, e)
        except HTTPClientError as e:
            if e.code >= 500:
                return self._outage(user, record, e)
            await self._end(user, "idp-disabled")  # invalid_grant: disabled or revoked
            return False
        except web.HTTPError:  # the provider answered with an error_description
            await self._end(user, "idp-disabled")
            return False
        try:
            claims = await self._verified(handler, token_info, None)
        except ProviderUnavailable as e:
            return self._outage(user, record, e)
        except web.HTTPError:
            await self._end(user, "refresh-failed")
            return False
        # a refresh is not a new authentication: providers may omit amr/acr from refreshed
        # ID tokens, and the login's (checked) values still describe this session
        for key in ("amr", "acr"):
            if key not in claims and record.get(key):
                claims[key] = record[key]
        if not await self._bound(handler, user.name, claims, user):
            await self._end(user, "refresh-failed")
            return False
        decision = self._decide(handler, claims)
        if not decision.allowed:
            await self._end(
                user, "group-removed" if decision.reason == "no-role" else "refresh-failed"
            )
            return False
        model = self._auth_model(token_info, claims, decision, login_at=record["login_at"])
        # Saved before the lock is released: JupyterHub saves what refresh_user returns only
        # afterwards, and a refresh waiting on the lock would otherwise read the old state and
        # present the refresh token the provider has just rotated (invalid_grant: the session
        # ended as if the account were disabled).
        await user.save_auth_state(model["auth_state"])
        self._emit_role_change(user, model)
        await self._stop_servers_beyond(user, model)
        hub_emit(
            "session-refreshed",
            {
                "user": user.name,
                "roles": [r["name"] for r in model["roles"]],
                "tokens_renewed": True,
                "expires_at": datetime.fromtimestamp(now + self.auth_refresh_age, UTC)
                .isoformat(timespec="seconds")
                .replace("+00:00", "Z"),
            },
        )
        return model

    def _outage(self, user: Any, record: dict[str, Any], error: Exception) -> bool:
        self.log.error("identity: provider unreachable refreshing %s: %s", user.name, error)
        if self.provider_outage_policy == "grace":
            return bool(time.time() - record["refreshed_at"] < self.provider_outage_grace)
        return False

    async def _end(self, user: Any, reason: str) -> None:
        app = self._app
        if app is None:
            raise RuntimeError("QustodyAuthenticator: get_handlers was not called")
        await end_session(app, user, reason, self.log)

    # -- the sweep ---------------------------------------------------------------------------
    def get_handlers(self, app: Any) -> list[Any]:
        self._app = app
        if self._bindings is None:
            self._bindings = BindingStore(lambda: app.db)
            self._bindings.create()
        if self.sweep_interval and self._sweeper is None:
            self._sweeper = PeriodicCallback(self.sweep, self.sweep_interval * 1000)
            self._sweeper.start()
        return list(super().get_handlers(app))

    async def sweep(self) -> None:
        """Refresh users who hold servers or tokens but make no requests."""
        from jupyterhub import orm

        app = self._app
        for orm_user in app.db.query(orm.User).all():
            if not orm_user.encrypted_auth_state:
                continue
            user = app.users[orm_user]
            if not (user.active or orm_user.api_tokens):
                continue
            # Not asked again within auth_refresh_age: since the provider last vouched for
            # the user (our record in the auth state, written by every refresh, a request's
            # or a sweep's; not the hub's private per-user timestamp), nor since this sweep
            # last tried (a refresh that failed in an outage is not retried at every pass).
            tried = self._swept.get(user.name)
            if tried is not None and time.monotonic() - tried < self.auth_refresh_age:
                continue
            try:
                record = ((await user.get_auth_state()) or {}).get("qustody") or {}
                if time.time() - float(record.get("refreshed_at", 0)) < self.auth_refresh_age:
                    continue
                self._swept[user.name] = time.monotonic()
                model = await self.refresh_user(user)
            except Exception:  # one user's bad record or refresh must not stop the sweep
                self.log.exception("identity: sweep could not refresh %s", user.name)
                continue
            if isinstance(model, dict):
                user.sync_groups(model["groups"])
                user.sync_roles(model["roles"])
                await user.save_auth_state(model["auth_state"])


__all__ = ["CRYPT_KEY_MESSAGE", "QustodyAuthenticator", "require_crypt_key"]
