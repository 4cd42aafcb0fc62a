"""Who each hub user is at the identity provider: ``(iss, sub)`` bound at first login.

The hub name comes from a claim (``username_claim``, e.g. ``preferred_username``) that
some providers let users or helpdesks change; the subject ``sub`` never changes for one
account of one issuer. The first accepted login of a name binds it to ``(iss, sub)``;
every later login or refresh of that name must present the same pair, and one pair names
one hub user (so a renamed account cannot open a second identity with its own quota).

Where the binding lives, and why there:

- **Not in auth_state.** auth_state is replaced at every login and dropped when a session
  ends (:func:`hub_ext.identity.sessions.end_session`): it cannot remember whom a name
  belonged to while nobody is logged in as it, which is exactly when an attacker comes.
- **Not in a file of its own.** A file beside the hub is lost silently when the hub runs
  with an external database and an ephemeral disk, and a lost binding fails open.
- **A table in the hub's own database** (``qustody_identity_bindings``): persistent and
  backed up with the hub, transactional (two first logins racing for a name cannot both
  win), out of users' reach (no API reads or writes it; user containers cannot reach the
  database), and independent of the ``users`` table, so deleting a hub user does not
  free the name for another subject while its home volume, secrets, QPU quota and audit
  trail, all keyed by the name, live on.

Admins re-bind a name legitimately (account re-created at the provider, issuer moved)
with ``python -m hub_ext.identity.bindings`` (see :func:`main` and docs/identity.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import (
    Column,
    Float,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

metadata = MetaData()
bindings_table = Table(
    "qustody_identity_bindings",
    metadata,
    Column("username", String(255), primary_key=True),
    Column("issuer", String(512), nullable=False),
    Column("subject", String(255), nullable=False),
    Column("bound_at", Float, nullable=False),
    UniqueConstraint("issuer", "subject", name="qustody_identity_bindings_subject"),
)


@dataclass(frozen=True)
class Binding:
    username: str
    issuer: str
    subject: str
    bound_at: float


@dataclass(frozen=True)
class Verdict:
    """The outcome of :meth:`BindingStore.check_or_bind`: ``ok`` or why not."""

    ok: bool
    new: bool = False
    #: "subject-mismatch" (the name is bound to another subject) or "subject-in-use"
    #: (this subject is bound to another name)
    reason: str = ""
    other: str = ""  # the other name, for "subject-in-use" (audit detail only)


class BindingStore:
    """The bindings table in a SQLAlchemy database, reached through ``session()``."""

    def __init__(self, session: Callable[[], Session]) -> None:
        self._session = session

    def create(self) -> None:
        """Create the table if it does not exist (the hub does this at start-up)."""
        db = self._session()
        metadata.create_all(db.get_bind(), checkfirst=True)

    def get(self, username: str) -> Binding | None:
        row = (
            self._session()
            .execute(select(bindings_table).where(bindings_table.c.username == username))
            .first()
        )
        return Binding(*row) if row else None

    def by_subject(self, issuer: str, subject: str) -> Binding | None:
        row = (
            self._session()
            .execute(
                select(bindings_table).where(
                    bindings_table.c.issuer == issuer, bindings_table.c.subject == subject
                )
            )
            .first()
        )
        return Binding(*row) if row else None

    def check(self, username: str, issuer: str, subject: str) -> Verdict:
        """Whether ``username`` may be ``(issuer, subject)``, without binding anything."""
        bound = self.get(username)
        if bound is not None:
            if (bound.issuer, bound.subject) == (issuer, subject):
                return Verdict(ok=True)
            return Verdict(ok=False, reason="subject-mismatch")
        holder = self.by_subject(issuer, subject)
        if holder is not None:
            return Verdict(ok=False, reason="subject-in-use", other=holder.username)
        return Verdict(ok=True, new=True)

    def check_or_bind(self, username: str, issuer: str, subject: str) -> Verdict:
        """:meth:`check`, binding the name when it is free (first login)."""
        verdict = self.check(username, issuer, subject)
        if not verdict.new:
            return verdict
        db = self._session()
        try:
            db.execute(
                insert(bindings_table).values(
                    username=username, issuer=issuer, subject=subject, bound_at=time.time()
                )
            )
            db.commit()
        except IntegrityError:  # another process bound it first: decide against its row
            db.rollback()
            return self.check(username, issuer, subject)
        return verdict

    def set(self, username: str, issuer: str, subject: str) -> None:
        """Bind ``username`` to ``(issuer, subject)``, replacing its binding (admin)."""
        db = self._session()
        db.execute(delete(bindings_table).where(bindings_table.c.username == username))
        db.execute(
            insert(bindings_table).values(
                username=username, issuer=issuer, subject=subject, bound_at=time.time()
            )
        )
        db.commit()

    def release(self, username: str) -> bool:
        """Forget ``username``'s binding (admin): its next login binds it again."""
        db = self._session()
        removed = db.execute(delete(bindings_table).where(bindings_table.c.username == username))
        db.commit()
        return bool(getattr(removed, "rowcount", 0))

    def all(self) -> list[Binding]:
        rows = self._session().execute(select(bindings_table).order_by("username")).all()
        return [Binding(*row) for row in rows]


def main(argv: list[str] | None = None) -> int:
    """Admin CLI: list, set or release bindings in the hub's database.

    ``python -m hub_ext.identity.bindings --db-url sqlite:///…/jupyterhub.sqlite list``
    ``… set alice SUBJECT --issuer https://idp.example.org`` (the subject from the
    ``login-refused`` record of her refused login), ``… release alice``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m hub_ext.identity.bindings",
        description="Hub user ↔ identity-provider subject bindings (docs/identity.md).",
    )
    parser.add_argument("--db-url", required=True, help="the hub's JupyterHub.db_url")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="show every binding")
    set_cmd = commands.add_parser("set", help="bind a user to a subject (replaces the binding)")
    set_cmd.add_argument("username")
    set_cmd.add_argument("subject")
    set_cmd.add_argument("--issuer", required=True, help="QustodyAuthenticator.issuer")
    release_cmd = commands.add_parser(
        "release", help="forget a user's binding: whoever next logs in as them is bound"
    )
    release_cmd.add_argument("username")
    args = parser.parse_args(argv)

    engine = create_engine(args.db_url)
    with Session(engine) as session:
        store = BindingStore(lambda: session)
        store.create()
        if args.command == "list":
            for b in store.all():
                print(f"{b.username}\t{b.issuer}\t{b.subject}\t{time.ctime(b.bound_at)}")
        elif args.command == "set":
            holder = store.by_subject(args.issuer, args.subject)
            if holder is not None and holder.username != args.username:
                print(
                    f"error: that subject is bound to {holder.username!r}; "
                    f"release {holder.username!r} first",
                    file=sys.stderr,
                )
                return 1
            store.set(args.username, args.issuer, args.subject)
            print(f"{args.username} bound to {args.subject} at {args.issuer}")
        elif not store.release(args.username):
            print(f"error: {args.username!r} has no binding", file=sys.stderr)
            return 1
        else:
            print(f"{args.username} released: their next login binds them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
