"""What the process-level tests share: the test database's URL for a subprocess, the
environment a `manage.py` subprocess runs with, and small waiting and counting helpers."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from django.conf import settings
from django.db import connection


def database_url() -> str:
    """The running test database, as a DATABASE_URL a subprocess can open."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def subprocess_env(**overrides: str) -> dict[str, str]:
    """This process's environment for a child process of the app, with `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "TEST_DB_NAME")}
    env.update({"LOG_LEVEL": "WARNING", **overrides})
    return env


def start_qcluster(*, log: Path | None = None, **env: str) -> subprocess.Popen:
    """`manage.py qcluster` on DATABASE_URL (the test database unless given), in a process group
    of its own so that one signal reaches the sentinel and every worker."""
    env.setdefault("DATABASE_URL", database_url())
    out = log.open("w") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=settings.BASE_DIR,
            env=subprocess_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if log:
            out.close()


def stop_qcluster(cluster: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a qcluster started by start_qcluster the way a service manager would: SIGTERM to
    its main process, which stops the sentinel and its workers. (A SIGTERM to the whole group
    also hits the workers and leaves the sentinel waiting for them until the SIGKILL below.)"""
    if cluster.poll() is not None:
        return
    os.kill(cluster.pid, signal.SIGTERM)
    try:
        cluster.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(cluster.pid, signal.SIGKILL)
        cluster.wait(5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lines(path: Path) -> Counter:
    """How often each line of a log written by tests.integration.jobs appears."""
    return Counter(path.read_text().splitlines()) if path.exists() else Counter()


def wait_for(condition, timeout: float = 30.0, interval: float = 0.25):
    """The condition's first truthy value within `timeout` seconds, else its last (falsy) one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(interval)
    return condition()


def descendants(pid: int) -> list[int]:
    """The live processes below `pid` (its children, theirs, …), from /proc: for a qcluster, the
    sentinel, pusher, monitor and workers. Zombies are left out."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            # After the last ")" (the name may hold spaces or brackets): state, parent pid, …
            state, parent = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue  # gone meanwhile
        if state != "Z":
            children.setdefault(int(parent), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tcp_socket_owner(pids: list[int], *, local_port: int, remote_port: int) -> int | None:
    """Which of `pids` holds the TCP connection 127.0.0.1:local_port → 127.0.0.1:remote_port
    (matched through the socket's inode in /proc/net/tcp), or None once it is closed."""
    want = (f"0100007F:{local_port:04X}", f"0100007F:{remote_port:04X}")
    inode = next(
        (line.split()[9] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
         if tuple(line.split()[1:3]) == want),
        None,
    )  # fmt: skip
    if inode is None or inode == "0":
        return None
    for pid in pids:
        try:
            if any(
                os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]"
                for fd in os.listdir(f"/proc/{pid}/fd")
            ):
                return pid
        except OSError:
            continue  # exited, or closed that descriptor meanwhile
    return None
