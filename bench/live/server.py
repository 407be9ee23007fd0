"""The system under test: a fresh database, the app under gunicorn, and their removal.

    with Stack("postgresql", workdir) as stack:
        stack.port, stack.prepared, stack.count()

Entering creates the database (PostgreSQL `doorstep_bench`, dropped first if a crashed run left
it, or an SQLite file in `workdir`), builds it with bench.live.prepare in a subprocess and
starts gunicorn on a free port (unless serve=False). Leaving, also on Ctrl-C or an error, stops
gunicorn and drops the database.
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
REDIS_URL = "redis://127.0.0.1:6379/0"
TRACKING_RATE_LIFTED = 1_000_000_000
TRACKING_RATE_DEFAULT = 60  # config/settings.py's default


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    def __init__(
        self,
        backend: str,
        workdir: Path,
        *,
        workers: int = 3,
        ingest_drivers: int = 1000,
        tracking_links: int = 0,
        ingest_stops: int = 0,
        redis: bool = False,
        settle: bool = True,
        serve: bool = True,
    ):
        self.backend, self.workdir, self.workers = backend, workdir, workers
        self.ingest_drivers, self.tracking_links = ingest_drivers, tracking_links
        self.ingest_stops = ingest_stops
        self.redis, self.settle, self.serve = redis, settle, serve
        self.sqlite_path = workdir / "bench.sqlite3"
        self.url = (
            f"{PG_SERVER}/{PG_DATABASE}" if backend == "postgresql" else f"sqlite:///{self.sqlite_path}"
        )
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.prepared: dict = {}
        self.tokens: list[str] = []
        self.tokens_file = workdir / f"tokens-{backend}.txt"
        # Customer tracking tokens, one a line (lua/track.lua rotates over them).
        self.tracking_tokens: list[str] = []
        self.tracking_file = workdir / f"tracking-{backend}.txt"
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
            # The customer tracking page allows TRACKING_RATE_PER_MINUTE requests per client
            # address (default 60); every load here comes from 127.0.0.1, so the limit is lifted.
            # bench.live.run checks the limiter itself on a second server at the default rate.
            "TRACKING_RATE_PER_MINUTE": str(TRACKING_RATE_LIFTED),
        }
        self.env.pop("REDIS_URL", None)
        if redis:
            # The documented scale-out set-up: cache (rate-limit counters, fragments) and
            # sessions in Redis. A key prefix of its own: nothing else's keys are touched.
            self.env["REDIS_URL"] = REDIS_URL
            self.env["CACHE_KEY_PREFIX"] = f"doorstep-bench-{secrets.token_hex(4)}"

    def __enter__(self) -> "Stack":
        try:
            self._create_database()
            self._prepare()
            if self.settle:
                self._settle()
            if self.serve:  # False: the database only (bench.live.inprocess calls the app itself)
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
                "--tracking-links",
                str(self.tracking_links),
                "--ingest-stops",
                str(self.ingest_stops),
            ],
            cwd=ROOT,
            env=self.env,
            check=True,
        )
        self.prepared = json.loads(out.read_text())
        self.tokens = self.tokens_file.read_text().split()
        if self.prepared.get("tracking"):
            self.tracking_tokens = self.prepared["tracking"].pop("tokens")
            self.tracking_file.write_text("".join(f"{t}\n" for t in self.tracking_tokens))

    def _settle(self) -> None:
        """VACUUM ANALYZE what prepare just bulk-loaded, as autovacuum would long since have done
        on a database in service: otherwise the first phase also measures autovacuum at work and
        the first reads of every new row writing its pages' hint bits."""
        if self.backend == "postgresql":
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("VACUUM ANALYZE")
        else:
            with sqlite3.connect(self.sqlite_path) as conn:
                conn.execute("ANALYZE")

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
        self.process, self.port = self.spawn(self.env, self.workers, self.log)

    def spawn(self, env: dict, workers: int, log_path: Path) -> tuple[subprocess.Popen, int]:
        """Start a gunicorn on this database and a free port; wait until it answers."""
        port = free_port()
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "config.wsgi:application",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--workers",
                    str(workers),
                    "--worker-class",
                    "sync",
                    "--timeout",
                    "30",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: stopped by us (below), not by the terminal's Ctrl-C
                # halfway through our own clean-up.
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise RuntimeError(f"gunicorn exited:\n{log_path.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(
                        f"http://127.0.0.1:{port}/bench/bare/", timeout=2
                    ) as response:
                        if response.status == 200:
                            return process, port
                except OSError:
                    time.sleep(0.2)
            raise RuntimeError("gunicorn did not answer within 30 s")
        except BaseException:
            self.stop(process)
            raise

    def _stop(self) -> None:
        self.stop(self.process)

    @staticmethod
    def stop(process: subprocess.Popen | None) -> None:
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def server_errors(self) -> str:
        """The tail of gunicorn's log when a request failed with a traceback, else ''."""
        text = self.log.read_text() if self.log.exists() else ""
        return text[-2000:] if "Traceback" in text else ""
