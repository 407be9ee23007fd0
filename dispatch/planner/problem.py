"""The planning problem and its solution as plain data (no Django).

Units: durations and times in seconds (times are seconds since local midnight of the plan's
date, or the instance's own unit for benchmark instances), distances in metres (or the
instance's unit), loads in parcels. Index 0.. of `locations` addresses both matrices.
"""

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Objective = Literal["time", "distance"]


@dataclass(frozen=True)
class Job:
    """One order to visit once. `key` is the caller's id (an Order pk, an exchange stop id)."""

    key: int
    location: int
    delivery: int = 0  # parcels loaded at the start depot and dropped here
    pickup: int = 0  # parcels collected here and brought back (a return)
    service: int = 0
    tw_start: int = 0
    tw_end: int = 2**40
    required: bool = True  # high priority: must be served; otherwise may be left out at a penalty
    allowed_vehicles: frozenset[int] | None = None  # vehicle keys; None = any (a pin is one key)


@dataclass(frozen=True)
class Break:
    start_earliest: int
    start_latest: int
    duration: int


@dataclass(frozen=True)
class Vehicle:
    """One driver's shift with a vehicle. `key` is the caller's id (a Shift or Driver pk)."""

    key: int
    capacity: int
    start_location: int
    end_location: int
    shift_start: int
    shift_end: int
    brk: Break | None = None
    speed_factor: float = 1.0  # durations are divided by this (a bike at 0.6, a van at 1.0)
    fixed_route: tuple[int, ...] | None = None  # job keys kept in this order (a locked route)


@dataclass
class Problem:
    locations: list[tuple[float, float]]  # (lat, lng) or (x, y) for benchmark instances
    durations: np.ndarray  # int64 [n, n]
    distances: np.ndarray  # int64 [n, n]
    jobs: list[Job]
    vehicles: list[Vehicle]
    objective: Objective = "time"
    balance: bool = False  # soft: spread the work between drivers
    # Times are seconds since local midnight: messages show them as HH:MM. False for benchmark
    # instances, whose times are in the instance's own unit (shown as numbers).
    clock: bool = True
    # Matrices and times are the instance's units × scale (the exchange format's "trunc1"
    # rounding uses 10, so one decimal is exact in integers); messages and costs divide by it.
    scale: int = 1


@dataclass(frozen=True)
class Visit:
    job: int  # Job.key
    arrival: int  # when the vehicle gets there
    start: int  # when service starts (after waiting for the window)
    departure: int
    load_after: int  # parcels on board when leaving


@dataclass
class PlannedRoute:
    vehicle: int  # Vehicle.key
    visits: list[Visit]
    start: int  # leaves its start location
    end: int  # back at its end location
    distance: int
    duration: int
    waiting: int = 0
    load_start: int = 0  # parcels loaded at the start (deliveries on this route)
    # Broken rules in a hand-made sequence (evaluate()), e.g. "Stop 4 (order 812) arrives 14:20,
    # after its window closes at 14:00". Empty for a solver's feasible answer.
    violations: list[str] = field(default_factory=list)
    break_start: int | None = None  # when the shift's break is taken (None: no break on this route)


@dataclass
class Solution:
    routes: list[PlannedRoute]
    unassigned: dict[int, str]  # Job.key -> reason a dispatcher understands
    cost: int
    distance: int
    duration: int
    feasible: bool
    runtime: float
    iterations: int = 0
    stats: dict = field(default_factory=dict)
