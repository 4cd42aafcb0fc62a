"""End a user's hub session everywhere: servers stopped, hub tokens revoked, cookies void.

Used when the identity provider says the user is gone (disabled, grant revoked, no
allowed group) and when the absolute session lifetime is over. Each step is audited.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from hub_ext.audit.hub import hub_emit

#: session-ended reason → token-revoked reason (the two schemas' enums differ).
TOKEN_REASON = {
    "idp-disabled": "idp-disabled",
    "group-removed": "group-removed",
    "expired": "logout",
    "refresh-failed": "logout",
    "logout": "logout",
    "admin": "admin",
}


async def end_session(app: Any, user: Any, reason: str, log: logging.Logger) -> list[str]:
    """Stop ``user``'s servers, delete their hub tokens, rotate their cookie id and drop
    their auth_state. Returns the names of the servers stopped."""
    stopped: list[str] = []
    for name, spawner in list(user.spawners.items()):
        if not (spawner.active or spawner.pending):
            continue
        try:
            if user.name in app.users and spawner.ready:
                await app.proxy.delete_user(user, name)
            await user.stop(name)
            stopped.append(name)
        except Exception:  # keep revoking the rest: one stuck server must not keep tokens alive
            log.exception("identity: stopping %s's server %r failed", user.name, name)
    db = app.db
    tokens = list(user.orm_user.api_tokens)
    for token in tokens:
        db.delete(token)
    # every login cookie names the user's cookie_id: a new one logs out every browser
    user.orm_user.cookie_id = uuid.uuid4().hex
    db.commit()
    await user.save_auth_state(None)
    log.warning(
        "identity: session of %s ended (%s): %d server(s) stopped, %d hub token(s) revoked",
        user.name,
        reason,
        len(stopped),
        len(tokens),
    )
    for token in tokens:
        hub_emit(
            "token-revoked",
            {"user": user.name, "token_id": f"a{token.id}", "reason": TOKEN_REASON[reason]},
        )
    hub_emit("session-ended", {"user": user.name, "reason": reason, "servers_stopped": stopped})
    return stopped
