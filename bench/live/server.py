"""The system under test: a fresh database, the app under gunicorn, and their removal.

    with Stack("postgresql", workdir) as stack:
        stack.port, stack.prepared, stack.count()

Entering creates the database (PostgreSQL `doorstep_bench`, dropped first if a crashed run left
it, or an SQLite file in `workdir`), builds it with bench.live.prepare in a subprocess and
starts gunicorn on a free port. Leaving, also on Ctrl-C or an error, stops gunicorn and drops
the database.
"""

import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PG_SERVER = "postgres://postgres@127.0.0.1:5432"
PG_DATABASE = "doorstep_bench"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(self, backend: str, workdir: Path, *, workers: int = 3, ingest_drivers: int = 1000):
        self.backend, self.workdir, self.workers = backend, workdir, workers
        self.ingest_drivers = ingest_drivers
        self.sqlite_path = workdir / "bench.sqlite3"
        self.url = (
            f"{PG_SERVER}/{PG_DATABASE}" if backend == "postgresql" else f"sqlite:///{self.sqlite_path}"
        )
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.prepared: dict = {}
        self.tokens: list[str] = []
        self.tokens_file = workdir / f"tokens-{backend}.txt"
        self.log = workdir / f"gunicorn-{backend}.log"
        # Production-like: DEBUG off and every setting from the environment (config/settings.py).
        # A .env in the checkout could point elsewhere; these win over it.
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bench.live.settings",
            "DATABASE_URL": self.url,
            "SECRET_KEY": secrets.token_urlsafe(50),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1",
            "SECURE_SSL_REDIRECT": "false",
            "LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }

    def __enter__(self) -> "Stack":
        try:
            self._create_database()
            self._prepare()
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._stop()
        if self.backend == "postgresql":
            self._drop_database()
        else:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.sqlite_path}{suffix}").unlink(missing_ok=True)

    # --- database ---------------------------------------------------------------------------

    def _create_database(self) -> None:
        if self.backend == "postgresql":
            self._drop_database()
            with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')

    def _drop_database(self) -> None:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            # FORCE: a worker killed mid-request may leave its connection behind for a moment.
            conn.execute(f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')

    def _prepare(self) -> None:
        out = self.workdir / f"prepared-{self.backend}.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.live.prepare",
                "--out",
                str(out),
                "--tokens",
                str(self.tokens_file),
                "--ingest-drivers",
                str(self.ingest_drivers),
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        self.prepared = json.loads(out.read_text())
        self.tokens = self.tokens_file.read_text().split()

    def count(self) -> tuple[int, int]:
        """(stored fixes, flagged fixes) in the database, read directly, not through the app."""
        sql = (
            "SELECT count(*), coalesce(sum(CASE WHEN flags <> '' THEN 1 ELSE 0 END), 0) "
            "FROM tracking_locationping"
        )
        if self.backend == "postgresql":
            with psycopg.connect(self.url) as conn:
                return tuple(conn.execute(sql).fetchone())
        with sqlite3.connect(self.sqlite_path) as conn:
            return tuple(conn.execute(sql).fetchone())

    # --- gunicorn ---------------------------------------------------------------------------

    def _start(self) -> None:
        self.port = free_port()
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(self.workers),
                    "--worker-class",
                    "sync",
                    "--timeout",
                    "30",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: stopped by us (below), not by the terminal's Ctrl-C
                # halfway through our own clean-up.
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{self.port}/bench/bare/", timeout=2
                ) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer within 30 s")

    def _stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def server_errors(self) -> str:
        """The tail of gunicorn's log when a request failed with a traceback, else ''."""
        text = self.log.read_text() if self.log.exists() else ""
        return text[-2000:] if "Traceback" in text else ""
