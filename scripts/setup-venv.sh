#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install the library with its
# pinned dependencies (constraints.txt). Idempotent: reinstalls only when setup.cfg or the
# constraints change. Source it to get the environment activated.
#   PYTHON=python3.11 bash scripts/setup-venv.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AT2_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
stamp="$venv/.installed-$(cat "$root/setup.cfg" "$root/constraints.txt" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "setting up $venv (pinned dependencies from constraints.txt)" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$root/constraints.txt" -e "$root[dev,ray,vision]" 2>&1 | grep -v "is ignored" >&2 || true
  "$venv/bin/python" -c "import at2, hyperrec, experiments, torch, gpytorch, botorch, h5py" \
    || { echo "setup failed: the environment in $venv does not import" >&2; exit 1; }
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi
