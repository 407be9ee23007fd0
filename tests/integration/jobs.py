"""Tasks the cluster tests hand to a real `manage.py qcluster` (importable by its dotted path).

Each run appends lines to a file: appends of a few bytes are atomic, so two processes writing
at once never mix lines, and the file is the record of what ran and how often.
"""

import time
from pathlib import Path


def record(path: str, name: str, first_run_seconds: float = 0.0) -> str:
    """Append "start <name>", sleep on the first attempt only (so a test can kill the worker
    mid-task and the re-run finishes quickly), then append "done <name>"."""
    log = Path(path)
    first = f"start {name}\n" not in (log.read_text() if log.exists() else "")
    with log.open("a") as out:
        out.write(f"start {name}\n")
    if first:
        time.sleep(first_run_seconds)
    with log.open("a") as out:
        out.write(f"done {name}\n")
    return name
