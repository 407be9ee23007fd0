"""`manage.py simulate`: drive today's published routes, as the demo's drivers would.

The logic lives in tracking.simulation; this command only keeps the clock, sleeps and prints.
"""

import random
import signal
import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from tracking.simulation import Simulation, advance, publish_demo_day

TICK_SECONDS = 1.0  # real seconds per tick
POLL_SECONDS = 30.0  # real seconds between looks for newly published routes


class Command(BaseCommand):
    help = (
        "Drive every driver with a published or started route today along it: GPS fixes, "
        "arrivals, deliveries and some failures, through the same services as the driver app."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--speed", type=float, default=1.0, help="Simulated seconds per real second.")
        parser.add_argument("--seed", type=int, default=None, help="Seed for repeatable noise.")
        parser.add_argument(
            "--failure-rate", type=float, default=0.05, help="Share of stops that fail (0…1)."
        )
        parser.add_argument("--once", action="store_true", help="Run a single tick and exit.")
        parser.add_argument(
            "--publish-demo",
            action="store_true",
            help=(
                "If nothing is published today in the demo organisation, plan and publish its day "
                "first (on a later day than it was seeded for, adding that day's orders, from now)."
            ),
        )
        parser.add_argument(
            "--exit-when-done",
            action="store_true",
            help="Exit once no route is left to drive instead of waiting for new ones.",
        )

    def handle(self, *args, **options) -> None:
        speed, failure_rate = options["speed"], options["failure_rate"]
        if speed <= 0:
            raise CommandError("--speed must be greater than 0.")
        if not 0 <= failure_rate <= 1:
            raise CommandError("--failure-rate must be between 0 and 1.")
        rng = random.Random(options["seed"])

        self.stopping = False
        previous = {signum: signal.signal(signum, self._stop) for signum in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._loop(speed=speed, failure_rate=failure_rate, rng=rng, options=options)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.stdout.write("Simulator stopped.")

    def _loop(self, *, speed: float, failure_rate: float, rng: random.Random, options: dict) -> None:
        if options["publish_demo"]:
            for line in publish_demo_day():
                self.stdout.write(line)
        real_now = timezone.now()
        sim = Simulation.from_db(now=real_now, failure_rate=failure_rate, start_now=options["publish_demo"])
        # Never behind what an earlier run already recorded: positions only move forward.
        sim_now = max(real_now, sim.resume_at or real_now)
        self.stdout.write(
            f"Simulating {len(sim.active)} route(s) at {speed:g}× from {sim_now:%Y-%m-%d %H:%M:%S} UTC."
        )
        last_poll = time.monotonic()
        while not self.stopping:
            tick_started = time.monotonic()
            step = TICK_SECONDS * speed
            for line in advance(sim, now=sim_now, dt_seconds=step, rng=rng):
                self.stdout.write(line)
            sim_now += timedelta(seconds=step)
            if options["once"]:
                break
            if not sim.active or time.monotonic() - last_poll >= POLL_SECONDS:
                for run in sim.refresh(now=sim_now):
                    self.stdout.write(f"Picked up {run.name}'s route ({len(run.stops)} open stops).")
                last_poll = time.monotonic()
            if not sim.active:
                if options["exit_when_done"]:
                    self.stdout.write("No route left to drive.")
                    break
                self._sleep(POLL_SECONDS)
                continue
            self._sleep(TICK_SECONDS - (time.monotonic() - tick_started))
            # After idle waits the simulated clock may lag; it never runs behind real time.
            sim_now = max(sim_now, timezone.now())

    def _stop(self, signum, frame) -> None:
        # Let the current tick finish: a half-applied tick would leave nothing broken (every
        # service call is its own transaction), but finishing it keeps the log truthful.
        self.stopping = True

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + max(0.0, seconds)
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, deadline - time.monotonic()))
