"""Whole django-q2 clusters as they run in production (RELIABILITY.md JOB-3, JOB-8): real
`manage.py qcluster` processes on the test database, killed or doubled.

- JOB-3: SIGKILL to the whole cluster (sentinel, pusher, monitor, workers) with tasks running
  and tasks queued; after a restart every task finishes once, within Q_RETRY + 60 s.
- JOB-8: two clusters at once, 20 due schedule slots: each slot runs exactly once (the
  scheduler claims them with SELECT ... FOR UPDATE, which only PostgreSQL honours; the
  embedded SQLite set-up runs one cluster).
"""

import os
import signal
import subprocess
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from django_q.models import OrmQ, Schedule
from django_q.tasks import async_task

from tests.integration.processes import lines, start_qcluster, stop_qcluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Short enough for a test, and still the rule the settings enforce: retry >= timeout + 30.
TIMEOUT, RETRY = 10, 40


def start_cluster(workers: int = 2) -> subprocess.Popen:
    return start_qcluster(Q_WORKERS=str(workers), Q_TIMEOUT=str(TIMEOUT), Q_RETRY=str(RETRY))


def stop(cluster: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if sig == signal.SIGTERM:
        stop_qcluster(cluster)
        return
    if cluster.poll() is None:
        os.killpg(cluster.pid, sig)  # the whole cluster at once: sentinel, workers, monitor
        cluster.wait(5)


def test_a_cluster_killed_whole_loses_no_task_and_runs_none_twice(tmp_path):
    log = tmp_path / "runs.log"
    names = [f"slow-{n}" for n in range(2)] + [f"queued-{n}" for n in range(6)]
    cluster = start_cluster(workers=2)
    try:
        # Two long tasks occupy both workers; six more wait, some already taken from the
        # broker into the cluster's memory (and locked), some still in the table.
        for name in names[:2]:  # busy for 8 s: still running when the cluster is killed
            async_task("tests.integration.jobs.record", str(log), name, 8)
        assert wait_for(lambda: all(lines(log)[f"start {n}"] for n in names[:2]), 30), lines(log)
        for name in names[2:]:
            async_task("tests.integration.jobs.record", str(log), name)
        time.sleep(1)
        killed_at = time.monotonic()
        stop(cluster, signal.SIGKILL)
    finally:
        stop(cluster, signal.SIGKILL)
    assert not any(lines(log)[f"done {n}"] for n in names[:2])  # caught mid-task

    cluster = start_cluster(workers=2)
    try:
        finished = wait_for(lambda: all(lines(log)[f"done {n}"] for n in names), RETRY + 60)
        took = time.monotonic() - killed_at
        # Each task's row leaves the broker when its result is saved, just after "done".
        drained = wait_for(lambda: not OrmQ.objects.exists(), 15)
    finally:
        stop(cluster)
    runs = lines(log)
    assert finished, f"not all finished within Q_RETRY + 60 s: {runs}"
    assert took <= RETRY + 60
    assert {n: runs[f"done {n}"] for n in names} == dict.fromkeys(names, 1)  # once each
    assert drained, list(OrmQ.objects.values("key", "lock"))  # nothing left behind in the broker


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="two clusters share a schedule only on PostgreSQL"
)
def test_two_clusters_run_each_schedule_slot_exactly_once(tmp_path):
    log = tmp_path / "slots.log"
    due = timezone.now() - timedelta(seconds=5)
    slots = [f"slot-{n}" for n in range(20)]
    for name in slots:
        Schedule.objects.create(
            name=name, func="tests.integration.jobs.record", args=repr((str(log), name)),
            schedule_type=Schedule.ONCE, repeats=1, next_run=due,
        )  # fmt: skip
    clusters = [start_cluster(workers=2), start_cluster(workers=2)]
    started = time.monotonic()
    try:
        # Each sentinel runs the scheduler 30 s after it starts, then every 30 s; both start
        # together, so their first rounds race for the same 20 due slots.
        assert wait_for(lambda: all(lines(log)[f"done {s}"] for s in slots), 90), lines(log)
        # By 45 s both have had their round; a slot once run is spent (repeats 0), so no
        # later round can run it again.
        time.sleep(max(0.0, 45 - (time.monotonic() - started)))
        assert set(Schedule.objects.values_list("repeats", flat=True)) == {0}
    finally:
        for cluster in clusters:
            stop(cluster)
    runs = lines(log)
    assert {s: runs[f"done {s}"] for s in slots} == dict.fromkeys(slots, 1)
    assert sum(runs.values()) == 2 * len(slots)  # no other run, not even a start
