#!/usr/bin/env bash
# Main job: set up .venv, import the published AT2 databases into data/ (once), summarise them.
#   AT2_DATA   the AT2 authors' data folder (default: ../shared/data/at2)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
bash scripts/setup-venv.sh
py="${AT2_VENV:-$root/.venv}/bin/python"
src="${AT2_DATA:-$root/../shared/data/at2}"
if [ ! -f data/HyperRec.h5 ] || [ ! -f data/LCBench.h5 ]; then
  "$py" -m hyperrec import-at2 "$src" data
fi
for db in data/HyperRec.h5 data/LCBench.h5; do
  "$py" -m hyperrec info "$db"
done
