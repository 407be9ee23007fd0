import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[3]

INSTANCE = {
    "name": "tiny",
    "distance": "euclidean",
    "rounding": "trunc1",
    "time_limit": 120.0,
    "depot": {"id": 0, "x": 0, "y": 0, "tw_start": 0, "tw_end": 1000},
    "vehicles": {"count": 3, "capacity": 10, "shift_start": 0, "shift_end": 1000},
    "stops": [
        {"id": 11, "x": 10, "y": 0, "demand": 6, "tw_start": 0, "tw_end": 50, "service": 5},
        {"id": 12, "x": 0, "y": 10, "demand": 6, "tw_start": 0, "tw_end": 50, "service": 5},
        {"id": 13, "x": 10, "y": 10, "demand": 2, "pickup": 3, "tw_start": 0, "tw_end": 900, "service": 5},
    ],
}


def run(data, *args) -> dict:
    out = io.StringIO()
    call_command("solve_vrp", *args, stdin=io.StringIO(json.dumps(data)), stdout=out)
    return json.loads(out.getvalue())


def test_solve_vrp_writes_routes_of_stop_ids_within_the_time_limit_override():
    answer = run(INSTANCE, "--time-limit", "0.2", "--seed", "3")  # the instance asks for 120 s
    routes = answer["routes"]
    assert sorted(k for r in routes for k in r) == [11, 12, 13]
    assert all(sum(6 if k in (11, 12) else 3 for k in r) <= 10 for r in routes)
    assert "unassigned" not in answer and answer["cost"] > 0


def test_solve_vrp_rejects_json_that_is_not_an_instance_with_code_two():
    with pytest.raises(CommandError, match="Bad instance: vehicles must be an object") as excinfo:
        run({**INSTANCE, "vehicles": 3})
    assert excinfo.value.returncode == 2


def test_solve_vrp_rejects_a_negative_time_limit():
    with pytest.raises(CommandError, match="--time-limit must be positive"):
        run(INSTANCE, "--time-limit", "-1")


def test_solve_vrp_from_the_shell_exits_two_with_one_line_on_stderr():
    result = subprocess.run(
        [sys.executable, "manage.py", "solve_vrp"],
        input="{not json",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("CommandError: The input is not JSON")
