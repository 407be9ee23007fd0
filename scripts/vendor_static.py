#!/usr/bin/env python3
"""Copy the browser files of our npm dependencies into static/vendor/ (git-ignored).

Doorstep has no JS build step: package.json pins the versions, `npm ci` fetches them into
node_modules/, and this script copies the already-built files Django serves. Running it again
changes nothing; files no longer listed here are removed from static/vendor/<package>/.
Standard library only, so it runs before the virtualenv exists.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NODE_MODULES = ROOT / "node_modules"
VENDOR = ROOT / "static" / "vendor"

# package -> [(path in node_modules/<package>/, path in static/vendor/<package>/)].
# Source maps go along: ManifestStaticFilesStorage (collectstatic) follows every
# "sourceMappingURL" comment and fails if the map it names is missing.
FILES: dict[str, list[tuple[str, str]]] = {
    "leaflet": [
        ("dist/leaflet.js", "leaflet.js"),
        ("dist/leaflet.js.map", "leaflet.js.map"),
        ("dist/leaflet.css", "leaflet.css"),
        ("dist/images", "images"),
        ("LICENSE", "LICENSE"),
    ],
    "sortablejs": [
        ("Sortable.min.js", "Sortable.min.js"),
        ("LICENSE", "LICENSE"),
    ],
    # The driver app's barcode reader where the browser has no BarcodeDetector (iOS Safari,
    # Firefox). Its minified build names no source map.
    "@zxing/library": [
        ("umd/index.min.js", "zxing.min.js"),
        ("LICENSE", "LICENSE"),
    ],
    "signature_pad": [
        ("dist/signature_pad.umd.min.js", "signature_pad.umd.min.js"),
        ("dist/signature_pad.umd.min.js.map", "signature_pad.umd.min.js.map"),
        ("LICENSE", "LICENSE"),
    ],
}


def fail(message: str) -> None:
    print(f"vendor_static: {message}", file=sys.stderr)
    sys.exit(1)


def pinned_versions() -> dict[str, str]:
    return json.loads((ROOT / "package.json").read_text())["dependencies"]


def expand(src: Path, dest: Path) -> list[tuple[Path, Path]]:
    """(source file, destination file) pairs; a directory is copied file by file."""
    if src.is_dir():
        return [(f, dest / f.relative_to(src)) for f in sorted(src.rglob("*")) if f.is_file()]
    return [(src, dest)]


def sync_package(package: str, version: str) -> int:
    """Make static/vendor/<package>/ hold exactly the listed files. Returns how many changed."""
    package_dir = NODE_MODULES / package
    installed = package_dir / "package.json"
    if not installed.exists():
        fail(f"node_modules/{package} is missing: run `npm ci` (or `make install`).")
    found = json.loads(installed.read_text())["version"]
    if found != version:
        fail(f"node_modules/{package} is {found}, package.json pins {version}: run `npm ci`.")

    target = VENDOR / package
    wanted: dict[Path, Path] = {}
    for src_name, dest_name in FILES[package]:
        src = package_dir / src_name
        if not src.exists():
            fail(f"{src.relative_to(ROOT)} not found in {package}@{version}.")
        wanted.update({d: s for s, d in expand(src, target / dest_name)})

    changed = 0
    for dest, src in wanted.items():
        if dest.is_file() and filecmp.cmp(src, dest, shallow=False):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dest)  # atomic: a running dev server never serves half a file
        changed += 1

    for stale in sorted(target.rglob("*"), reverse=True):
        if stale.is_file() and stale not in wanted:
            stale.unlink()
            changed += 1
        elif stale.is_dir() and not any(stale.iterdir()):
            stale.rmdir()
    return changed


def main() -> None:
    versions = pinned_versions()
    missing = set(FILES) - set(versions)
    if missing:
        fail(f"package.json does not pin {', '.join(sorted(missing))}.")
    changed = sum(sync_package(package, versions[package]) for package in FILES)
    pinned = ", ".join(f"{package}@{versions[package]}" for package in FILES)
    print(f"static/vendor ({pinned}): {f'{changed} file(s) updated' if changed else 'up to date'}")


if __name__ == "__main__":
    main()
