"""An open-loop load at a fixed rate of fixes (ING-1's mix), for latency under a steady load.

wrk sends as fast as the server answers; this schedules every request in advance instead, so a
slow answer cannot slow the load down, and each latency is measured from the request's planned
start (a request waiting for a free sender thread counts that wait). It also keeps every
acknowledged uuid, for the stored-vs-acked check. Python is enough: 200 fixes/s in ING-1's mix
is about 9 requests/s.
"""

import http.client
import json
import math
import queue
import random
import threading
import time
from dataclasses import dataclass, field

from bench.live.fixes import fix

PATH = "/api/v1/driver/locations/"


@dataclass
class Result:
    requests: int = 0
    fixes_sent: int = 0
    non_2xx: int = 0
    failures: int = 0  # no HTTP answer at all (refused, reset, timeout)
    flagged: int = 0
    acked: set = field(default_factory=set)
    latencies_ms: list = field(default_factory=list)
    statuses: dict = field(default_factory=dict)
    elapsed_s: float = 0.0


def run(
    port: int,
    tokens: list[str],
    *,
    fixes_per_s: float = 200,
    duration_s: float = 60,
    single_share: float = 0.6,
    batch_sizes: tuple[int, int] = (10, 100),
    senders: int = 32,
    seed: int = 0,
    start_after: float = 0.0,
) -> Result:
    """ING-1: `single_share` of the requests carry one fix, the rest 10-100, `fixes_per_s` on average.

    Every driver's first fix is later than `start_after` (epoch seconds): its fixes from an
    earlier phase stay older.
    """
    rng = random.Random(seed)
    begin = time.monotonic() + 0.5
    wall_begin = time.time() + 0.5
    # The whole schedule up front: (planned start, driver, fixes). Each request is spaced by the
    # time its fixes take at the target rate, so the rate holds whatever the mix draws.
    jobs: queue.Queue = queue.Queue()
    offset, k = 0.0, 0
    while offset < duration_s:
        n = 1 if rng.random() < single_share else rng.randint(*batch_sizes)
        jobs.put((begin + offset, k % len(tokens), n))
        offset += n / fixes_per_s
        k += 1
    for _ in range(senders):
        jobs.put(None)

    # A phone sends what it recorded since its last upload: its fixes spread evenly from then to
    # now. The first upload starts a minute back (or after the previous phase's fixes).
    last_fix = [max(wall_begin - 60.0, start_after)] * len(tokens)
    driver_locks = [threading.Lock() for _ in tokens]
    result, lock = Result(), threading.Lock()

    def sender() -> None:
        while (job := jobs.get()) is not None:
            planned, driver, n = job
            time.sleep(max(0.0, planned - time.monotonic()))
            with driver_locks[driver]:
                now = time.time()
                since = last_fix[driver]
                last_fix[driver] = now
                fixes = [fix(driver, since + (now - since) * (j + 1) / n, j) for j in range(n)]
            body = json.dumps({"source": "browser", "fixes": fixes})
            status, answer = None, None
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request(
                    "POST",
                    PATH,
                    body,
                    {"Authorization": f"Token {tokens[driver]}", "Content-Type": "application/json"},
                )
                response = conn.getresponse()
                status, payload = response.status, response.read()
                conn.close()
                if status == 200:
                    answer = json.loads(payload)
            except (OSError, http.client.HTTPException):
                pass
            latency_ms = (time.monotonic() - planned) * 1000
            with lock:
                result.requests += 1
                result.fixes_sent += n
                result.latencies_ms.append(latency_ms)
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status is None:
                    result.failures += 1
                elif not 200 <= status < 300:
                    result.non_2xx += 1
                if answer is not None:
                    refused = {entry["uuid"] for entry in answer["rejected"]}
                    result.acked.update(f["uuid"] for f in fixes if f["uuid"] not in refused)
                    result.flagged += answer["flagged"]

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed_s = time.monotonic() - begin
    return result


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (what wrk and locust report)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
