"""Live-data figures (issue 4 item 10): GPS ingest, the dashboard, each against a bare view.

For each backend, one run builds a fresh database (bench.live.prepare), starts the app under
gunicorn (3 sync workers, DEBUG off) on a free port of 127.0.0.1 and measures, with the load
generator on the same machine:

  ingest     batches of 50 fixes, as fast as the server answers (wrk + lua/ingest.lua)
  single     one fix per request, and its ratio to the bare view's requests/s
  dashboard  the dispatcher's htmx partial (GET / with HX-Request) with 200 drivers and 2,000
             stops today, then the same with If-None-Match (304); ratios to the bare view and
             the SQL queries per request at 10 and 200 drivers (counted in-process)
  sustained  ING-1's mix (60 % single fixes, 40 % batches of 10-100) at 200 fixes/s, open loop
  tracking   the customer tracking page: its htmx partial over 2,000 links (wrk rotating over
             the tokens), the same answered 304 (If-None-Match per token), the full page and
             the JSON twin, ratios to the bare view; SQL queries per partial on routes of 5 and
             200 stops; and the rate limiter at its default rate on a second server (429)
  trk1       TRK-1: 2,000 customers polling every 15 s (133 req/s, open loop, each with its last
             ETag) while ING-1's mix runs at 200 fixes/s
  job7       JOB-7 (PostgreSQL only, not in the default set): a real qcluster beside gunicorn
             while ING-1's mix runs; queue depth, recomputes per route per 30 s, enqueue lag

After every ingest phase the stored fixes are counted in the database and compared with the
fixes the server acknowledged. Figures, not tests: nothing here fails a build.

    python -m bench.live.run                              # both backends, about 5 minutes
    python -m bench.live.run --quick                      # PostgreSQL, short phases, ~30 s
    python -m bench.live.run --only sustained --duration 600 --backends postgresql  # ING-1 soak
    python -m bench.live.run --only tracking,trk1 --backends postgresql  # customer page
    python -m bench.live.run --only trk1 --duration 600 --backends postgresql       # TRK-1 soak
    python -m bench.live.run --only job7 --backends postgresql --redis   # ETA recompute queue
    python -m bench.live.run --json live.json
"""

import argparse
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bench.live import customers, job7, sustained
from bench.live.server import TRACKING_RATE_DEFAULT, TRACKING_RATE_LIFTED, Stack

LUA = Path(__file__).resolve().parent / "lua"
PHASES = ("ingest", "single", "dashboard", "sustained", "tracking", "trk1", "job7")
DEFAULT_PHASES = PHASES[:-1]  # job7 starts a qcluster: asked for by name only
THROTTLE_NOTE = (
    "DRF throttling: none of the measured endpoints has a DRF throttle (the app's are on the "
    "token login and the tracker-app endpoint); bench/live/settings.py clears "
    "DEFAULT_THROTTLE_CLASSES anyway."
)
TRACKING_RATE_NOTE = (
    f"Customer tracking rate limit LIFTED for the load: TRACKING_RATE_PER_MINUTE={TRACKING_RATE_LIFTED:,} "
    "(all load comes from 127.0.0.1; the app's default is 60 a minute per address). The limiter "
    f"itself is checked on a second gunicorn at {TRACKING_RATE_DEFAULT}/min (row 'rate limit')."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default=None, help="postgresql,sqlite (default both; --quick: postgresql)"
    )
    parser.add_argument(
        "--only", default=",".join(DEFAULT_PHASES), help=f"phases to run, from {','.join(PHASES)}"
    )
    parser.add_argument(
        "--seconds", type=float, default=10, help="length of each wrk measurement (default 10)"
    )
    parser.add_argument(
        "--duration", type=float, default=60, help="sustained run, seconds (600 = ING-1 soak)"
    )
    parser.add_argument("--rate", type=float, default=200, help="sustained fixes/s (default 200)")
    parser.add_argument("--drivers", type=int, default=1000, help="drivers sending fixes, one token each")
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers (default 3)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument(
        "--links", type=int, default=2000, help="tracking links = TRK-1's customers (default 2,000)"
    )
    parser.add_argument(
        "--poll", type=float, default=15, help="TRK-1: seconds between a customer's polls (default 15)"
    )
    parser.add_argument(
        "--cold",
        action="store_true",
        help="skip the VACUUM ANALYZE after building: measure a database just bulk-loaded",
    )
    parser.add_argument(
        "--redis",
        action="store_true",
        help="run every backend a second time with REDIS_URL set (cache and sessions in Redis)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="short phases on PostgreSQL only, well under a minute"
    )
    parser.add_argument("--json", metavar="FILE", help="save the rows and conditions as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds, args.duration = 3, 5
    args.warmup = 1 if args.quick else 2
    backends = (args.backends or ("postgresql" if args.quick else "postgresql,sqlite")).split(",")
    phases = args.only.split(",")
    unknown = set(phases) - set(PHASES) or set(backends) - {"postgresql", "sqlite"}
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    if shutil.which("wrk") is None and set(phases) - {"sustained", "trk1", "job7"}:
        parser.error("wrk is needed: apt-get install wrk")

    # SIGTERM takes the same way out as Ctrl-C, through every `finally` and Stack.__exit__.
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.now(UTC)
    rows: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="doorstep-bench-"))
    tracking = bool({"tracking", "trk1"} & set(phases))
    configurations = [(b, redis) for b in backends for redis in ((False, True) if args.redis else (False,))]
    try:
        for backend, redis in configurations:
            label = f"{backend}+redis" if redis else backend
            print(f"\n== {label}: building the database and starting gunicorn", flush=True)
            with Stack(
                backend,
                workdir,
                workers=args.workers,
                ingest_drivers=args.drivers,
                tracking_links=args.links if tracking else 0,
                ingest_stops=job7.STOPS_PER_ROUTE if "job7" in phases else 0,
                redis=redis,
                settle=not args.cold,
            ) as stack:
                print(f"   gunicorn on 127.0.0.1:{stack.port}, {args.workers} sync workers", flush=True)
                if tracking:
                    print(f"   {TRACKING_RATE_NOTE}", flush=True)
                rows += Bench(stack, args, label).run(phases)
                errors = stack.server_errors()
                if errors:
                    print(f"   !! tracebacks in gunicorn's log:\n{errors}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, benchmark database dropped", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    print_table(rows)
    print(f"\n{THROTTLE_NOTE}")
    if tracking:
        print(TRACKING_RATE_NOTE)
    if args.json:
        conditions = {
            "started": started.isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "gunicorn_workers": args.workers,
            "wrk": f"-t{args.threads} -c{args.connections}, {args.seconds} s after a {args.warmup} s warm-up",
            "sustained": f"{args.rate:g} fixes/s for {args.duration:g} s",
            "ingest_drivers": args.drivers,
            "throttling": THROTTLE_NOTE,
            "tracking_rate_limit": TRACKING_RATE_NOTE if tracking else None,
            "tracking": f"{args.links:,} links, TRK-1 polls every {args.poll:g} s" if tracking else None,
            "load_average": os.getloadavg(),
        }
        Path(args.json).write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Bench:
    def __init__(self, stack: Stack, args, label: str | None = None):
        self.stack, self.args = stack, args
        self.backend = label or stack.backend
        self.base = f"http://127.0.0.1:{stack.port}"
        self.bare_rps: float | None = None
        # Device time of the next fix of every driver. Each phase starts after the previous
        # one's last fix, so a driver's fixes always move forward in time, as a phone's do;
        # twenty minutes back leaves room for tens of thousands of fixes per driver at 1 s.
        self.device_clock = time.time() - 1200

    def run(self, phases: list[str]) -> list[dict]:
        rows, ratios = [], {"single", "dashboard", "tracking"} & set(phases)
        for phase in PHASES:
            if phase in phases:
                if phase in ratios:
                    # The base measured again just before each phase whose figures are ratios to
                    # it: on a shared machine the bare view's own rate drifts by 10-20 % within
                    # minutes, and a ratio to a base taken minutes earlier carries that drift.
                    rows.append(self.bare(f"before {phase}"))
                print(f"   {phase}...", flush=True)
                rows += getattr(self, phase)()
        if ratios:
            rows.append(self.bare("at the end (drift check)"))
        return rows

    # --- wrk ---------------------------------------------------------------------------------

    def wrk(self, script: str, lua_args: list[str], seconds: int) -> dict:
        out = self.stack.workdir / "wrk.json"
        out.unlink(missing_ok=True)
        a = self.args
        subprocess.run(
            ["wrk", f"-t{a.threads}", f"-c{a.connections}", f"-d{seconds}s", "--timeout", "10s"]
            + ["-s", str(LUA / script), self.base, "--", *lua_args],
            env={**os.environ, "BENCH_LUA_DIR": str(LUA), "BENCH_OUT": str(out)},
            stdout=subprocess.DEVNULL,
            check=True,
        )
        result = json.loads(out.read_text())
        result["rps"] = result["requests"] / result["duration_s"]
        self.settle()
        return result

    def settle(self, timeout: float = 60) -> None:
        """Wait until every worker is free again.

        wrk stops with requests still queued in gunicorn's backlog; the workers go on serving
        them, which would slow the next measurement and, for ingest, store fixes after the
        count. Idle means `workers` bare requests at once all answer within 100 ms.
        """
        deadline = time.monotonic() + timeout
        with ThreadPoolExecutor(self.args.workers) as pool:
            while time.monotonic() < deadline:
                began = time.monotonic()
                list(
                    pool.map(
                        lambda _: urllib.request.urlopen(f"{self.base}/bench/bare/", timeout=60).read(),
                        range(self.args.workers),
                    )
                )
                if time.monotonic() - began < 0.1:
                    return

    def row(self, test: str, value: str, target: str = "", verdict: str = "", **detail) -> dict:
        return {
            "backend": self.backend,
            "test": test,
            "value": value,
            "target": target,
            "verdict": verdict,
            **detail,
        }

    def bare(self, when: str) -> dict:
        if self.bare_rps is None:
            self.wrk("get.lua", ["/bench/bare/", "-", "-"], self.args.warmup)
        r = self.wrk("get.lua", ["/bench/bare/", "-", "-"], self.args.seconds)
        self.bare_rps = r["rps"]
        return self.row(
            f"bare view {when} (ratio base)", f"{r['rps']:,.0f} req/s, p95 {r['p95_ms']:.1f} ms", raw=r
        )

    # --- ingest ------------------------------------------------------------------------------

    def _ingest(self, batch: int, seconds: int) -> dict:
        a = self.args
        start = self.device_clock
        lua_args = [str(self.stack.tokens_file), str(batch), f"{start:.3f}", "1", str(random.getrandbits(32))]
        r = self.wrk("ingest.lua", [*lua_args, str(a.threads)], seconds)
        # Each thread takes its drivers in turn: none sent more than this many fixes.
        per_driver = math.ceil((r["requests"] + a.connections) * a.threads / len(self.stack.tokens)) * batch
        self.device_clock = start + per_driver + 1
        return r

    def _settled_count(self) -> tuple[int, int]:
        """The count once it stopped moving for a second: a worker may still be finishing a
        batch from wrk's last moment while the others already answer settle()'s requests."""
        last = self.stack.count()
        while True:
            time.sleep(1)
            now = self.stack.count()
            if now == last:
                return now
            last = now

    def _ingest_phase(self, batch: int) -> tuple[dict, dict]:
        before, flagged_before = self.stack.count()
        warm = self._ingest(batch, self.args.warmup)
        r = self._ingest(batch, self.args.seconds)
        after, flagged_after = self._settled_count()
        acked = warm["acked"] + r["acked"]
        # wrk stops with requests on the wire and never reads their answers; the server stores
        # the fixes of those it had received. So every acknowledged fix must be stored, and at
        # most the in-flight ones on top (the sustained run, which reads every answer, checks
        # exact equality).
        in_flight = sum(run["sent"] - batch * run["requests"] for run in (warm, r))
        stored = after - before
        check = {
            "stored": stored,
            "acked": acked,
            "in_flight": in_flight,
            "flagged": flagged_after - flagged_before,
            "ok": acked <= stored <= acked + in_flight and r["s2xx"] == r["requests"],
        }
        return r, check

    @staticmethod
    def _check_text(check: dict) -> str:
        if "in_flight" not in check:
            same = "=" if check["stored"] == check["acked"] else "≠"
            text = f"stored {check['stored']:,} {same} acked {check['acked']:,}"
        else:
            extra = check["stored"] - check["acked"]
            text = (
                f"stored {check['stored']:,} = acked {check['acked']:,} + {extra:,} "
                f"of the {check['in_flight']:,} in flight at wrk's stop"
            )
        return f"{text}; {check['flagged']} flagged"

    def ingest(self) -> list[dict]:
        r, check = self._ingest_phase(50)
        fixes_per_s = r["acked"] / r["duration_s"]
        pg = self.backend == "postgresql"
        return [
            self.row(
                "(a) ingest, batches of 50",
                f"{fixes_per_s:,.0f} fixes/s ({r['rps']:,.0f} req/s, p95 {r['p95_ms']:.0f} ms, "
                f"{r['requests'] - r['s2xx']} non-2xx)",
                "≥ 5,000 fixes/s" if pg else "(none)",
                ("met" if fixes_per_s >= 5000 else "missed") if pg else "",
                fixes_per_s=fixes_per_s,
                raw=r,
            ),
            self.row(
                "(a) stored vs acked",
                self._check_text(check),
                "acked ≤ stored ≤ acked + in flight, 0 flagged",
                "met" if check["ok"] and not check["flagged"] else "MISSED",
                check=check,
            ),
        ]

    def single(self) -> list[dict]:
        r, check = self._ingest_phase(1)
        ratio = r["rps"] / self.bare_rps
        return [
            self.row(
                "(b) single-fix requests",
                f"{r['rps']:,.0f} req/s = {ratio:.3f} × bare (p95 {r['p95_ms']:.0f} ms, "
                f"{r['requests'] - r['s2xx']} non-2xx)",
                "≥ 0.1 × bare",
                "met" if ratio >= 0.1 else "missed",
                ratio=ratio,
                raw=r,
            ),
            self.row(
                "(b) stored vs acked",
                self._check_text(check),
                "acked ≤ stored ≤ acked + in flight, 0 flagged",
                "met" if check["ok"] and not check["flagged"] else "MISSED",
                check=check,
            ),
        ]

    def sustained(self) -> list[dict]:
        a = self.args
        before, flagged_before = self.stack.count()
        r = sustained.run(
            self.stack.port,
            self.stack.tokens,
            fixes_per_s=a.rate,
            duration_s=a.duration,
            start_after=self.device_clock,
        )
        after, flagged_after = self.stack.count()
        check = {
            "stored": after - before,
            "acked": len(r.acked),
            "flagged": flagged_after - flagged_before,
        }
        check["ok"] = check["stored"] == check["acked"]
        # A later phase's fixes must come after these, per driver.
        self.device_clock = time.time() + 1
        p95, p99 = (sustained.percentile(r.latencies_ms, p) for p in (95, 99))
        errors = r.non_2xx + r.failures
        label = f"(c) sustained {a.rate:g} fixes/s, {a.duration:g} s"
        ok = errors == 0 and p95 < 300 and p99 <= 800
        return [
            self.row(
                label,
                f"{r.fixes_sent / r.elapsed_s:,.0f} fixes/s in {r.requests:,} requests; {errors} errors; "
                f"p50 {sustained.percentile(r.latencies_ms, 50):.0f}, p95 {p95:.0f}, p99 {p99:.0f}, "
                f"max {max(r.latencies_ms, default=0):.0f} ms",
                "0 errors, p95 < 300 ms, p99 ≤ 800 ms",
                "met" if ok else "missed",
                requests=r.requests,
                fixes_sent=r.fixes_sent,
                elapsed_s=r.elapsed_s,
                errors=errors,
                statuses={str(k): v for k, v in r.statuses.items()},
                p95_ms=p95,
                p99_ms=p99,
            ),
            self.row(
                f"{label}: stored vs acked",
                self._check_text(check),
                "equal, 0 flagged",
                "met" if check["ok"] and not check["flagged"] else "MISSED",
                check=check,
            ),
        ]

    # --- dashboard ---------------------------------------------------------------------------

    def _etag(self, session: str) -> str:
        request = urllib.request.Request(
            f"{self.base}/", headers={"Cookie": f"sessionid={session}", "HX-Request": "true"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200, response.status
            return response.headers["ETag"]

    def dashboard(self) -> list[dict]:
        a, session = self.args, self.stack.prepared["dashboard_session"]
        shape = self.stack.prepared["dashboard"]
        self.wrk("get.lua", ["/", session, "-"], a.warmup)
        full = self.wrk("get.lua", ["/", session, "-"], a.seconds)
        # The ETag includes the minute (ages on the page change with the clock): start the 304
        # run early enough in a minute to finish inside it.
        while time.time() % 60 + a.warmup + a.seconds + 3 > 60:
            time.sleep(0.5)
        etag = self._etag(session)
        self.wrk("get.lua", ["/", session, etag], a.warmup)
        cached = self.wrk("get.lua", ["/", session, etag], a.seconds)
        # The floor of any portal request: signed in, nothing done (bench/live/urls.py).
        self.wrk("get.lua", ["/bench/signed-in/", session, "-"], a.warmup)
        floor = self.wrk("get.lua", ["/bench/signed-in/", session, "-"], a.seconds)
        q = self.stack.prepared["queries"]
        ratio_full, ratio_cached = full["rps"] / self.bare_rps, cached["rps"] / self.bare_rps
        ratio_floor = floor["rps"] / self.bare_rps
        what = f"{shape['drivers']} drivers, {shape['stops']:,} stops"
        if shape.get("history_events"):
            what += f", {shape['history_events']:,} earlier events"
        return [
            self.row(
                "(d) signed-in floor: a dispatcher's request that does nothing",
                f"{floor['rps']:,.0f} req/s = {ratio_floor:.3f} × bare, p95 {floor['p95_ms']:.0f} ms "
                f"({floor['s2xx']} × 200 of {floor['requests']}); the 304 is "
                f"{cached['rps'] / floor['rps']:.2f} × this floor",
                "(none: the ceiling of every portal figure)",
                "",
                ratio=ratio_floor,
                raw=floor,
            ),
            self.row(
                f"(d) dashboard partial, {what}",
                f"{full['rps']:,.0f} req/s = {ratio_full:.3f} × bare, p95 {full['p95_ms']:.0f} ms "
                f"({full['s2xx']} × 200, {_sizes(q[str(shape['drivers'])])} each)",
                "≥ 0.3 × bare",
                "met" if ratio_full >= 0.3 and full["s2xx"] == full["requests"] else "missed",
                ratio=ratio_full,
                raw=full,
            ),
            self.row(
                "(d) dashboard partial, If-None-Match",
                f"{cached['rps']:,.0f} req/s = {ratio_cached:.3f} × bare, p95 {cached['p95_ms']:.0f} ms "
                f"({cached['s304']} × 304 of {cached['requests']})",
                "≥ 0.5 × bare",
                "met" if ratio_cached >= 0.5 and cached["s304"] == cached["requests"] else "missed",
                ratio=ratio_cached,
                raw=cached,
            ),
            self.row(
                "(d) SQL queries per partial request",
                ", ".join(
                    f"{n} drivers: {c['partial']} (304: {c['not_modified']})"
                    for n, c in sorted(q.items(), key=lambda i: int(i[0]))
                ),
                "constant",
                "met" if len({c["partial"] for c in q.values()}) == 1 else "missed",
                queries=q,
            ),
        ]

    # --- customer tracking page --------------------------------------------------------------

    def _track_get(self, base: str, token: str, headers: dict) -> tuple[int, dict]:
        request = urllib.request.Request(f"{base}/t/{token}/", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                response.read()
                return response.status, dict(response.headers)
        except urllib.error.HTTPError as error:
            error.read()
            return error.code, dict(error.headers)

    def _tracking_etags(self) -> Path:
        """The partial's ETag of every token, as lines 'token etag' for lua/track.lua."""

        def etag(token: str) -> str:
            status, headers = self._track_get(self.base, token, {"HX-Request": "true"})
            assert status == 200, status
            return headers["ETag"]

        with ThreadPoolExecutor(self.args.workers * 2) as pool:
            tokens = self.stack.tracking_tokens
            pairs = list(zip(tokens, pool.map(etag, tokens), strict=True))
        path = self.stack.workdir / "tracking-etags.txt"
        path.write_text("".join(f"{t} {e}\n" for t, e in pairs))
        return path

    def _track_row(self, test: str, r: dict, status: str, floor: float | None = None, **detail) -> dict:
        ratio = r["rps"] / self.bare_rps
        answered = r["s304"] if status == "304" else r["s2xx"]
        other = r["requests"] - answered
        value = (
            f"{r['rps']:,.0f} req/s = {ratio:.3f} × bare; p50 {r['p50_ms']:.0f}, p95 {r['p95_ms']:.0f}, "
            f"p99 {r['p99_ms']:.0f} ms; {answered:,} × {status}, {other} other"
            + (f" ({r['s4xx']} × 4xx)" if r["s4xx"] else "")
        )
        if floor is None:
            return self.row(test, value, "(none)", "", ratio=ratio, raw=r, **detail)
        ok = ratio >= floor and other == 0
        return self.row(
            test,
            value,
            f"≥ {floor} × bare, all {status}",
            "met" if ok else "missed",
            ratio=ratio,
            raw=r,
            **detail,
        )

    def tracking(self) -> list[dict]:
        a, tokens = self.args, str(self.stack.tracking_file)
        shape = self.stack.prepared["tracking"]
        what = f"{shape['links']:,} links, {shape['routes']} routes, {shape['stops']:,} stops"
        rows = []
        for mode, test, status, floor in (
            ("partial", f"(e) tracking partial (htmx), {what}", "200", 0.3),
            ("page", "(e) tracking full page", "200", None),
            ("json", "(e) tracking JSON twin /api/v1/track/", "200", None),
        ):
            self.wrk("track.lua", [tokens, mode, str(a.threads)], a.warmup)
            r = self.wrk("track.lua", [tokens, mode, str(a.threads)], a.seconds)
            rows.append(self._track_row(test, r, status, floor))
        # The data stands still and the clock alone changes no ETag (the page shows when the ETA
        # was updated; the browser counts the minutes): every token's ETag, fetched once, holds.
        etags = str(self._tracking_etags())
        self.wrk("track.lua", [etags, "partial", str(a.threads)], a.warmup)
        r = self.wrk("track.lua", [etags, "partial", str(a.threads)], a.seconds)
        rows.insert(
            1,
            self._track_row(
                f"(e) tracking partial, If-None-Match ({shape['links']:,} tokens)",
                r,
                "304",
                0.5,
            ),
        )
        q = shape["queries"]

        def counts(c: dict) -> str:
            return f"{c['partial']} (304: {c['not_modified']}, page {c['page']}, JSON {c['json']})"

        rows.append(
            self.row(
                "(e) SQL queries per tracking request",
                "; ".join(
                    f"{n}-stop route: next stop {counts(c['next'])}, last stop {counts(c['last'])}"
                    for n, c in sorted(q.items(), key=lambda i: int(i[0]))
                ),
                "constant in the stops",
                "met"
                if all(len({c[w]["partial"] for c in q.values()}) == 1 for w in ("next", "last"))
                else "missed",
                queries=q,
            )
        )
        rows.append(self.rate_limit())
        return rows

    def rate_limit(self) -> dict:
        """The limiter at its default rate, on a second gunicorn over the same database."""
        env = {**self.stack.env, "TRACKING_RATE_PER_MINUTE": str(TRACKING_RATE_DEFAULT)}
        if self.stack.redis:
            # Counters of their own: the load's requests from 127.0.0.1 are counted in Redis too.
            env["CACHE_KEY_PREFIX"] += "-ratelimit"
        workers, limit = self.args.workers, TRACKING_RATE_DEFAULT
        process, port = self.stack.spawn(env, workers, self.stack.workdir / "gunicorn-ratelimit.log")
        base, token = f"http://127.0.0.1:{port}", self.stack.tracking_tokens[0]
        try:
            # Counters are per minute: start early in one, so the check does not span two.
            while time.time() % 60 > 40:
                time.sleep(0.5)
            statuses, first_429, retry_after = [], None, None
            # With the per-process memory cache each gunicorn worker counts on its own.
            for i in range((workers + 1) * limit):
                status, headers = self._track_get(base, token, {"HX-Request": "true"})
                statuses.append(status)
                if status == 429 and first_429 is None:
                    first_429, retry_after = i + 1, headers.get("Retry-After")
                if first_429 and i + 1 >= first_429 + 4 and statuses[-5:] == [429] * 5:
                    break
            request = urllib.request.Request(f"{base}/api/v1/track/{token}/")
            try:
                urllib.request.urlopen(request, timeout=30).read()
                api = (200, None)
            except urllib.error.HTTPError as error:
                api = (error.code, error.headers.get("Retry-After"))
        finally:
            self.stack.stop(process)
        ok_before = sum(1 for s in statuses[: (first_429 or len(statuses)) - 1] if s == 200)
        got = {str(k): statuses.count(k) for k in sorted(set(statuses))}
        shared = "Redis" if self.stack.redis else f"local memory, {workers} processes"
        value = (
            f"first 429 at request {first_429} (Retry-After: {retry_after} s), {ok_before} × 200 before it; "
            f"then JSON twin {api[0]} (Retry-After: {api[1]}); cache: {shared}"
            if first_429
            else f"no 429 in {len(statuses)} requests"
        )
        exact = first_429 == limit + 1
        ok = bool(first_429) and retry_after is not None and api[0] == 429
        return self.row(
            f"(e) rate limit at the default {limit}/min, one address",
            value,
            f"429 + Retry-After after {limit} requests a minute",
            ("met" if exact else "met per process only") if ok else "MISSED",
            statuses=got,
            first_429=first_429,
            retry_after=retry_after,
            api=list(api),
        )

    def trk1(self) -> list[dict]:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        a, n = self.args, min(self.args.links, len(self.stack.tracking_tokens))
        # A server in service has served pages before: each worker's first requests (templates
        # loaded, statements prepared) are not TRK-1's customers' wait.
        self.wrk("track.lua", [str(self.stack.tracking_file), "partial", str(a.threads)], a.warmup)
        before, flagged_before = self.stack.count()
        # The customers poll from a process of their own: the two generators must not share a GIL.
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            pool.submit(time.sleep, 0).result()  # the process is up before the clock starts
            polls = pool.submit(
                customers.run,
                self.stack.port,
                self.stack.tracking_tokens,
                customers=n,
                period_s=a.poll,
                duration_s=a.duration,
            )
            ingest = sustained.run(
                self.stack.port,
                self.stack.tokens,
                fixes_per_s=a.rate,
                duration_s=a.duration,
                start_after=self.device_clock,
            )
            t = polls.result()
        self.device_clock = time.time() + 1
        after, flagged_after = self.stack.count()
        pct = sustained.percentile
        answered = t.statuses.get(200, 0) + t.statuses.get(304, 0)
        t_errors = t.requests - answered
        t_p95, t_p99 = pct(t.latencies_ms, 95), pct(t.latencies_ms, 99)
        i_errors = ingest.non_2xx + ingest.failures
        i_p95, i_p99 = pct(ingest.latencies_ms, 95), pct(ingest.latencies_ms, 99)
        label = f"TRK-1 {n:,} customers every {a.poll:g} s + ING-1 {a.rate:g} fixes/s, {a.duration:g} s"
        others = {str(k): v for k, v in t.statuses.items() if k not in (200, 304)}
        check = {
            "stored": after - before,
            "acked": len(ingest.acked),
            "flagged": flagged_after - flagged_before,
        }
        check["ok"] = check["stored"] == check["acked"]
        return [
            self.row(
                f"{label}: tracking polls",
                f"{t.requests / t.elapsed_s:,.1f} req/s, {t.requests:,} polls: "
                f"{t.statuses.get(200, 0):,} × 200, {t.statuses.get(304, 0):,} × 304, "
                f"{t_errors} errors {others or ''}; p50 {pct(t.latencies_ms, 50):.0f}, "
                f"p95 {t_p95:.0f}, p99 {t_p99:.0f}, max {max(t.latencies_ms, default=0):.0f} ms",
                "0 errors, p95 ≤ 200 ms, p99 ≤ 500 ms",
                "met" if t_errors == 0 and t_p95 <= 200 and t_p99 <= 500 else "missed",
                requests=t.requests,
                elapsed_s=t.elapsed_s,
                statuses={str(k): v for k, v in t.statuses.items()},
                errors=t_errors,
                p50_ms=pct(t.latencies_ms, 50),
                p95_ms=t_p95,
                p99_ms=t_p99,
                max_ms=max(t.latencies_ms, default=0),
                body_bytes=t.body_bytes,
            ),
            *self._trk1_windows(t, label),
            self.row(
                f"{label}: ingest",
                f"{ingest.fixes_sent / ingest.elapsed_s:,.0f} fixes/s in {ingest.requests:,} requests; "
                f"{i_errors} errors; p50 {pct(ingest.latencies_ms, 50):.0f}, p95 {i_p95:.0f}, "
                f"p99 {i_p99:.0f}, max {max(ingest.latencies_ms, default=0):.0f} ms",
                "0 errors, p95 ≤ 300 ms, p99 ≤ 800 ms",
                "met" if i_errors == 0 and i_p95 <= 300 and i_p99 <= 800 else "missed",
                requests=ingest.requests,
                fixes_sent=ingest.fixes_sent,
                elapsed_s=ingest.elapsed_s,
                errors=i_errors,
                statuses={str(k): v for k, v in ingest.statuses.items()},
                p95_ms=i_p95,
                p99_ms=i_p99,
            ),
            self.row(
                f"{label}: stored vs acked",
                self._check_text(check),
                "equal, 0 flagged",
                "met" if check["ok"] and not check["flagged"] else "MISSED",
                check=check,
            ),
        ]

    def _trk1_windows(self, t, label: str) -> list[dict]:
        """TRK-1's polls by period (the first period's are every customer's first, ETag-less,
        poll) and by answer, so a tail can be placed."""
        pct, period = sustained.percentile, self.args.poll
        groups: dict[str, list[float]] = {}
        for at, status, latency in t.timeline:
            first = int(at // period) * period
            groups.setdefault(f"{first:g}-{first + period:g} s", []).append(latency)
            groups.setdefault(f"answered {status}", []).append(latency)
        text = "; ".join(
            f"{name}: {len(ms):,} polls, p50 {pct(ms, 50):.0f}, p95 {pct(ms, 95):.0f} ms"
            for name, ms in groups.items()
        )
        windows = {
            name: {"polls": len(ms), "p50_ms": pct(ms, 50), "p95_ms": pct(ms, 95)}
            for name, ms in groups.items()
        }
        return [self.row(f"{label}: tracking polls by period and answer", text, windows=windows)]

    def job7(self) -> list[dict]:
        """JOB-7: bench.live.job7 (qcluster, ING-1's mix, SQL sampling), as rows."""
        if not self.backend.startswith("postgresql"):
            return [self.row("JOB-7", "skipped: PostgreSQL only (samples django_q_ormq with psycopg)")]
        a = self.args
        r = job7.run(self.stack, fixes_per_s=a.rate, duration_s=a.duration, start_after=self.device_clock)
        self.device_clock = time.time() + 1
        pct, ingest = sustained.percentile, r["ingest"]
        label = f"JOB-7 ({job7.Q_WORKERS} q workers, ING-1 {a.rate:g} fixes/s, {a.duration:g} s)"
        cache = "Redis (shared)" if self.stack.redis else f"local memory ({a.workers} processes)"
        depth, lags, windows = r["depth_load"], r["lags_s"], r["windows"]
        over = sum(1 for n in windows.values() if n > 1)
        worst = max(windows.values(), default=0)
        every = len(self.stack.tokens) / (ingest.requests / ingest.elapsed_s) if ingest.requests else 0
        counted = len(r["tasks"])
        i_errors = ingest.non_2xx + ingest.failures
        notes = r["notifications"]
        stop = r["qcluster_stop"]
        if r["qcluster_log_errors"]:
            print(f"   !! errors in qcluster's log:\n{r['qcluster_log_errors']}", flush=True)
        return [
            self.row(
                f"{label}: OrmQ depth (1 s samples)",
                f"max {max(depth, default=0):,}, p95 {pct(depth, 95):,.0f} over {len(depth)} samples; "
                f"drained {r['drain_s']:.0f} s after the load",
                "< 1,000",
                "met" if max(depth, default=0) < 1000 else "missed",
                samples=len(depth),
                max=max(depth, default=0),
                p95=pct(depth, 95),
                drain_s=r["drain_s"],
            ),
            self.row(
                f"{label}: recomputes per route per 30 s",
                f"max {worst} in any 30 s, {over} of {len(windows)} routes > 1; {counted:,} recomputes "
                f"({r['failed']} failed) of {r['enqueued']:,} enqueued; {r['routes_written']:,} routes' "
                f"ETAs written; each driver's batches every {every:.0f} s; debounce cache: {cache}",
                "≤ 1",
                ("met" if worst <= 1 else "MISSED") + ("" if counted == r["enqueued"] else " (count short)"),
                max_per_30s=worst,
                routes_over=over,
                routes=len(windows),
                recomputes=counted,
                enqueued=r["enqueued"],
                failed=r["failed"],
                routes_written=r["routes_written"],
                batch_every_s=every,
                other_tasks=r["other_tasks"],
            ),
            self.row(
                f"{label}: enqueue → recompute done (stopped − started)",
                f"p50 {pct(lags, 50):.2f} s, p95 {pct(lags, 95):.2f} s, max {max(lags, default=0):.2f} s "
                "(upper bound of enqueue → start)",
                "p95 < 10 s",
                "met" if lags and pct(lags, 95) < 10 else "missed",
                p50_s=pct(lags, 50),
                p95_s=pct(lags, 95),
                max_s=max(lags, default=0),
            ),
            self.row(
                f"{label}: ETA notifications",
                f"{notes['count']} arriving_soon/delayed made, {notes['repeated']} repeated per stop: none "
                "possible (no sweep_notifications schedule, no customer phone or e-mail in the data)",
                "≤ 1 per threshold crossing per stop",
                "n/a",
                **notes,
            ),
            self.row(
                f"{label}: ingest beside the cluster",
                f"{ingest.fixes_sent / ingest.elapsed_s:,.0f} fixes/s in {ingest.requests:,} requests; "
                f"{i_errors} errors; p95 {pct(ingest.latencies_ms, 95):.0f}, "
                f"p99 {pct(ingest.latencies_ms, 99):.0f} ms; qcluster stopped by SIGTERM in "
                f"{stop['seconds']:.1f} s (exit {stop['returncode']}, {stop['left']} processes left)",
                "0 errors, p95 ≤ 300 ms, p99 ≤ 800 ms",
                "met"
                if i_errors == 0
                and pct(ingest.latencies_ms, 95) <= 300
                and pct(ingest.latencies_ms, 99) <= 800
                else "missed",
                errors=i_errors,
                p95_ms=pct(ingest.latencies_ms, 95),
                p99_ms=pct(ingest.latencies_ms, 99),
                qcluster_stop=stop,
            ),
        ]


def _sizes(counted: dict) -> str:
    """The partial's size as sent to a browser (gzipped) and plain."""
    plain = f"{counted['bytes'] // 1024} KiB"
    if counted.get("gzip_bytes"):
        return f"{counted['gzip_bytes'] // 1024} KiB gzipped, {plain} plain"
    return plain


def print_table(rows: list[dict]) -> None:
    headers = ("backend", "test", "measured", "target", "verdict")
    cells = [(r["backend"], r["test"], r["value"], r["target"], r["verdict"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print()
    for line in (headers, tuple("-" * w for w in widths), *cells):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
