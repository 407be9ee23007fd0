#!/usr/bin/env python3
"""Fail when config/settings.py reads an environment variable that .env.example does not name.

Run by `make lint`. Reads settings.py's syntax tree (no Django needed): every call
`env("NAME", ...)` or `env.<cast>("NAME", ...)` counts, and a name counts as documented when
.env.example has a line `NAME=` or `# NAME=`.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def variables_read(settings: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(settings.read_text(), str(settings))):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        is_env = (isinstance(func, ast.Name) and func.id == "env") or (
            isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "env"
        )
        first = node.args[0]
        if is_env and isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
    return names


def variables_documented(example: Path) -> set[str]:
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", example.read_text(), flags=re.MULTILINE))


def main() -> None:
    read = variables_read(ROOT / "config" / "settings.py")
    missing = sorted(read - variables_documented(ROOT / ".env.example"))
    if missing:
        print(
            "config/settings.py reads variables that .env.example does not document: "
            + ", ".join(missing)
            + "\nAdd each with its default and a comment (and to docs/configuration.md).",
            file=sys.stderr,
        )
        sys.exit(1)
    print(f".env.example documents all {len(read)} variables config/settings.py reads.")


if __name__ == "__main__":
    main()
