"""Customers following their tracking links (TRK-1): an open-loop load of htmx polls.

`customers` browsers each poll their own link's partial (GET /t/<token>/ with HX-Request: true)
every `period_s`, the first polls spread evenly over the first period. Like a browser, each
customer sends the ETag of the last partial it received as If-None-Match (none on its first
poll), so an unchanged partial is a 304 and a changed one a 200 with the new ETag. As in
sustained.py the whole schedule is made up front and each latency is measured from the poll's
planned start, so a slow server cannot slow the load down.
"""

import http.client
import queue
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    requests: int = 0
    failures: int = 0  # no HTTP answer at all (refused, reset, timeout)
    statuses: dict = field(default_factory=dict)
    latencies_ms: list = field(default_factory=list)
    # (seconds from the start as planned, status, latency ms) per poll: where in the run it was slow
    timeline: list = field(default_factory=list)
    body_bytes: int = 0
    elapsed_s: float = 0.0


def run(
    port: int,
    tokens: list[str],
    *,
    customers: int = 2000,
    period_s: float = 15.0,
    duration_s: float = 60.0,
    senders: int = 48,
) -> Result:
    """`customers` (at most len(tokens)) polls every `period_s`: customers / period_s req/s."""
    tokens = tokens[:customers]
    begin = time.monotonic() + 0.5
    jobs: queue.Queue = queue.Queue()
    # Poll j of customer c at begin + (c / n + j) * period: one request every period / n.
    schedule = sorted(
        (begin + (c / len(tokens) + j) * period_s, c)
        for j in range(int(duration_s // period_s) + 1)
        for c in range(len(tokens))
        if (c / len(tokens) + j) * period_s < duration_s
    )
    for job in schedule:
        jobs.put(job)
    for _ in range(senders):
        jobs.put(None)
    etags: list[str | None] = [None] * len(tokens)
    result, lock = Result(), threading.Lock()

    def sender() -> None:
        while (job := jobs.get()) is not None:
            planned, c = job
            time.sleep(max(0.0, planned - time.monotonic()))
            headers = {"HX-Request": "true"}
            if etags[c]:
                headers["If-None-Match"] = etags[c]
            status, size = None, 0
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                conn.request("GET", f"/t/{tokens[c]}/", headers=headers)
                response = conn.getresponse()
                status, size = response.status, len(response.read())
                if status == 200 and response.headers.get("ETag"):
                    etags[c] = response.headers["ETag"]
                conn.close()
            except (OSError, http.client.HTTPException):
                pass
            latency_ms = (time.monotonic() - planned) * 1000
            with lock:
                result.requests += 1
                result.latencies_ms.append(latency_ms)
                result.timeline.append((planned - begin, status, latency_ms))
                result.statuses[status] = result.statuses.get(status, 0) + 1
                result.body_bytes += size
                if status is None:
                    result.failures += 1

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.elapsed_s = time.monotonic() - begin
    return result
