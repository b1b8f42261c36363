"""Users, their roles, API tokens and dashboard sessions, and the audit log (the tables; who may
do what is `ivs.hub.auth`)."""

from __future__ import annotations

import contextlib
import functools
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.orm import Session

from ivs.hub.store.schema import ApiTokenRow, AuditRow, HubError, SessionRow, UserRow, check_name, hash_token

ROLES = ("viewer", "operator", "admin")
"""Each role may do what the ones before it may, and more."""


@dataclass(frozen=True)
class User:
    name: str
    role: str


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: float
    who: str
    role: str | None
    action: str
    status: int
    address: str | None


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


class UserStore:
    """The store's user, token, session and audit methods (`Store` has them)."""

    engine: Engine
    _write_lock: contextlib.AbstractContextManager[Any]

    # users
    def add_user(self, name: str, role: str, password: str | None = None) -> None:
        """A new user (or a changed role and password for an existing one). A user without a
        password cannot log in to the dashboard, only use API tokens."""
        why = check_name(name)
        if why is not None:
            raise HubError(f"user: {why}")
        if role not in ROLES:
            raise HubError(f"role {role!r}: expected one of {', '.join(ROLES)}")
        hashed = _hasher().hash(password) if password else None
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.merge(UserRow(name=name, role=role, password_hash=hashed, created=time.time(), disabled=None))

    def users(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            return [{"name": u.name, "role": u.role, "created": u.created, "disabled": u.disabled,
                     "password": u.password_hash is not None}
                    for u in session.scalars(select(UserRow).order_by(UserRow.name))]  # fmt: skip

    def disable_user(self, name: str) -> bool:
        """No more logins, tokens or sessions for this user. False: no such user."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            user = session.get(UserRow, name)
            if user is None:
                return False
            user.disabled = user.disabled or time.time()
            session.execute(delete(SessionRow).where(SessionRow.user == name))
            return True

    def check_password(self, name: str, password: str) -> User | None:
        """The user, when the password is theirs and they are not disabled; None otherwise (in
        about the same time either way)."""
        from argon2.exceptions import VerificationError

        with Session(self.engine) as session:
            user = session.get(UserRow, name)
            stored = user.password_hash if user is not None and user.disabled is None else None
            role = user.role if user is not None else ""
        try:
            # A made-up hash for unknown users: the answer takes as long as for a wrong password.
            _hasher().verify(stored or _dummy_hash(), password)
        except VerificationError:
            return None
        return User(name, role) if stored is not None else None

    # API tokens
    def create_token(self, user: str, role: str | None = None, days: float | None = 90) -> tuple[int, str]:
        """A new API token for `user` with `role` (default: theirs; never more) -> (id, the token:
        shown once). `days`: when it expires (None: never)."""
        with self._write_lock, Session(self.engine) as session, session.begin():
            u = session.get(UserRow, user)
            if u is None or u.disabled is not None:
                raise HubError(f"no active user {user!r}: expected one of `ivs hub user list`")
            role = role or u.role
            if role not in ROLES or ROLES.index(role) > ROLES.index(u.role):
                raise HubError(f"role {role!r}: expected {u.role} or below for {user!r}")
            token = "ivs_u_" + secrets.token_urlsafe(32)
            now = time.time()
            row = ApiTokenRow(user=user, token_hash=hash_token(token), role=role, created=now,
                              expires=None if days is None else now + days * 86400, revoked=None)  # fmt: skip
            session.add(row)
            session.flush()
            return int(row.id), token

    def revoke_token(self, token_id: int) -> bool:
        with self._write_lock, Session(self.engine) as session, session.begin():
            row = session.get(ApiTokenRow, token_id)
            if row is None:
                return False
            row.revoked = row.revoked or time.time()
            return True

    def tokens(self) -> list[dict[str, Any]]:
        with Session(self.engine) as session:
            rows = session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.id))
            return [{"id": t.id, "user": t.user, "role": t.role, "created": t.created, "expires": t.expires,
                     "revoked": t.revoked} for t in rows]  # fmt: skip

    def user_for_token(self, token: str) -> User | None:
        """The user and role an API token stands for: None when unknown, revoked, expired, or its
        user is disabled."""
        now = time.time()
        with Session(self.engine) as session:
            t = session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == hash_token(token)))
            if t is None or t.revoked is not None or (t.expires is not None and t.expires < now):
                return None
            u = session.get(UserRow, t.user)
            if u is None or u.disabled is not None:
                return None
            # a token never does more than its user may now
            role = t.role if ROLES.index(t.role) <= ROLES.index(u.role) else u.role
            return User(u.name, role)

    # sessions
    def start_session(self, user: str, hours: float = 12) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.add(SessionRow(token_hash=hash_token(token), user=user, created=now, expires=now + hours * 3600))
        return token

    def end_session(self, token: str) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.execute(delete(SessionRow).where(SessionRow.token_hash == hash_token(token)))

    def user_for_session(self, token: str) -> User | None:
        with Session(self.engine) as session:
            s = session.get(SessionRow, hash_token(token))
            if s is None or s.expires < time.time():
                return None
            u = session.get(UserRow, s.user)
            return None if u is None or u.disabled is not None else User(u.name, u.role)

    # audit
    def audit(self, who: str, role: str | None, action: str, status: int, address: str | None) -> None:
        with self._write_lock, Session(self.engine) as session, session.begin():
            session.add(AuditRow(time=time.time(), who=who[:144], role=role, action=action[:256], status=status,
                                 address=address))  # fmt: skip

    def audit_log(self, *, since: float | None = None, who: str | None = None, limit: int = 1000) -> list[AuditEntry]:
        stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if since is not None:
            stmt = stmt.where(AuditRow.time >= since)
        if who is not None:
            stmt = stmt.where(AuditRow.who == who)
        with Session(self.engine) as session:
            return [
                AuditEntry(r.id, r.time, r.who, r.role, r.action, r.status, r.address) for r in session.scalars(stmt)
            ]


@functools.cache
def _dummy_hash() -> str:
    """A hash of a password nobody has, to check unknown users against."""
    return str(_hasher().hash(secrets.token_urlsafe(16)))
