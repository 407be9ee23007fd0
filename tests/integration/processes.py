"""What the process-level tests share: the test database's URL for a subprocess, the
environment a `manage.py` subprocess runs with, and small waiting and counting helpers."""

import os
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
