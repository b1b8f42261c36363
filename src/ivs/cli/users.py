"""`ivs hub user ...` and `ivs hub token ...`: the hub's users and their API tokens, in its database."""

from __future__ import annotations

import json
import os
from typing import Annotated

import typer

from ivs.cli.app import fail, token_app, user_app
from ivs.errors import IvsError

Db = Annotated[str, typer.Option(help="The hub's database URL.")]


def _store(db: str):  # type: ignore[no-untyped-def]
    from ivs.hub.store import Store

    return Store(db)


@user_app.command("add")
def user_add(
    name: Annotated[str, typer.Argument(help="The user's name.")],
    role: Annotated[str, typer.Option(help="viewer | operator | admin.")] = "viewer",
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the dashboard password ('' for none: tokens only).")
    ] = "IVS_USER_PASSWORD",
    db: Db = "sqlite:///ivs-hub.db",
) -> None:
    """Add a user (or change one's role and password). The password comes from the environment,
    never the command line; the hub keeps only its argon2 hash."""
    password = os.environ.get(password_env) if password_env else None
    if password_env and not password:
        raise fail(f"{password_env} is not set: expected the user's password there (or --password-env '')", 2)
    try:
        _store(db).add_user(name, role, password)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"user {name}: {role}" + ("" if password else " (no password: API tokens only)"))


@user_app.command("list")
def user_list(db: Db = "sqlite:///ivs-hub.db") -> None:
    """The users (JSON lines: name, role, created, disabled, whether they have a password)."""
    for user in _store(db).users():
        typer.echo(json.dumps(user))


@user_app.command("disable")
def user_disable(name: Annotated[str, typer.Argument(help="The user.")], db: Db = "sqlite:///ivs-hub.db") -> None:
    """No more logins, sessions or tokens for a user."""
    if not _store(db).disable_user(name):
        raise fail(f"no user {name!r}: expected one of `ivs hub user list`", 1)
    typer.echo(f"user {name} disabled")


@token_app.command("create")
def token_create(
    user: Annotated[str, typer.Argument(help="Whose token.")],
    role: Annotated[str | None, typer.Option(help="Its role: the user's (default) or below.")] = None,
    days: Annotated[float, typer.Option(help="Days until it expires (0: never).")] = 90.0,
    db: Db = "sqlite:///ivs-hub.db",
) -> None:
    """A new API token for a user: printed once (the hub keeps its sha256)."""
    try:
        token_id, token = _store(db).create_token(user, role, days or None)
    except IvsError as err:
        raise fail(str(err), 1) from None
    typer.echo(f"token {token_id} for {user}: {token}")


@token_app.command("list")
def token_list(db: Db = "sqlite:///ivs-hub.db") -> None:
    """The API tokens (JSON lines: id, user, role, created, expires, revoked; never the tokens)."""
    for token in _store(db).tokens():
        typer.echo(json.dumps(token))


@token_app.command("revoke")
def token_revoke(
    token_id: Annotated[int, typer.Argument(help="The token's id.")], db: Db = "sqlite:///ivs-hub.db"
) -> None:
    """Revoke an API token: refused from now on."""
    if not _store(db).revoke_token(token_id):
        raise fail(f"no token {token_id}: expected one of `ivs hub token list`", 1)
    typer.echo(f"token {token_id} revoked")
