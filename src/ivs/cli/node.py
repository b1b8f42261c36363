"""`ivs node`: a site's cameras in one process, from one YAML file (`ivs.node`).

SIGHUP re-reads the file and applies what changed while the other sensors run on; SIGINT or
SIGTERM stop every sensor after its frame in hand, within `node.stop_s`: a sensor still running
then (a runtime or a source that never answers) is named and the node exits with status 3 at
once, without waiting for it (its outbox keeps what it had committed). A file with errors is
refused at start (exit 2) and, on SIGHUP, reported while the node runs on with the config it has.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from ivs.cli.app import app, err_console, fail
from ivs.errors import IvsError

if TYPE_CHECKING:
    from ivs.node import Node
    from ivs.node_config import NodeConfig


@app.command()
def node(
    config: Annotated[Path, typer.Option("--config", "-c", help="The node's YAML file: `sensors:` and `defaults:`.")],
    allow_unsigned: Annotated[bool, typer.Option(help="DEVELOPMENT ONLY: load unsigned packages.")] = False,
    status_s: Annotated[float, typer.Option(help="Print each sensor's health this often (seconds); 0: never.")] = 30.0,
) -> None:
    """Run many sensors in one process, each network loaded once and shared (docs/deploy.md)."""
    from ivs.build import RunOptions
    from ivs.node import Node, serve_node_metrics

    logging.getLogger("ivs.node").setLevel(logging.INFO)
    cfg = _load(config)
    if cfg is None:
        raise typer.Exit(2)
    if allow_unsigned:
        err_console.print("[bold yellow]WARNING: --allow-unsigned: unsigned packages will run. Development only.[/]")
    site = Node(cfg, RunOptions(allow_unsigned=allow_unsigned, watch=True, ledger_period_s=60.0))
    if cfg.node.metrics_port is not None:
        try:
            serve_node_metrics(site, cfg.node.metrics_port)
        except OSError as err:
            raise fail(f"node.metrics_port {cfg.node.metrics_port}: cannot listen ({err.strerror})", 2) from None
    wake = threading.Event()
    stopping = threading.Event()
    reload = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stopping.set()
        wake.set()

    def _reload(signum: int, frame: object) -> None:
        reload.set()
        wake.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _reload)
    err_console.print(f"node {cfg.node.id}: {len(cfg.sensors)} sensors from {config}")
    agent = None
    if cfg.node.hub is not None:  # the hub may deploy this node's site file (ivs.node_agent)
        from ivs.node_agent import NodeAgent

        try:
            agent = NodeAgent(site, cfg.node.hub)
        except IvsError as err:
            raise fail(str(err), 2) from None
    site.start()
    if agent is not None:
        agent.start()
    next_status = time.monotonic() + status_s
    try:
        while not stopping.is_set():
            wake.wait(1.0)
            wake.clear()
            if reload.is_set():
                reload.clear()
                new = _load(config)
                if new is not None:
                    done = site.reload(new)
                    err_console.print(f"node {cfg.node.id}: reloaded {config}: {done}")
            if site.wait(timeout=0):
                break  # every source ended (files)
            if status_s > 0 and time.monotonic() >= next_status:
                next_status += status_s
                _print_health(site)
    finally:
        if agent is not None:
            agent.close()
        stuck = site.stop(timeout=cfg.node.stop_s)
    _print_health(site)
    if stuck:
        why = f"node {cfg.node.id}: not stopped within {cfg.node.stop_s:g} s: {', '.join(stuck)}"
        err_console.print(Text(f"ivs: error: {why}; exiting without them", style="bold red"), soft_wrap=True)
        logging.shutdown()
        sys.stderr.flush()
        os._exit(3)  # their threads never end: only the process's end stops them


def _load(path: Path) -> NodeConfig | None:
    from ivs.node_config import load_node

    try:
        cfg, problems, _ = load_node(path)
    except IvsError as err:
        err_console.print(Text(f"ivs: error: {err}", style="bold red"), soft_wrap=True)
        return None
    for problem in problems:
        err_console.print(Text(f"ivs: error: {problem.format(str(path))}", style="bold red"), soft_wrap=True)
    return cfg


def _print_health(site: Node) -> None:
    for h in site.health():
        age = "-" if h.last_frame_age_s is None else f"{h.last_frame_age_s:.1f} s"
        why = f" ({h.error})" if h.error else ""
        err_console.print(
            f"  {h.id}: {h.state}{why}, {h.frames} frames, {h.dropped} dropped, {h.late} late, {h.fps:.1f} fps, "
            f"last frame {age} ago, {h.restarts} restarts, {h.seconds:.2f} s",
            soft_wrap=True,
        )
