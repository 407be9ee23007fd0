"""Read the VRPLIB `.vrp` files of ../shared/benchdata/vrptw into exchange-format dicts.

Standard library only, on purpose: the benchmark reads the instances itself rather than trusting
the planner's own reader. The files have a header (`KEY : value` lines: NAME, DIMENSION,
VEHICLES, CAPACITY, SERVICE_TIME, EDGE_WEIGHT_TYPE) and sections (NODE_COORD_SECTION,
DEMAND_SECTION, TIME_WINDOW_SECTION, optionally SERVICE_TIME_SECTION, DEPOT_SECTION) whose rows
start with a 1-based node number. The depot is the node named in DEPOT_SECTION (node 1 in every
file here); its exchange id is 0 and customers keep their VRPLIB number minus one, so Solomon's
customer 1 is stop 1 as in the literature's solution files.
"""

import csv
import re
from pathlib import Path

BENCHDATA = Path(__file__).resolve().parents[3] / "shared" / "benchdata" / "vrptw"


def _number(text: str) -> int | float:
    value = float(text)
    return int(value) if value.is_integer() else value


def parse_vrplib(text: str) -> tuple[dict[str, str], dict[str, list[list[str]]]]:
    """Split a VRPLIB file into its header (key -> raw value) and sections (name -> rows)."""
    header: dict[str, str] = {}
    sections: dict[str, list[list[str]]] = {}
    current: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line == "EOF":
            continue
        if ":" in line:  # a `KEY : value` header line (data rows are numbers only)
            key, _, value = line.partition(":")
            header[key.strip().upper()] = value.strip()
            current = None
            continue
        if line.upper().endswith("_SECTION"):
            current = line.upper()
            sections[current] = []
            continue
        if current is None:
            raise ValueError(f"unexpected line outside any section: {line!r}")
        sections[current].append(line.split())
    return header, sections


def read_vrp(path: str | Path, time_limit: float = 10.0) -> dict:
    """One `.vrp` file as an exchange-format dict (see the benchdata README)."""
    path = Path(path)
    header, sections = parse_vrplib(path.read_text())
    edge_type = header.get("EDGE_WEIGHT_TYPE", "EUC_2D").upper()
    if edge_type != "EUC_2D":
        raise ValueError(f"{path.name}: EDGE_WEIGHT_TYPE {edge_type} is not supported")
    dimension = int(header["DIMENSION"])

    coords = {int(r[0]): (_number(r[1]), _number(r[2])) for r in sections["NODE_COORD_SECTION"]}
    demand = {int(r[0]): int(r[1]) for r in sections.get("DEMAND_SECTION", [])}
    pickup = {int(r[0]): int(r[1]) for r in sections.get("PICKUP_SECTION", [])}
    windows = {int(r[0]): (_number(r[1]), _number(r[2])) for r in sections.get("TIME_WINDOW_SECTION", [])}
    default_service = _number(header.get("SERVICE_TIME", "0"))
    service = {int(r[0]): _number(r[1]) for r in sections.get("SERVICE_TIME_SECTION", [])}
    depots = [int(r[0]) for r in sections.get("DEPOT_SECTION", [["1"]]) if int(r[0]) >= 0]
    if len(depots) != 1:
        raise ValueError(f"{path.name}: expected one depot, found {depots}")
    depot_node = depots[0]
    if len(coords) != dimension:
        raise ValueError(f"{path.name}: DIMENSION {dimension} but {len(coords)} coordinates")

    def node_id(node: int) -> int:
        # Depot -> 0; customers keep their position after the depot (1-based numbering minus one).
        return 0 if node == depot_node else (node - 1 if node > depot_node else node)

    horizon = windows.get(depot_node, (0, 2**40))
    dx, dy = coords[depot_node]
    stops = []
    for node in sorted(coords):
        if node == depot_node:
            continue
        x, y = coords[node]
        tw_start, tw_end = windows.get(node, (0, horizon[1]))
        stops.append(
            {
                "id": node_id(node),
                "x": x,
                "y": y,
                "demand": demand.get(node, 0),
                "pickup": pickup.get(node, 0),
                "tw_start": tw_start,
                "tw_end": tw_end,
                "service": service.get(node, default_service),
            }
        )
    return {
        "name": header.get("NAME", path.stem),
        "distance": "euclidean",
        "rounding": "trunc1",
        "time_limit": float(time_limit),
        "depot": {"id": 0, "x": dx, "y": dy, "tw_start": horizon[0], "tw_end": horizon[1]},
        "vehicles": {
            "count": int(header.get("VEHICLES", len(stops))),
            "capacity": int(header["CAPACITY"]),
            "shift_start": horizon[0],
            "shift_end": horizon[1],
        },
        "stops": stops,
    }


def read_bks(path: str | Path = BENCHDATA / "bks.csv") -> dict[str, tuple[int, float]]:
    """instance name -> (vehicles, distance) of the best-known solution."""
    with open(path, newline="") as fh:
        return {row["instance"]: (int(row["vehicles"]), float(row["distance"])) for row in csv.DictReader(fh)}


def instance_paths(folder: str) -> list[Path]:
    """The `.vrp` files of one benchdata folder (solomon, gh200, gh400, gh1000), by name."""
    return sorted((BENCHDATA / folder).glob("*.vrp"), key=lambda p: _natural_key(p.stem))


def _natural_key(name: str) -> tuple:
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))
