#!/usr/bin/env bash
# The whole test suite on a fresh machine: sets up .venv, lints, runs pytest.
# Tests that need the published AT2 data read it from $AT2_DATA (default ../shared/data/at2)
# and are reported as skipped, with the reason, when it is absent.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup-venv.sh"
venv="${AT2_VENV:-$root/.venv}"
cd "$root"
"$venv/bin/ruff" check .
exec "$venv/bin/python" -m pytest -rs "$@"
