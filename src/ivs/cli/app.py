"""The `ivs` command line's root: the Typer apps every command group registers on, and `fail`,
which turns an error into one line on stderr and an exit status."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from ivs import __version__

app = typer.Typer(
    help="ivs: an intelligent vision sensor in software. Frames in, metadata out.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Model packages: list, inspect, verify, pack.", no_args_is_help=True)
keys_app = typer.Typer(help="Signing keys for model packages.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(keys_app, name="keys")
config_app = typer.Typer(help="Sensor configuration files.", no_args_is_help=True)
hub_app = typer.Typer(help="The hub: stores what sensors report, answers queries.", no_args_is_help=True)
device_app = typer.Typer(help="Devices allowed to post to the hub.", no_args_is_help=True)
app.add_typer(hub_app, name="hub")
hub_app.add_typer(device_app, name="device")
package_app = typer.Typer(help="Model packages on the hub, to deploy with `ivs hub deploy`.", no_args_is_help=True)
hub_app.add_typer(package_app, name="package")
app.add_typer(config_app, name="config")
enrolment_app = typer.Typer(help="Enrolment groups: new devices enrol with a group's secret.", no_args_is_help=True)
hub_app.add_typer(enrolment_app, name="enrolment")
user_app = typer.Typer(help="The hub's users: a role each (viewer, operator, admin).", no_args_is_help=True)
hub_app.add_typer(user_app, name="user")
token_app = typer.Typer(help="Users' API tokens: a role, an expiry, revocable.", no_args_is_help=True)
hub_app.add_typer(token_app, name="token")
rollout_app = typer.Typer(
    help="Staged rollouts of a package to the devices a tag condition selects.", no_args_is_help=True
)
hub_app.add_typer(rollout_app, name="rollout")

err_console = Console(stderr=True)
RUNTIMES = ("auto", "onnxruntime", "openvino", "litert", "onnxruntime-cuda")


def fail(message: str, code: int = 1) -> typer.Exit:
    err_console.print(Text(f"ivs: error: {message}", style="bold red"), soft_wrap=True)
    return typer.Exit(code)


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def version() -> None:
    """Print the ivs version."""
    typer.echo(__version__)
