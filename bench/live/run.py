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

After every ingest phase the stored fixes are counted in the database and compared with the
fixes the server acknowledged. Figures, not tests: nothing here fails a build.

    python -m bench.live.run                              # both backends, about 5 minutes
    python -m bench.live.run --quick                      # PostgreSQL, short phases, ~30 s
    python -m bench.live.run --only sustained --duration 600 --backends postgresql  # ING-1 soak
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
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from bench.live import sustained
from bench.live.server import Stack

LUA = Path(__file__).resolve().parent / "lua"
PHASES = ("ingest", "single", "dashboard", "sustained")
THROTTLE_NOTE = (
    "DRF throttling: none of the measured endpoints has a throttle (the app's are on the token "
    "login, the tracker-app endpoint and customer tracking pages); bench/live/settings.py "
    "clears DEFAULT_THROTTLE_CLASSES anyway."
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default=None, help="postgresql,sqlite (default both; --quick: postgresql)"
    )
    parser.add_argument("--only", default=",".join(PHASES), help=f"phases to run, from {','.join(PHASES)}")
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
    if shutil.which("wrk") is None and set(phases) - {"sustained"}:
        parser.error("wrk is needed: apt-get install wrk")

    # SIGTERM takes the same way out as Ctrl-C, through every `finally` and Stack.__exit__.
    signal.signal(signal.SIGTERM, _interrupt)
    started = datetime.now(UTC)
    rows: list[dict] = []
    workdir = Path(tempfile.mkdtemp(prefix="doorstep-bench-"))
    try:
        for backend in backends:
            print(f"\n== {backend}: building the database and starting gunicorn", flush=True)
            with Stack(backend, workdir, workers=args.workers, ingest_drivers=args.drivers) as stack:
                print(f"   gunicorn on 127.0.0.1:{stack.port}, {args.workers} sync workers", flush=True)
                rows += Bench(stack, args).run(phases)
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
        }
        Path(args.json).write_text(json.dumps({"conditions": conditions, "rows": rows}, indent=2) + "\n")
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


class Bench:
    def __init__(self, stack: Stack, args):
        self.stack, self.args = stack, args
        self.backend = stack.backend
        self.base = f"http://127.0.0.1:{stack.port}"
        self.bare_rps: float | None = None
        # Device time of the next fix of every driver. Each phase starts after the previous
        # one's last fix, so a driver's fixes always move forward in time, as a phone's do;
        # twenty minutes back leaves room for tens of thousands of fixes per driver at 1 s.
        self.device_clock = time.time() - 1200

    def run(self, phases: list[str]) -> list[dict]:
        rows = []
        if {"single", "dashboard"} & set(phases):
            rows.append(self.bare())
        for phase in PHASES:
            if phase in phases:
                print(f"   {phase}...", flush=True)
                rows += getattr(self, phase)()
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

    def bare(self) -> dict:
        self.wrk("get.lua", ["/bench/bare/", "-", "-"], self.args.warmup)
        r = self.wrk("get.lua", ["/bench/bare/", "-", "-"], self.args.seconds)
        self.bare_rps = r["rps"]
        return self.row("bare view (ratio base)", f"{r['rps']:,.0f} req/s, p95 {r['p95_ms']:.1f} ms", raw=r)

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
        q = self.stack.prepared["queries"]
        ratio_full, ratio_cached = full["rps"] / self.bare_rps, cached["rps"] / self.bare_rps
        what = f"{shape['drivers']} drivers, {shape['stops']:,} stops"
        return [
            self.row(
                f"(d) dashboard partial, {what}",
                f"{full['rps']:,.0f} req/s = {ratio_full:.3f} × bare, p95 {full['p95_ms']:.0f} ms "
                f"({full['s2xx']} × 200, {q[str(shape['drivers'])]['bytes'] // 1024} KiB each)",
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


def print_table(rows: list[dict]) -> None:
    headers = ("backend", "test", "measured", "target", "verdict")
    cells = [(r["backend"], r["test"], r["value"], r["target"], r["verdict"]) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    print()
    for line in (headers, tuple("-" * w for w in widths), *cells):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
