"""JOB-7: the ETA recompute under ING-1's load, with a real `manage.py qcluster` beside gunicorn.

    python -m bench.live.run --only job7 --backends postgresql [--redis] [--duration 60]

Every accepted batch calls tracking.eta.eta_refresh_soon(driver_id): a cache.add debounce per
driver (DEBOUNCE_SECONDS, 30 s) in each process, behind it a conditional UPDATE of the driver's
DriverPosition.eta_queued_at shared by all of them, then on commit
async_task("tracking.tasks.recompute_driver_etas", driver_id) on the ORM broker (a django_q_ormq
row). This starts the cluster (Q_WORKERS=2, the
gunicorn's environment, a process group of its own), runs ING-1's mix with bench.live.sustained,
and reads PostgreSQL directly, once a second, while the load runs and until the queue drained:

- the queue's depth, `SELECT count(*) FROM django_q_ormq`;
- the finished recomputes, django_q_task rows of that func. Their `started` is the ENQUEUE time
  (django_q.tasks.async_task sets task["started"] = timezone.now() before pushing it) and
  `stopped` the time the worker finished (django_q.worker); the start of the run itself is
  stored nowhere. Q_CLUSTER's save_limit (500, no setting overrides it) deletes the oldest
  successes beyond 500, so every row is collected as it appears, and the count is checked
  against the enqueues (the django_q_ormq id sequence).

Per route (one route per ingest driver) it takes the most recomputes enqueued within any 30 s,
and the enqueue-to-finish time of each recompute (stopped - started: the wait in the queue plus
the run itself, so an upper bound of the enqueue-to-start lag). The recompute writes the route's
ETAs before it returns, so this is also "batch accepted -> route's ETAs written".
"""

import base64
import contextlib
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from bench.live import sustained
from bench.live.server import ROOT, Stack

FUNC = "tracking.tasks.recompute_driver_etas"
Q_WORKERS = 2
WINDOW_S = 30.0  # tracking.eta.DEBOUNCE_SECONDS, and JOB-7's "per route per 30 s"
STOPS_PER_ROUTE = 10  # open stops per ingest route (bench.live.prepare --ingest-stops)


@dataclass
class Samples:
    depth: list = field(default_factory=list)  # (monotonic s, rows in django_q_ormq)
    tasks: dict = field(default_factory=dict)  # id -> (driver_id, started, stopped, success)
    errors: list = field(default_factory=list)


def _args(value: str) -> tuple:
    """django_q_task.args: a picklefield (base64 of a pickle), written by our own cluster."""
    return pickle.loads(base64.b64decode(value))  # noqa: S301 - our own database's rows


class Sampler(threading.Thread):
    def __init__(self, url: str, since: datetime):
        super().__init__(daemon=True)
        self.url, self.since = url, since
        self.samples = Samples()
        self.halt = threading.Event()

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.halt.is_set():
                began = time.monotonic()
                try:
                    self.sample(conn)
                except psycopg.Error as error:
                    self.samples.errors.append(repr(error))
                self.halt.wait(max(0.0, 1.0 - (time.monotonic() - began)))
            self.sample(conn)

    def sample(self, conn) -> None:
        (depth,) = conn.execute("SELECT count(*) FROM django_q_ormq").fetchone()
        self.samples.depth.append((time.monotonic(), depth))
        stopped = [t[2] for t in self.samples.tasks.values()]
        # Rows are saved in about the order they finish: look a little back from the newest.
        after = max(stopped) - timedelta(seconds=10) if stopped else self.since
        rows = conn.execute(
            "SELECT id, args, started, stopped, success FROM django_q_task "
            "WHERE func = %s AND stopped >= %s AND started >= %s",
            (FUNC, after, self.since),
        ).fetchall()
        for task_id, args, started, stopped_at, success in rows:
            if task_id not in self.samples.tasks:
                self.samples.tasks[task_id] = (_args(args)[0], started, stopped_at, success)


def enqueued(conn) -> int:
    """Rows ever inserted into django_q_ormq: its id sequence."""
    (seq,) = conn.execute("SELECT pg_get_serial_sequence('django_q_ormq', 'id')").fetchone()
    last, called = conn.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
    return last if called else 0


def _session(pid: int) -> list[int]:
    """The processes of the session `pid` leads (the cluster: its sentinel, pusher, monitor,
    workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[3]) == pid:  # field 6: session id
                found.append(int(entry.name))
    return found


def start_qcluster(stack: Stack, log_path: Path) -> subprocess.Popen:
    """`manage.py qcluster` with the gunicorn's environment; returns once its workers run."""
    env = {**stack.env, "Q_WORKERS": str(Q_WORKERS)}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "qcluster"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # qcluster, its sentinel, the pusher, the monitor and the workers.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"qcluster exited:\n{log_path.read_text()[-3000:]}")
        if len(_session(process.pid)) >= Q_WORKERS + 4:
            time.sleep(1)  # the workers import the app
            return process
        time.sleep(0.2)
    stop_qcluster(process)
    raise RuntimeError("qcluster did not start its workers within 60 s")


def stop_qcluster(process: subprocess.Popen) -> dict:
    """SIGTERM to qcluster alone (it stops its own children, as on a deploy), then anything of
    its group left after 30 s is killed. Returns how it went."""
    began = time.monotonic()
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
    left = _session(process.pid)
    if left:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return {"returncode": process.returncode, "seconds": time.monotonic() - began, "left": len(left)}


def per_route_windows(tasks: list[tuple[int, datetime]]) -> dict[int, int]:
    """driver -> the most recomputes enqueued within any WINDOW_S seconds (strictly less apart)."""
    times: dict[int, list[float]] = {}
    for driver, started in tasks:
        times.setdefault(driver, []).append(started.timestamp())
    most = {}
    for driver, values in times.items():
        values.sort()
        best, i = 0, 0
        for j, t in enumerate(values):
            while t - values[i] >= WINDOW_S:
                i += 1
            best = max(best, j - i + 1)
        most[driver] = best
    return most


def run(stack: Stack, *, fixes_per_s: float, duration_s: float, start_after: float) -> dict:
    log_path = stack.workdir / f"qcluster-{stack.backend}.log"
    with psycopg.connect(stack.url, autocommit=True) as conn:
        enqueued_before = enqueued(conn)
    since = datetime.now(UTC)
    process = start_qcluster(stack, log_path)
    stopped: dict = {}
    try:
        sampler = Sampler(stack.url, since)
        sampler.start()
        ingest = sustained.run(
            stack.port,
            stack.tokens,
            fixes_per_s=fixes_per_s,
            duration_s=duration_s,
            start_after=start_after,
        )
        load_end = time.monotonic()
        # Drain: until the queue is empty and every enqueued recompute has its row (60 s at most).
        with psycopg.connect(stack.url, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                total = enqueued(conn) - enqueued_before
                depth = sampler.samples.depth[-1][1] if sampler.samples.depth else 1
                if depth == 0 and len(sampler.samples.tasks) >= total:
                    break
                time.sleep(1)
            drain_s = time.monotonic() - load_end
            total = enqueued(conn) - enqueued_before
            sampler.halt.set()
            sampler.join()
            (written,) = conn.execute(
                "SELECT count(DISTINCT route_id) FROM dispatch_stop WHERE eta_updated_at >= %s", (since,)
            ).fetchone()
            notifications = conn.execute(
                "SELECT count(*), count(*) - count(DISTINCT (stop_id, event)) FROM tracking_notification "
                "WHERE event IN ('arriving_soon', 'delayed')"
            ).fetchone()
            (other,) = conn.execute(
                "SELECT count(*) FROM django_q_task WHERE func <> %s AND started >= %s", (FUNC, since)
            ).fetchone()
    finally:
        stopped = stop_qcluster(process)
    log = log_path.read_text()
    samples = sampler.samples
    load_depths = [d for t, d in samples.depth if t <= load_end]
    tasks = list(samples.tasks.values())
    return {
        "ingest": ingest,
        "enqueued": total,
        "tasks": tasks,
        "failed": sum(1 for t in tasks if not t[3]),
        "windows": per_route_windows([(t[0], t[1]) for t in tasks]),
        "lags_s": [(t[2] - t[1]).total_seconds() for t in tasks],
        "depth_load": load_depths,
        "depth_all": [d for _, d in samples.depth],
        "drain_s": drain_s,
        "routes_written": written,
        "notifications": {"count": notifications[0], "repeated": notifications[1]},
        "other_tasks": other,
        "sampler_errors": samples.errors,
        "qcluster_stop": stopped,
        "qcluster_log_errors": log[-2000:] if ("Traceback" in log or "ERROR" in log) else "",
    }
