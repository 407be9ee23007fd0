"""JOB-9: PostgreSQL restarts (`pg_ctl restart -m fast`) while a real `manage.py qcluster` runs;
the cluster carries on by itself — same sentinel process, no manual restart — and every task,
queued before, during or after the restart, runs exactly once within 60 s of PostgreSQL
accepting connections again.

The shared PostgreSQL on 127.0.0.1:5432 is never touched: the test makes its own (initdb into a
temporary directory, a free port on 127.0.0.1), run as the `postgres` OS user when the test runs
as root (initdb refuses root). Skipped when the PostgreSQL binaries or that user are missing, so
the SQLite run of the suite passes on a machine without them.

The cluster runs with the production database settings (CONN_MAX_AGE=60, CONN_HEALTH_CHECKS):
its processes hold connections that the restart breaks.
"""

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from tests.integration.processes import free_port, lines, stop_qcluster, subprocess_env, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    # It brings its own PostgreSQL whatever the suite runs on: once, with the PostgreSQL run.
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="runs with the PostgreSQL suite (it starts its own server)"
    ),
]

TIMEOUT, RETRY = 10, 40  # short, and still retry >= timeout + 30 (JOB-4)
RECOVERY = 60  # RELIABILITY.md JOB-9: every task done within 60 s of PostgreSQL being back


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


class Postgres:
    """A throw-away PostgreSQL cluster of this test's own."""

    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses to run as root
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("running as root and there is no `postgres` OS user to run PostgreSQL as")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        # Not under pytest's tmp_path: its root-only parent would keep the postgres user out.
        self.dir = Path(tempfile.mkdtemp(prefix="doorstep-job9-"))
        self.dir.chmod(0o777)
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/doorstep"

    def run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run([*self.as_user, *args], check=True, timeout=timeout, capture_output=True)

    def ctl(self, *args: str) -> None:
        self.run(self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", *args)

    def start(self) -> None:
        self.run(self.initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                 "--no-sync", "--no-instructions")  # fmt: skip
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.dir} -c fsync=off"
        self.ctl("-o", options, "start")
        self.run(_bin("createdb") or "createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                 "doorstep")  # fmt: skip

    def restart(self) -> None:
        self.ctl("-m", "fast", "restart")  # -w: returns once it accepts connections again

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.ctl("-m", "immediate", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.close()


def _env(url: str) -> dict[str, str]:
    return subprocess_env(
        DATABASE_URL=url, Q_WORKERS="2", Q_TIMEOUT=str(TIMEOUT), Q_RETRY=str(RETRY),
        Q_LOG_LEVEL="WARNING", CONN_MAX_AGE="60",
    )  # fmt: skip


def manage(url: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=_env(url),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def enqueue(url: str, log: Path, names: list[str], seconds: float = 0.0) -> None:
    """Queue tests.integration.jobs.record for each name from another process, as the app does."""
    code = (
        "from django_q.tasks import async_task\n"
        f"for name in {names!r}:\n"
        f"    async_task('tests.integration.jobs.record', {str(log)!r}, name, {seconds})\n"
    )
    done = manage(url, "shell", "-c", code)
    assert done.returncode == 0, done.stderr


def test_the_cluster_rides_out_a_postgres_restart_and_loses_no_task(postgres, tmp_path):
    started = time.monotonic()
    migrated = manage(postgres.url, "migrate", "--noinput")
    assert migrated.returncode == 0, migrated.stderr
    print(f"\nJOB-9: migrated in {time.monotonic() - started:.0f} s")
    log, cluster_log = tmp_path / "runs.log", tmp_path / "qcluster.log"
    slow = ["slow-0", "slow-1"]
    before, after = [f"before-{n}" for n in range(6)], [f"after-{n}" for n in range(6)]
    with cluster_log.open("w") as out:
        cluster = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"], cwd=settings.BASE_DIR, env=_env(postgres.url),
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        # Both workers busy for 5 s across the restart; six more queued behind them.
        enqueue(postgres.url, log, slow, seconds=5)
        assert wait_for(lambda: all(lines(log)[f"start {n}"] for n in slow), 30), lines(log)
        enqueue(postgres.url, log, before)
        postgres.restart()
        back = time.monotonic()
        enqueue(postgres.url, log, after)
        names = slow + before + after
        finished = wait_for(lambda: all(lines(log)[f"done {n}"] for n in names), RECOVERY)
        took = time.monotonic() - back
        time.sleep(2)  # a task run twice would show by now (the rest finish in milliseconds)
        alive = cluster.poll() is None
    finally:
        stop_qcluster(cluster, timeout=30)
    runs = lines(log)
    output = cluster_log.read_text()[-3000:]
    assert finished, f"not every task done within {RECOVERY} s of PostgreSQL being back: {runs}\n{output}"
    print(f"JOB-9: every task done {took:.1f} s after PostgreSQL accepted connections again")
    assert alive, f"the cluster exited:\n{output}"
    assert {n: runs[f"done {n}"] for n in names} == dict.fromkeys(names, 1), runs  # each once
    count = "from django_q.models import OrmQ; print(OrmQ.objects.count())"
    left = manage(postgres.url, "shell", "-c", count)
    assert left.stdout.split()[-1:] == ["0"], (left.stdout, left.stderr)  # nothing stuck in the broker
