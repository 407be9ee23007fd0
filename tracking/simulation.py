"""The driver simulator behind `manage.py simulate`: drives today's published routes.

Every driver moves in straight lines (depot → stops in sequence → depot) at a noisy speed,
sends a GPS fix every FIX_INTERVAL simulated seconds through location_record_batch, and
changes route and stop statuses only through dispatch.services, exactly as the driver app
would; each delivery carries a generated photo and signature through pod.services. The state
lives in memory, but Simulation.from_db rebuilds it from the database (the
first open stop is the next target; the position is the DriverPosition, else the depot), so a
restarted simulator carries on where the last one stopped.

advance() is the whole step; the command only loops, sleeps and prints.
"""

import io
import logging
import math
import random
import time as time_module
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from PIL import Image, ImageDraw

from dispatch.geo import distance_m
from dispatch.models import Driver, Order, Route, Stop
from dispatch.services import IllegalTransition, route_transition, stop_transition
from dispatch.timeutils import local_today
from pod import services as pod_services
from tracking.models import DriverPosition
from tracking.paths import route_path_build
from tracking.services import location_record_batch

logger = logging.getLogger(__name__)

FIX_INTERVAL = timedelta(seconds=10)
# An arrival this soon after the last fix sends none: two fixes a split second apart differ by
# their GPS noise alone and would read as an implausible speed (flagged as a speed jump).
MIN_FIX_GAP = timedelta(seconds=2)
SPEED_KMH = 25.0
SPEED_NOISE = 0.25  # each leg is driven at 25 km/h × U(0.75, 1.25) × the driver's pace
# Hidden from the ETA engine, which must learn it: each driver's own pace, drawn once, and now
# and then a traffic jam on part of a leg.
DRIVER_PACE = (0.8, 1.2)  # × U(0.8, 1.2) for the whole day
TRAFFIC_CHANCE = 0.2  # of a leg having a jam
TRAFFIC_SHARE = (0.2, 0.6)  # of the leg's length
TRAFFIC_SLOWDOWN = 0.5  # speed in a jam
SERVICE_NOISE = 0.3  # service time × N(1, 0.3), at least 30 s
# Reasons a driver gives at the door; "Nobody home" is the usual one, so it is listed twice.
FAILURE_REASONS = ["Nobody home", "Nobody home", "No access to the building", "Recipient refused the parcel"]

LIVE = (Route.Status.PUBLISHED, Route.Status.IN_PROGRESS)
OPEN = (Stop.Status.PENDING, Stop.Status.EN_ROUTE, Stop.Status.ARRIVED)


class Phase:
    WAITING = "waiting"  # published, before its planned start
    DRIVING = "driving"  # to `target` (a stop, or the depot when target is None)
    SERVING = "serving"  # at stop `target` until `busy_until`
    DONE = "done"


@dataclass
class StopPlan:
    stop_id: int
    sequence: int
    lat: float | None
    lng: float | None
    service_minutes: int
    window_start: datetime | None
    kind: str
    label: str


@dataclass
class DriverRun:
    """One driver working one route; everything advance() needs without re-reading the DB."""

    route_id: int
    driver: Driver
    depot: tuple[float, float]
    stops: list[StopPlan]  # still open, in sequence; stops[0] is the target while one is left
    phase: str
    lat: float
    lng: float
    busy_until: datetime | None = None
    clock: datetime | None = None  # simulated up to here
    last_fix_at: datetime | None = None
    speed_mps: float = 0.0  # this leg's speed outside a jam
    speed_now: float = 0.0  # what the phone reports (slower in a jam)
    pace: float | None = None  # the driver's speed factor, drawn at the first leg
    jam: tuple[float, float] | None = None  # this leg's jam, as metres-to-go (from, to]
    fixes: list[dict] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.driver.name

    @property
    def target(self) -> tuple[float, float]:
        if self.stops:
            stop = self.stops[0]
            return (stop.lat, stop.lng) if stop.lat is not None else (self.lat, self.lng)
        return self.depot


@dataclass
class Simulation:
    failure_rate: float = 0.05
    runs: dict[int, DriverRun] = field(default_factory=dict)  # by route id
    # The newest time the database already holds for these routes: a restarted simulator must
    # not run its clock behind it, or positions would not move (they only move forward).
    resume_at: datetime | None = None
    # A demo starts its published routes at once instead of waiting for their planned start.
    start_now: bool = False

    @classmethod
    def from_db(cls, *, now: datetime, failure_rate: float = 0.05, start_now: bool = False) -> "Simulation":
        sim = cls(failure_rate=failure_rate, start_now=start_now)
        sim.refresh(now=now)
        return sim

    @property
    def active(self) -> list[DriverRun]:
        return [run for _, run in sorted(self.runs.items()) if run.phase != Phase.DONE]

    def refresh(self, *, now: datetime) -> list[DriverRun]:
        """Pick up routes published since the last look (org-local today); returns the new runs."""
        routes = (
            Route.objects.filter(status__in=LIVE)
            .exclude(pk__in=self.runs)
            .select_related("organization", "depot", "driver__user", "driver__organization")
            .order_by("pk")
        )
        added = []
        for route in routes:
            if route.date != local_today(route.organization.tzinfo, now):
                continue
            run = _run_from_db(route, start_now=self.start_now)
            self.runs[route.pk] = run
            added.append(run)
        if added:
            latest = _latest_known_time([run.route_id for run in added])
            if latest is not None and (self.resume_at is None or latest > self.resume_at):
                self.resume_at = latest
        return added


def _run_from_db(route: Route, *, start_now: bool = False) -> DriverRun:
    stops = [
        StopPlan(
            stop_id=stop.pk,
            sequence=stop.sequence,
            lat=stop.order.lat,
            lng=stop.order.lng,
            service_minutes=stop.order.service_minutes,
            window_start=stop.order.window_start,
            kind=stop.order.kind,
            label=f"stop {stop.sequence} ({stop.order.address})",
        )
        for stop in route.stops.filter(status__in=OPEN).select_related("order").order_by("sequence")
    ]
    depot = (route.depot.lat, route.depot.lng)
    position = DriverPosition.objects.filter(driver=route.driver).first()
    lat, lng = (position.lat, position.lng) if position else depot
    run = DriverRun(
        route_id=route.pk, driver=route.driver, depot=depot, stops=stops, phase="", lat=lat, lng=lng
    )
    if route.status == Route.Status.PUBLISHED:
        run.phase, run.lat, run.lng = Phase.WAITING, depot[0], depot[1]
        run.busy_until = None if start_now else route.planned_start
        return run
    arrived = Stop.objects.filter(pk=stops[0].stop_id, status=Stop.Status.ARRIVED).first() if stops else None
    if arrived is not None:
        # Resumed mid-visit: the service ends as if the visit had not been interrupted.
        run.phase, run.lat, run.lng = Phase.SERVING, *run.target
        run.busy_until = arrived.arrived_at + timedelta(minutes=stops[0].service_minutes)
    else:
        run.phase = Phase.DRIVING
    return run


def _latest_known_time(route_ids: list[int]) -> datetime | None:
    stops = Stop.objects.filter(route_id__in=route_ids).aggregate(a=Max("arrived_at"), d=Max("departed_at"))
    routes = Route.objects.filter(pk__in=route_ids).aggregate(s=Max("started_at"))
    positions = DriverPosition.objects.filter(driver__routes__pk__in=route_ids).aggregate(
        p=Max("recorded_at")
    )
    known = [t for t in (*stops.values(), *routes.values(), *positions.values()) if t is not None]
    return max(known, default=None)


def advance(state: Simulation, *, now: datetime, dt_seconds: float, rng: random.Random) -> list[str]:
    """Simulate every active driver from `now` for `dt_seconds`; returns one line per event
    (started, arrived, delivered / picked up / failed, finished), for the caller to log.

    Each driver's fixes of the step are posted in one location_record_batch call. A route or
    stop changed behind the simulator's back (a dispatcher re-planned it) is re-read from the
    database rather than fought over.
    """
    end = now + timedelta(seconds=dt_seconds)
    events: list[str] = []
    for run in state.active:
        try:
            _advance_run(run, state=state, start=max(now, run.clock or now), end=end, rng=rng, events=events)
        except (IllegalTransition, Route.DoesNotExist, Stop.DoesNotExist) as exc:
            logger.warning("%s: %s; reloading the route", run.name, exc)
            _post_fixes(run, now=end)  # first, so the reloaded run starts from the newest position
            fresh = (
                Route.objects.select_related("depot", "driver__user", "driver__organization")
                .filter(pk=run.route_id)
                .first()
            )
            if fresh is not None and fresh.status in LIVE:
                replacement = _run_from_db(fresh)
                replacement.clock = run.clock
                state.runs[run.route_id] = replacement
            else:
                run.phase = Phase.DONE
        finally:
            _post_fixes(run, now=end)
    return events


def _post_fixes(run: DriverRun, *, now: datetime) -> None:
    # `now` is simulated time: at --speed > 1 device times run ahead of the real clock, and
    # the ingest would refuse fixes more than 5 minutes "in the future".
    if run.fixes:
        location_record_batch(driver=run.driver, fixes=run.fixes, now=now)
        run.fixes = []


def _advance_run(
    run: DriverRun, *, state: Simulation, start: datetime, end: datetime, rng: random.Random, events: list
) -> None:
    t = start
    while t < end and run.phase != Phase.DONE:
        if run.phase == Phase.WAITING:
            if run.busy_until is not None and run.busy_until > end:
                t = end
                break
            t = max(t, run.busy_until or t)
            route_transition(
                route=Route(pk=run.route_id), to=Route.Status.IN_PROGRESS, by=run.driver.user, at=t
            )
            events.append(_line(t, run, f"started the route with {len(run.stops)} stops"))
            run.phase = Phase.DRIVING
            _fix(run, t, rng)
        elif run.phase == Phase.DRIVING:
            t, arrived = _drive(run, t, end, rng)
            if arrived:
                _arrive(run, t, rng, events)
        elif run.phase == Phase.SERVING:
            t = _stand(run, t, min(end, run.busy_until), rng)
            if run.busy_until <= end:
                _finish_service(run, state, t, rng, events)
    run.clock = max(t, end)


def _drive(run: DriverRun, t: datetime, end: datetime, rng: random.Random) -> tuple[datetime, bool]:
    """Move towards the target until it is reached or the step ends, a fix every FIX_INTERVAL.

    Returns the time reached and whether the driver is at the target.
    """
    if run.speed_mps <= 0:
        if run.pace is None:
            run.pace = rng.uniform(*DRIVER_PACE)
        run.speed_mps = SPEED_KMH / 3.6 * run.pace * rng.uniform(1 - SPEED_NOISE, 1 + SPEED_NOISE)
        run.jam = _jam(distance_m(run.lat, run.lng, *run.target), rng)
    while t < end:
        target = run.target
        remaining = distance_m(run.lat, run.lng, *target)
        next_fix = (run.last_fix_at or t) + FIX_INTERVAL
        speed, until_change = _speed_here(run, remaining)
        run.speed_now = speed
        arrival = t + timedelta(seconds=remaining / speed)
        step_to = min(end, next_fix, arrival, t + timedelta(seconds=until_change / speed))
        if step_to >= arrival:
            run.lat, run.lng = target
            t = arrival
            if run.last_fix_at is None or t - run.last_fix_at >= MIN_FIX_GAP:
                _fix(run, t, rng)
            return t, True
        share = (step_to - t).total_seconds() * speed / remaining if remaining else 1.0
        heading = _bearing(run.lat, run.lng, *target)
        run.lat += (target[0] - run.lat) * share
        run.lng += (target[1] - run.lng) * share
        t = step_to
        if t >= next_fix:
            _fix(run, t, rng, bearing_to=heading)
    return t, False


def _jam(length_m: float, rng: random.Random) -> tuple[float, float] | None:
    """Now and then a jam on part of the leg: (from, to] in metres still to go."""
    if length_m <= 0 or rng.random() >= TRAFFIC_CHANCE:
        return None
    jam_m = length_m * rng.uniform(*TRAFFIC_SHARE)
    begins = rng.uniform(jam_m, length_m)
    return begins - jam_m, begins


def _speed_here(run: DriverRun, remaining: float) -> tuple[float, float]:
    """The speed with `remaining` metres to go, and how many metres it holds for."""
    if run.jam is None:
        return run.speed_mps, remaining
    ends, begins = run.jam
    if ends < remaining <= begins:
        return run.speed_mps * TRAFFIC_SLOWDOWN, max(1.0, remaining - ends)
    if remaining > begins:
        return run.speed_mps, max(1.0, remaining - begins)
    return run.speed_mps, remaining


def _stand(run: DriverRun, t: datetime, until: datetime, rng: random.Random) -> datetime:
    """Stand still until `until`, still sending a fix every FIX_INTERVAL (the phone stays on)."""
    while True:
        next_fix = (run.last_fix_at or t) + FIX_INTERVAL
        if next_fix > until:
            return max(t, until)
        t = next_fix
        _fix(run, t, rng)


def _arrive(run: DriverRun, t: datetime, rng: random.Random, events: list) -> None:
    run.speed_mps = 0.0
    if not run.stops:
        done = route_transition(
            route=Route(pk=run.route_id), to=Route.Status.COMPLETED, by=run.driver.user, at=t
        )
        route_path_build(route=done, now=t)
        events.append(_line(t, run, "finished the route back at the depot"))
        run.phase = Phase.DONE
        return
    stop = run.stops[0]
    if stop.lat is None:  # nothing to drive to: the driver cannot find the place
        stop_transition(
            stop=Stop(pk=stop.stop_id),
            to=Stop.Status.FAILED,
            by=run.driver.user,
            at=t,
            reason="Address not found",
        )
        events.append(_line(t, run, f"failed {stop.label}: Address not found"))
        run.stops.pop(0)
        return
    stop_transition(
        stop=Stop(pk=stop.stop_id), to=Stop.Status.ARRIVED, by=run.driver.user, at=t, lat=run.lat, lng=run.lng
    )
    events.append(_line(t, run, f"arrived at {stop.label}"))
    # Early for the window: the driver waits at the door until it opens.
    service_starts = max(t, stop.window_start or t)
    seconds = max(30.0, stop.service_minutes * 60 * rng.gauss(1, SERVICE_NOISE))
    run.phase, run.busy_until = Phase.SERVING, service_starts + timedelta(seconds=seconds)


def _finish_service(run: DriverRun, state: Simulation, t: datetime, rng: random.Random, events: list) -> None:
    stop = run.stops.pop(0)
    if rng.random() < state.failure_rate:
        reason = rng.choice(FAILURE_REASONS)
        stop_transition(
            stop=Stop(pk=stop.stop_id), to=Stop.Status.FAILED, by=run.driver.user, at=t, reason=reason
        )
        events.append(_line(t, run, f"failed {stop.label}: {reason}"))
    else:
        _complete_with_proof(run, stop.stop_id, t, rng)
        done = "picked up" if stop.kind == Order.Kind.PICKUP else "delivered"
        events.append(_line(t, run, f"{done} {stop.label}"))
    run.phase, run.busy_until = Phase.DRIVING, None


def _complete_with_proof(run: DriverRun, stop_id: int, t: datetime, rng: random.Random) -> None:
    """Complete the stop with a generated photo and signature, through pod's services, as the
    driver app does: the proof and the completion in one transaction, files removed if it fails."""
    stop = Stop.objects.select_related("order").get(pk=stop_id)
    prepared = pod_services.proof_prepare(
        stop=stop,
        outcome="delivered",
        photos=[ContentFile(_doorstep_photo(stop, t, rng), name="photo.jpg")],
        signature=ContentFile(_signature_png(rng), name="signature.png"),
        recipient_name=stop.order.recipient_name,
        pin=stop.order.handover_pin,
        scanned_code=stop.order.parcel_codes[0] if stop.order.parcel_codes else "",
    )
    try:
        with transaction.atomic():
            stop_transition(stop=stop, to=Stop.Status.COMPLETED, by=run.driver.user, at=t)
            pod_services.proof_record(
                prepared=prepared, stop=stop, key=uuid.uuid4(), by=run.driver.user, captured_at=t,
                lat=run.lat, lng=run.lng, accuracy_m=round(rng.uniform(5, 15), 1), now=t,
            )  # fmt: skip
    except BaseException:
        prepared.discard()
        raise


def _doorstep_photo(stop: Stop, t: datetime, rng: random.Random) -> bytes:
    """A picture of a parcel at a door, labelled with the order and time (a JPEG)."""
    image = Image.new("RGB", (640, 480), (rng.randint(150, 200),) * 3)
    draw = ImageDraw.Draw(image)
    draw.rectangle((380, 60, 560, 440), fill=(120, 72, 40), outline=(60, 36, 20), width=4)  # the door
    x, y = rng.randint(120, 220), rng.randint(280, 320)
    draw.rectangle((x, y, x + 160, y + 110), fill=(196, 154, 96), outline=(110, 80, 40), width=3)  # parcel
    draw.line((x, y + 40, x + 160, y + 40), fill=(230, 220, 190), width=8)  # tape
    draw.text((20, 20), f"{stop.order.external_ref or stop.order_id}  {t:%H:%M}", fill=(20, 20, 20))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=80)
    return out.getvalue()


def _signature_png(rng: random.Random) -> bytes:
    """A scribbled signature on a transparent background, as signature_pad exports it."""
    image = Image.new("RGBA", (500, 160), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    points, x = [], 30.0
    while x < 470:
        points.append((x, 80 + 45 * math.sin(x / rng.uniform(12, 30)) * rng.uniform(0.4, 1)))
        x += rng.uniform(4, 9)
    draw.line(points, fill=(10, 20, 60, 255), width=3, joint="curve")
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _fix(run: DriverRun, t: datetime, rng: random.Random, bearing_to: float | None = None) -> None:
    """Queue one fix as a phone would report it: a few metres off, with its accuracy."""
    accuracy = rng.uniform(5, 15)
    north, east = rng.gauss(0, accuracy / 2), rng.gauss(0, accuracy / 2)
    lat = run.lat + north / 111_320
    lng = run.lng + east / (111_320 * max(0.01, math.cos(math.radians(run.lat))))
    moving = bearing_to is not None
    run.fixes.append(
        {
            # Truly random, not from `rng`: a restart with the same seed must not repeat uuids,
            # or its fixes would be dropped as duplicates.
            "uuid": uuid.uuid4(),
            "recorded_at": t,
            "lat": lat,
            "lng": lng,
            "accuracy": round(accuracy, 1),
            "speed": round(run.speed_now * rng.uniform(0.9, 1.1), 2) if moving else 0.0,
            "heading": round(bearing_to, 1) if moving else None,
        }
    )
    run.last_fix_at = t


def _bearing(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """Initial compass bearing in degrees (0 = north, 90 = east)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlmb = math.radians(lng2 - lng1)
    x = math.sin(dlmb) * math.cos(phi2)
    y = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlmb)
    return math.degrees(math.atan2(x, y)) % 360


def _line(t: datetime, run: DriverRun, what: str) -> str:
    return f"{t.astimezone(run.driver.organization.tzinfo):%H:%M:%S} {run.name} {what}"


def publish_demo_day(*, now: datetime | None = None, budget_seconds: int = 5) -> list[str]:
    """Plan and publish today's demo routes when nothing is live yet, so `make run` shows drivers
    moving without a dispatcher first planning the day. On a later day than the demo was seeded
    for, first give it today's shifts and orders, starting now (dispatch.demo). Touches only the
    demo organisation."""
    from dispatch import demo, planning
    from dispatch.models import Depot, Organization, Plan

    now = now or timezone.now()
    org = Organization.objects.filter(slug=demo.SLUG).first()
    depot = Depot.objects.filter(organization=org, is_active=True).order_by("pk").first() if org else None
    if org is None or depot is None:
        return []
    day, lines = local_today(org.tzinfo, now), []
    if not demo.demo_day_exists(org, day):
        data = demo.build_demo(day, org.tzinfo, start=demo.demo_day_start(now, org.tzinfo))
        try:
            orders = demo.add_demo_day(org, data)
        except ValidationError as exc:
            return [f"Demo day not added: {' '.join(exc.messages)}"]
        first = data.first_shift_starts_at.astimezone(org.tzinfo)
        lines.append(f"Added the demo's day {day:%a %d %b}: {len(orders)} orders, shifts from {first:%H:%M}.")
    live = Route.objects.filter(organization=org, date=day).exclude(status=Route.Status.DRAFT)
    if live.exists() or not planning.plannable_orders(organization=org, day=day, depot=depot).exists():
        return lines
    try:
        plan = planning.plan_create(
            organization=org, by=None, day=day, depot=depot, time_budget_seconds=budget_seconds
        )
    except ValidationError as exc:
        return [*lines, f"Demo day not planned: {' '.join(exc.messages)}"]
    if planning.plan_run(plan_id=plan.pk) is None:  # the worker took it: wait for its result
        deadline = time_module.monotonic() + budget_seconds + 60
        while time_module.monotonic() < deadline:
            plan.refresh_from_db()
            if plan.status not in (Plan.Status.QUEUED, Plan.Status.RUNNING):
                break
            time_module.sleep(0.5)
    plan.refresh_from_db()
    if plan.status != Plan.Status.SUCCEEDED:
        return [*lines, f"Demo day not planned: plan {plan.pk} is {plan.get_status_display().lower()}."]
    routes = planning.plan_publish(plan=plan, by=None)
    return [*lines, f"Planned and published the demo day: {len(routes)} routes (plan {plan.pk})."]
