"""A fresh database per backend for the ETA benchmarks, and a way to run a step inside it.

The app's settings read DATABASE_URL once at import, so each backend runs in a subprocess of
its own (`python -m bench.eta.<name> --child ...`) with DATABASE_URL pointing at a temporary
SQLite file or at the PostgreSQL database `doorstep_bench_eta`, created and dropped here.
"""

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_NAME = "doorstep_bench_eta"


def _pg_admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(sql)


@contextlib.contextmanager
def database(backend: str) -> Iterator[tuple[str, Path]]:
    """(DATABASE_URL, a scratch folder) for a new, empty database; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-eta-") as scratch:
        scratch = Path(scratch)
        if backend == "sqlite":
            yield f"sqlite:///{scratch / 'bench.sqlite3'}", scratch
            return
        if backend != "postgresql":
            raise SystemExit(f"Unknown backend {backend!r}: use sqlite or postgresql.")
        _pg_admin(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")  # a crashed run's leftover
        _pg_admin(f"CREATE DATABASE {PG_NAME}")
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{PG_NAME}", scratch
        finally:
            _pg_admin(f"DROP DATABASE IF EXISTS {PG_NAME} WITH (FORCE)")


def run_child(module: str, backend: str, args: list[str]) -> int:
    """Run `python -m module --child args…` against a fresh database of `backend`."""
    with database(backend) as (url, scratch):
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "MEDIA_ROOT": str(scratch / "media"),
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "false",
            "REDIS_URL": "",
        }
        return subprocess.call([sys.executable, "-m", module, "--child", *args], cwd=ROOT, env=env)


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
