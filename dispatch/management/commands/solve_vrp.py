"""Solve one VRPTW instance in the exchange format: JSON on standard input, routes on output.

Same model building and solving as the app (dispatch.planner.solver.solve); only the input and
output differ. Exit code 2 with a one-line message on standard error for bad input.
"""

import json
import sys

from django.core.management.base import BaseCommand, CommandError

from dispatch.planner.exchange import problem_from_exchange, solution_to_exchange
from dispatch.planner.solver import solve


class Command(BaseCommand):
    help = (
        "Read one instance in the VRPTW exchange format (../shared/benchdata/vrptw/README.md) on "
        "standard input and write its routes as JSON on standard output."
    )
    requires_system_checks = []  # pure computation: no database, no URL or template checks
    stealth_options = ("stdin",)  # call_command(..., stdin=io.StringIO(...)) in tests

    def add_arguments(self, parser):
        parser.add_argument(
            "--time-limit", type=float, default=None, help="seconds to search (overrides the instance's)"
        )
        parser.add_argument("--seed", type=int, default=0, help="random seed of the search (default 0)")

    def handle(self, *args, **options):
        stream = options.get("stdin") or sys.stdin
        try:
            data = json.load(stream)
        except json.JSONDecodeError as exc:
            raise CommandError(f"The input is not JSON: {exc}", returncode=2) from None
        try:
            problem, time_limit = problem_from_exchange(data)
        except ValueError as exc:
            raise CommandError(f"Bad instance: {exc}", returncode=2) from None
        if options["time_limit"] is not None:
            if not options["time_limit"] > 0:
                raise CommandError("--time-limit must be positive", returncode=2)
            time_limit = options["time_limit"]
        solution = solve(problem, time_limit=time_limit, seed=options["seed"])
        self.stdout.write(json.dumps(solution_to_exchange(problem, solution)))
