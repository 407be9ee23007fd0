"""Where a request's time goes: the dashboard poll, its 304 and a single-fix upload, called
in-process (Django's WSGIHandler, no gunicorn, no load generator), against the bare view.

    python -m bench.live.inprocess [--backends postgresql,sqlite] [--redis] [--requests 2000]

The wrk figures of bench.live.run mix the app's cost with gunicorn's, wrk's and the other
processes' on two shared cores; this separates the app's own. Each backend gets the same fresh,
settled database as bench.live.run (bench.live.server.Stack without gunicorn), then a child
process with the benchmark's environment sends `--requests` requests of each kind after 200 of
warm-up and prints the wall time and the process's CPU time per request. Every answer's status
is counted: a 304 loop takes a fresh ETag first, so the minute turning over mid-loop shows.

The last row is a what-if, labelled as such: the same 304 with dashboard_fingerprint memoised
per organisation, day and minute inside this process, i.e. what the 304 would cost if the
fingerprint's statement cost nothing (docs/benchmarks.md, "Where a 304's time goes").
"""

import argparse
import collections
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WARM_UP = 200


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="postgresql", help="comma-separated: postgresql, sqlite")
    parser.add_argument(
        "--redis", action="store_true", help="each backend again with cache and sessions in Redis"
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests of each kind (default 2,000)")
    parser.add_argument("--json", help="save the rows to this file")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)  # the child: prepared, tokens
    args = parser.parse_args(argv)
    if args.measure:
        return _measure(*map(Path, args.measure), args.requests)

    from bench.live.server import Stack

    rows = []
    for backend in args.backends.split(","):
        for redis in (False, True) if args.redis else (False,):
            label = f"{backend}+redis" if redis else backend
            print(f"== {label}: building the database", flush=True)
            with tempfile.TemporaryDirectory(prefix="doorstep-inproc-") as tmp:
                workdir = Path(tmp)
                with Stack(backend, workdir, ingest_drivers=200, redis=redis, serve=False) as stack:
                    out = workdir / "rows.json"
                    prepared = workdir / f"prepared-{backend}.json"  # Stack's files
                    child = [sys.executable, "-m", "bench.live.inprocess", "--requests", str(args.requests)]
                    child += ["--measure", str(prepared), str(stack.tokens_file)]
                    subprocess.run(child, cwd=ROOT, env={**stack.env, "BENCH_ROWS": str(out)}, check=True)
                    rows += [{"backend": label, **row} for row in json.loads(out.read_text())]
    print()
    print(f"{'backend':17s} {'request':62s} {'wall':>9s} {'app CPU':>9s}  answers")
    for row in rows:
        answers = ", ".join(f"{n} × {status}" for status, n in row["answers"].items())
        wall, cpu = f"{row['wall_us']:7,.0f} µs", f"{row['cpu_us']:7,.0f} µs"
        print(f"{row['backend']:17s} {row['what']:62s} {wall} {cpu}  {answers}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def _measure(prepared_path: Path, tokens_path: Path, n: int) -> int:
    """The child process: Django set up from the benchmark's environment, the app called
    directly."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.core.handlers.wsgi import WSGIHandler

    prepared = json.loads(prepared_path.read_text())
    tokens = tokens_path.read_text().split()
    app = WSGIHandler()
    cookie = f"{settings.SESSION_COOKIE_NAME}={prepared['dashboard_session']}"

    def call(environ: dict) -> tuple[str, dict]:
        started = []
        body = app(environ, lambda status, headers, *_: started.append((status, dict(headers))))
        b"".join(body)
        body.close()
        return started[0]

    def get(path: str, *headers: tuple[str, str], signed_in: bool = True):
        def environ() -> dict:
            e = _environ("GET", path, b"")
            if signed_in:
                e["HTTP_COOKIE"] = cookie
            e.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers})
            return e

        return environ

    poll = ("HX-Request", "true")

    def not_modified():
        etag = call(get("/", poll)())[1]["ETag"]
        return get("/", poll, ("If-None-Match", etag))

    fixes = _single_fixes(tokens, n + WARM_UP)
    kinds = [
        ("bare view", lambda: get("/bench/bare/", signed_in=False)),
        ("signed-in floor (a dispatcher's request that does nothing)", lambda: get("/bench/signed-in/")),
        ("dashboard partial, 200 drivers / 2,000 stops (cached body)", lambda: get("/", poll)),
        ("the same answered 304", not_modified),
        ("single-fix upload (POST /api/v1/driver/locations/)", lambda: lambda: next(fixes)),
    ]
    rows = [_loop(what, prepare, call, n) for what, prepare in kinds]

    # The what-if: the fingerprint free, memoised in this process.
    import tracking.views
    from tracking.selectors import dashboard_fingerprint

    kept: dict = {}

    def memoised(*, organization, day, now):
        key = (organization.pk, day, int(now.timestamp() // 60))
        if key not in kept:
            kept[key] = dashboard_fingerprint(organization=organization, day=day, now=now)
        return kept[key]

    tracking.views.dashboard_fingerprint = memoised
    rows.append(_loop("(what-if) the 304 with the fingerprint memoised in-process", not_modified, call, n))
    Path(os.environ["BENCH_ROWS"]).write_text(json.dumps(rows))
    return 0


def _loop(what: str, prepare, call, n: int) -> dict:
    """`n` requests after WARM_UP of them. prepare() is called just before (the 304 takes its
    ETag then) and returns the function that makes each request's environ."""
    next_environ = prepare()
    for _ in range(WARM_UP):
        call(next_environ())
    answers = collections.Counter()
    batch = [next_environ() for _ in range(n)]  # built before the clock starts
    wall, cpu = time.perf_counter(), time.process_time()
    for environ in batch:
        answers[call(environ)[0]] += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"   {what}: {wall / n * 1e6:,.0f} µs", flush=True)
    return {"what": what, "wall_us": wall / n * 1e6, "cpu_us": cpu / n * 1e6, "answers": dict(answers)}


def _environ(method: str, path: str, body: bytes, **extra) -> dict:
    return {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_ACCEPT_ENCODING": "gzip",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **extra,
    }


def _single_fixes(tokens: list[str], count: int):
    """One new fix per request, the ingest drivers in turn, each moving on its own circle at
    8 m/s a fix every 2 s (plausible: nothing is flagged), the newest an hour ago."""
    start = time.time() - 3600 - 2 * count / len(tokens)
    for i in range(count):
        driver, step = i % len(tokens), i // len(tokens)
        t = start + 2 * step
        angle = 8 / 400 * t + driver
        fix = {
            "uuid": str(uuid.uuid4()),
            "recorded_at": datetime.fromtimestamp(t, UTC).isoformat(),
            "lat": 52.52 + 400 * math.cos(angle) / 111_320,
            "lng": 13.405 + 400 * math.sin(angle) / 67_800,
            "accuracy": 5,
            "speed": 8.0,
            "heading": 90.0,
        }
        body = json.dumps({"source": "browser", "fixes": [fix]}).encode()
        yield _environ(
            "POST",
            "/api/v1/driver/locations/",
            body,
            CONTENT_TYPE="application/json",
            HTTP_AUTHORIZATION=f"Token {tokens[driver]}",
        )


if __name__ == "__main__":
    raise SystemExit(main())
