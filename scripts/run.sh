#!/usr/bin/env bash
# `make run`: seed the demo if the database is empty, then run the web server, the django-q2
# worker and (once it exists) the driver simulator together. Ctrl-C stops all of them; if one
# of them dies, the others are stopped too. Each runs in its own process group so that its
# children (runserver's autoreloader child, qcluster's workers) are stopped with it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
RUN_ADDR=${RUN_ADDR:-127.0.0.1:8000}
URL="http://${RUN_ADDR}/"
# Links in the demo's messages (printed by the console e-mail backend) lead to this server,
# unless SITE_URL is set in the environment or in .env.
if [ -z "${SITE_URL:-}" ] && ! grep -qs '^SITE_URL=' .env; then
    export SITE_URL="http://${RUN_ADDR}"
fi

commands=$("$PY" manage.py help --commands)
has_command() { grep -qx "$1" <<<"$commands"; }

"$PY" manage.py seed_demo --if-empty
if has_command setup_schedules; then
    "$PY" manage.py setup_schedules
fi

pids=()
names=()
start() {  # start NAME COMMAND...: a new session and process group whose id is the child's pid
    local name=$1
    shift
    # A script's background jobs start with SIGINT ignored; give it back so SIGINT stops them.
    env --default-signal=INT setsid "$@" &
    pids+=("$!")
    names+=("$name")
}

stopping=0
stop_all() {
    if [ "$stopping" -eq 1 ] || [ "${#pids[@]}" -eq 0 ]; then return 0; fi
    stopping=1
    trap '' INT TERM
    echo
    echo "Stopping ${names[*]} ..."
    # SIGINT to each leader, as Ctrl-C would: runserver's autoreloader then kills its child and
    # qcluster stops its workers cleanly (a SIGTERM to its whole group would leave it hanging).
    for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 100); do  # up to 10 s, then kill whatever is left of each group
        alive=0
        for pid in "${pids[@]}"; do kill -0 -- "-$pid" 2>/dev/null && alive=1; done
        [ "$alive" -eq 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM
trap 'stop_all' EXIT

start web "$PY" manage.py runserver "$RUN_ADDR"
start worker "$PY" manage.py qcluster
if has_command simulate; then
    # Ten times real time, so a newcomer sees the map move within a minute.
    start simulator "$PY" manage.py simulate --publish-demo --speed "${SIMULATE_SPEED:-10}"
fi

# Print the banner once the server answers, so it is not lost in the start-up output.
ready=0
for _ in $(seq 1 150); do
    if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)" \
        "${URL}healthz" 2>/dev/null; then
        ready=1
        break
    fi
    kill -0 "${pids[0]}" 2>/dev/null || break
    sleep 0.2
done
if [ "$ready" -eq 1 ]; then
    cat <<BANNER

  Doorstep is running: ${URL}
  Log in as admin, dispatcher or driver1 ... driver8 -- password: demo
  Driver app: ${URL}driver/   Admin: ${URL}admin/   API docs: ${URL}api/docs/
  Running: ${names[*]}. Press Ctrl-C to stop.

BANNER
fi

# Whichever process ends first (crash, port in use, ...) ends the whole run.
status=0
wait -n "${pids[@]}" || status=$?
echo "A process exited (status $status); stopping the rest." >&2
stop_all
exit "$status"
