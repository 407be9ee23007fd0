#!/usr/bin/env bash
# Run the pytest suite with the given arguments (used by `make test`, `make test-postgres`).
# pytest exits 5 when it collected no test at all; that is a failure here, said in words.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

.venv/bin/pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "pytest collected no tests (exit 5): treating that as a failure." >&2
    exit 1
fi
exit "$rc"
