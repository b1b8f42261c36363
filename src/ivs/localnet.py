"""Servers on this machine's loopback for tests, benchmarks and demos: a free port, a
throw-away Mosquitto broker, a throw-away PostgreSQL server, and an ASGI app under uvicorn in
a thread."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_HANDED_OUT: set[int] = set()
"""Ports `free_port` gave this process: the kernel may hand the same free port to two calls in a
row (nothing is bound to it in between), and a broker given it for two listeners fails to start."""
_HANDED_OUT_LOCK = threading.Lock()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now, and not one this process was given before."""
    with _HANDED_OUT_LOCK:
        for _ in range(100):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no TCP port free on 127.0.0.1 that this process was not given before")


def mosquitto_path() -> str | None:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    return exe if Path(exe).exists() else None


class LocalMosquitto:
    """A Mosquitto on a free 127.0.0.1 port that can be stopped and started again (same port;
    with `persistence`, queued QoS 1 messages and durable sessions survive the restart)."""

    def __init__(self, workdir: Path, extra_config: str = "", *, persistence: bool = True) -> None:
        exe = mosquitto_path()
        if exe is None:
            raise RuntimeError("mosquitto not found: `make test` installs it (scripts/install-system-deps.sh)")
        self.exe, self.port, self.workdir = exe, free_port(), workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / "mosquitto.conf"
        keep = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistence
            else "persistence false\n"
        )
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{keep}max_queued_messages 100000\n"
            f"log_dest file {workdir}/mosquitto.log\n"
            # Started as root, mosquitto switches to the user "mosquitto", who cannot read a
            # private temporary folder: stay as the user who started it.
            + (f"user {pwd.getpwuid(os.geteuid()).pw_name}\n" if os.geteuid() == 0 else "")
            + extra_config
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    why = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"mosquitto exited: {why}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            if self.proc.stderr is not None:
                self.proc.stderr.close()
        self.proc = None


class ServerThread:
    """An ASGI app (the hub) under uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, app: Any, **config: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", **config)
        )
        self.thread = threading.Thread(target=self.server.run, name="ivs-uvicorn", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                self.stop()
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop serving; True when the thread ended within `timeout`."""
        self.server.should_exit = True
        self.thread.join(timeout)
        return not self.thread.is_alive()


def postgres_bin() -> Path | None:
    """The folder holding PostgreSQL's server programs (initdb, postgres), or None. Debian keeps
    them off PATH in /usr/lib/postgresql/<version>/bin: the newest version there wins."""
    found: list[tuple[int, Path]] = []
    for exe in Path("/usr/lib/postgresql").glob("*/bin/postgres"):
        version = exe.parent.parent.name
        if re.fullmatch(r"\d+", version):
            found.append((int(version), exe.parent))
    if found:
        return max(found)[1]
    on_path = shutil.which("postgres")
    if on_path is not None and shutil.which("initdb", path=str(Path(on_path).parent)) is not None:
        return Path(on_path).parent
    return None


class LocalPostgres:
    """A throw-away PostgreSQL server on a free 127.0.0.1 port, its data and unix socket in a
    fresh temporary folder that `stop` removes.

    The settings trade durability for speed (fsync, synchronous_commit and full_page_writes off):
    right for a test fixture or a benchmark, whose data nobody needs after a crash, and never
    for a hub's real database. PostgreSQL refuses to run as root, so under root (CI) initdb and
    postgres run as the `postgres` system user (Debian's package creates it) and own the folder.

        with LocalPostgres() as pg:
            store = Store(pg.url)            # postgresql://postgres@127.0.0.1:PORT/ivs
            other = pg.create_database("t2")  # another empty database on the same server
    """

    def __init__(self, database: str = "ivs", *, settings: dict[str, str] | None = None) -> None:
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError(
                "PostgreSQL's server programs (initdb, postgres) not found in /usr/lib/postgresql/*/bin or on PATH:"
                " `make system` installs them (scripts/install-system-deps.sh)"
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", database):
            raise ValueError(f"database name {database!r}: expected lower-case letters, digits and '_'")
        self.bindir, self.database, self.port = bindir, database, free_port()
        self.settings = {
            "listen_addresses": "127.0.0.1",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            **(settings or {}),
        }
        self.user = "postgres"
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The SQLAlchemy URL of the database made at start (the `Store` reads it with psycopg 3)."""
        return self.url_of(self.database)

    def url_of(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self) -> list[str]:
        """The command prefix that runs a program as the data folder's owner."""
        if os.geteuid() != 0:
            return []
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError(
                "running as root, and PostgreSQL refuses root: expected a `postgres` system user to run it as"
                " (Debian's postgresql package creates it)"
            ) from None
        # setpriv execs the program itself (no process in between), so signals reach postgres.
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    def start(self, timeout: float = 30.0) -> None:
        """initdb into a fresh folder, start the server, wait for it, create the database."""
        self.dir = Path(tempfile.mkdtemp(prefix="ivs-postgres-"))
        data, log = self.dir / "data", self.dir / "postgres.log"
        as_owner = self._as_owner()
        if as_owner:  # root: the folder belongs to the user the server runs as
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        try:
            init = subprocess.run(
                [
                    *as_owner,
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    self.user,
                    "--auth=trust",  # loopback and a private socket folder only
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ],
                capture_output=True,
                timeout=120,
            )
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed ({init.returncode}): {init.stderr.decode(errors='replace')[-2000:]}")
            options = [f"-c{k}={v}" for k, v in self.settings.items()]
            with open(log, "wb") as log_file:
                self.proc = subprocess.Popen(
                    [
                        *as_owner,
                        str(self.bindir / "postgres"),
                        "-D",
                        str(data),
                        "-p",
                        str(self.port),
                        f"-cunix_socket_directories={self.dir}",
                        *options,
                    ],
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                )
            self._wait_ready(timeout, log)
            self.create_database(self.database)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float, log: Path) -> None:
        import psycopg

        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self._dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError as err:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"postgres exited ({self.proc.returncode}): {log.read_text(errors='replace')[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not accept connections on {self.port}: {err}") from None
                time.sleep(0.1)

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname={database}"

    def create_database(self, name: str) -> str:
        """Create an empty database on this server -> its SQLAlchemy URL."""
        import psycopg
        from psycopg import sql

        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError(f"database name {name!r}: expected lower-case letters, digits and '_'")
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_of(name)

    def stop(self) -> None:
        """Stop the server and remove its folder. Immediate shutdown: open sessions are cut and
        no shutdown checkpoint is written, since the data is deleted next anyway."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGQUIT)
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=5)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
